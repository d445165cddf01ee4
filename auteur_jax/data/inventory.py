"""What a built data set holds, by its dataset.json, checked against its files.

`auteur data build` writes per split the shard lists (`clip_shards`, `story_shards`,
paths relative to the data set) and the record counts (`clips`, `stories`; since this
module, also `shard_records`: {shard: records}). `auteur encode` keeps both. A shard that
is deleted, or truncated at a record boundary (which its CRCs cannot show), is found
here: `check_split` compares the files with the lists and counts and raises a
DataSetError naming the shard, unless the user allows a partial data set.
"""

from __future__ import annotations

import glob
import json
import os

from auteur_jax import paths
from auteur_jax.data import tfrecord

KINDS = {"clips": ("clip_shards", "clips"), "stories": ("story_shards", "stories")}


class DataSetError(ValueError):
  """A data set's files differ from its dataset.json; the message names the shard."""


def read_meta(data_dir: str) -> dict | None:
  """The data set's dataset.json, or None where there is none (shards made by hand)."""
  path = paths.join(data_dir, "dataset.json")
  if not paths.exists(path):
    return None
  try:
    with paths.open_file(path) as f:
      return json.load(f)
  except ValueError as e:
    raise DataSetError(f"{path}: not valid JSON ({e})") from e


def shard_counts(data_dir: str, shards: list[str]) -> dict[str, int]:
  """{path relative to data_dir: records} of shard files (reads the length headers)."""
  return {paths.relative(p, data_dir): len(tfrecord.index_records(p)) for p in shards}


def check_split(data_dir: str, split: str, kind: str, allow_partial: bool = False) -> list[str]:
  """The split's shard files of `kind`, after checking them against dataset.json: every
  listed shard is there, no other is, and the record counts match (per shard where
  dataset.json has them, else in total). allow_partial: return what is there instead of
  raising (the caller trains on fewer records). Without dataset.json: the files found."""
  meta = read_meta(data_dir)
  split_dir = paths.join(data_dir, split)
  found = (
    (paths.glob(paths.join(split_dir, f"{kind}-*.tfrecord")) if paths.is_dir(split_dir) else [])
    if paths.is_uri(data_dir)
    else sorted(glob.glob(os.path.join(glob.escape(split_dir), f"{kind}-*.tfrecord")))
  )
  entry = (meta or {}).get("splits", {}).get(split)
  problems = _problems(data_dir, split, kind, entry, found) if entry is not None else []
  if problems and not allow_partial:
    raise DataSetError(
      f"{paths.join(data_dir, 'dataset.json')}: {split} {kind}: "
      + "; ".join(problems)
      + " (config.data.allow_partial=True trains on what is there)"
    )
  if not found:
    raise FileNotFoundError(f"{data_dir}/{split}: no {kind} shards")
  return found


def _problems(data_dir: str, split: str, kind: str, entry: dict, found: list[str]) -> list[str]:
  """How the shard files `found` differ from dataset.json's `entry` for the split."""
  list_key, count_key = KINDS[kind]
  listed = entry.get(list_key)
  problems = []
  if listed is not None:
    have = {paths.relative(p, data_dir) for p in found}
    problems += [f"shard {s} is missing" for s in listed if s not in have]
    problems += [f"shard {s} is not in its list" for s in sorted(have - set(listed))]
  counts = shard_counts(data_dir, found)
  expected = entry.get("shard_records", {})
  problems += [
    f"shard {s} holds {counts[s]} records, {expected[s]} were written"
    for s in sorted(counts)
    if s in expected and counts[s] != expected[s]
  ]
  total = sum(counts.values())
  if count_key in entry and total != entry[count_key] and not problems:
    problems.append(
      f"{split} holds {total} {kind}, {entry[count_key]} were written (shards {sorted(counts)})"
    )
  return problems


def check_data_set(data_dir: str) -> list[str]:
  """Every split and kind of dataset.json checked (`auteur data verify DIR`); returns the
  problems found (empty: the files are what dataset.json says)."""
  meta = read_meta(data_dir)
  if meta is None:
    raise DataSetError(
      f"{data_dir}/dataset.json: not found; is {data_dir} a folder written by `auteur data build`?"
    )
  problems = []
  for split in sorted(meta.get("splits", {})):
    for kind in KINDS:
      try:
        check_split(data_dir, split, kind)
      except (DataSetError, FileNotFoundError) as e:
        problems.append(str(e))
  return problems
