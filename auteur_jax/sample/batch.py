"""`auteur sample`: a resumable batch job rendering the stories of a prompts JSONL file.

  auteur sample --config toy/sample --prompts prompts.jsonl --out OUT

Prompt lines: {"id": "v1", "task": "...", "num_steps": 4} or, with the steps' text,
{"id", "task", "actions": [...], "captions": [...]}; optional "seed" (int). Blank lines
are skipped. Ids name output folders: one path component of letters, digits, '.', '_'
and '-', not starting with '.' (so never "..", an absolute path or a hidden name).

Layout (docs/architecture.md "Sampling outputs"):
  OUT/<id>/clip_<t>.mp4, story.mp4, story.json, embeddings.npy   one finished item
  OUT/manifest.jsonl     one line per finished item (appended when it is complete), with
                         the SHA-256 of its prompt and of the settings that shape it
  OUT/errors.jsonl       one line per bad prompt line: {"line", "error"}, and per finished
                         item whose prompt or settings changed since: {"line", "id",
                         "error"} (kept unless --redo-changed; written by process 0)
  OUT/.partial-<id>/     an item being written; renamed to OUT/<id> when complete

The valid items are dealt to processes round-robin (item i -> process i % count); each
process renders its share on a mesh of its own devices, independently of the others.
An item's output is the same whatever the batch it shares, the process count or a
restart (story.py: fixed row counts, per-item seeds from the id). A restarted job cuts a
torn last manifest line, skips items whose folder exists (adding a manifest line if the
kill came between the rename and the append) and deletes and redoes partial ones.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tempfile
from collections.abc import Iterator

import jax
import ml_collections
import tqdm

from auteur_jax import paths
from auteur_jax.config_sections import from_section
from auteur_jax.models.director import CHAINS
from auteur_jax.parallel import distributed
from auteur_jax.sample.story import StoryRequest, StorySampleConfig, StorySampler, write_story

MANIFEST, ERRORS, PARTIAL = "manifest.jsonl", "errors.jsonl", ".partial-"
_ID = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9._\-]{0,199}")
_RESERVED = {MANIFEST, ERRORS}
_KEYS = {"id", "task", "num_steps", "actions", "captions", "seed"}


def check_id(item_id) -> str:
  """The id if it is safe as a folder name under OUT, else ValueError saying why."""
  if not isinstance(item_id, str) or not item_id:
    raise ValueError(f"'id' must be a non-empty string, got {item_id!r}")
  if not _ID.fullmatch(item_id) or item_id in _RESERVED:
    raise ValueError(
      f"id {item_id!r} is not a safe folder name (one path component of "
      "letters, digits, '.', '_', '-', not starting with '.', at most 200 "
      f"characters, not {sorted(_RESERVED)}): refused"
    )
  return item_id


def parse_line(text: str) -> StoryRequest:
  """One prompt line -> StoryRequest; ValueError naming the problem."""
  try:
    d = json.loads(text)
  except json.JSONDecodeError as e:
    raise ValueError(f"not JSON ({e})") from None
  if not isinstance(d, dict):
    raise ValueError(f"expected a JSON object, got {type(d).__name__}")
  unknown = sorted(set(d) - _KEYS)
  if unknown:
    raise ValueError(f"unknown keys {unknown}; expected some of {sorted(_KEYS)}")
  item_id = check_id(d.get("id"))
  task = d.get("task")
  if not isinstance(task, str) or not task.strip():
    raise ValueError("'task' must be a non-empty string")
  texts = {}
  for key in ("actions", "captions"):
    v = d.get(key)
    if v is not None and (
      not isinstance(v, list) or not v or not all(isinstance(x, str) for x in v)
    ):
      raise ValueError(f"{key!r} must be a non-empty list of strings")
    texts[key] = tuple(v) if v is not None else None
  given = [len(v) for v in texts.values() if v is not None]
  if len(set(given)) > 1:
    raise ValueError(f"'actions' and 'captions' have different lengths {given}")
  steps = d.get("num_steps")
  if steps is not None and (type(steps) is not int or steps < 1):
    raise ValueError(f"'num_steps' must be a positive integer, got {steps!r}")
  if steps is not None and given and steps != given[0]:
    raise ValueError(f"'num_steps' {steps} != the {given[0]} given steps")
  seed = d.get("seed")
  if seed is not None and (type(seed) is not int or not 0 <= seed < 2**31):
    raise ValueError(f"'seed' must be an integer in [0, 2^31), got {seed!r}")
  return StoryRequest(item_id, task, steps, texts["actions"], texts["captions"], seed)


def read_prompts(
  path: str, max_steps: int | None = None, text_keys: tuple[str, ...] = ()
) -> tuple[list[tuple[int, StoryRequest]], list[dict]]:
  """(line number, request) of the valid lines, and {"line", "error"} of the bad ones.

  A repeated id is an error on its later lines; lines are numbered from 1. text_keys:
  what a line that gives text must give (the director chain's "actions" / "captions").
  """
  if not paths.is_file(path):
    raise FileNotFoundError(f"--prompts: {path} does not exist")
  items, errors = [], []
  seen: dict[str, int] = {}  # id -> line of its first use.
  with paths.open_file(path, "rb") as f:  # Text mode's line splitting, on any filesystem:
    lines = io.StringIO(f.read().decode("utf-8", errors="replace"), newline=None)
  for n, text in enumerate(lines, 1):
    if not text.strip():
      continue
    try:
      req = parse_line(text)
      if req.id in seen:
        raise ValueError(f"id {req.id!r} already used on line {seen[req.id]}")
      steps = len(req.actions or req.captions or ()) or req.num_steps
      if max_steps is not None and steps is not None and steps > max_steps:
        raise ValueError(f"{steps} steps; at most {max_steps} (config.sample.max_steps)")
      missing = [k for k in text_keys if req.given_text and getattr(req, k) is None]
      if missing:
        raise ValueError(f"gives text but not {missing} (the director's chain needs them)")
    except ValueError as e:
      errors.append({"line": n, "error": str(e)})
      continue
    seen[req.id] = n
    items.append((n, req))
  return items, errors


def _write_atomic(path: str, text: str) -> None:
  if paths.is_uri(path):
    paths.write_atomic(path, text)
    return
  tmp = f"{path}.{os.getpid()}.tmp"
  with open(tmp, "w") as f:
    f.write(text)
  os.replace(tmp, path)


def read_manifest(out_dir: str) -> dict[str, dict]:
  """{id: its last manifest entry} (a torn last line from a kill is ignored)."""
  path = paths.join(out_dir, MANIFEST)
  entries = {}
  if paths.exists(path):
    with paths.open_file(path) as f:
      for text in f:
        try:
          entry = json.loads(text)
          entries[entry["id"]] = entry
        except (json.JSONDecodeError, KeyError, TypeError):
          continue
  return entries


def _repair_manifest(out_dir: str) -> None:
  """Cuts a torn last line (disk full, power loss) back to the last newline, so that the
  next append starts a line of its own."""
  path = paths.join(out_dir, MANIFEST)
  if not paths.exists(path):
    return
  if paths.is_uri(path):  # Objects are rewritten whole.
    with paths.open_file(path, "rb") as f:
      data = f.read()
    if data and not data.endswith(b"\n"):
      paths.write_atomic(path, data[: data.rfind(b"\n") + 1])
    return
  with open(path, "rb+") as f:
    data = f.read()
    if data and not data.endswith(b"\n"):
      f.truncate(data.rfind(b"\n") + 1)


def _append_manifest(out_dir: str, entry: dict) -> None:
  """One write() of one line with O_APPEND: lines from several processes never mix."""
  line = (json.dumps(entry, ensure_ascii=False) + "\n").encode()
  path = paths.join(out_dir, MANIFEST)
  if paths.is_uri(path):  # No appends on an object store: the manifest is rewritten whole.
    old = b""
    if paths.exists(path):
      with paths.open_file(path, "rb") as f:
        old = f.read()
    paths.write_atomic(path, old + line)
    return
  fd = os.open(os.path.join(out_dir, MANIFEST), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
  try:
    os.write(fd, line)
  finally:
    os.close(fd)


def _finished(out_dir: str, item: str) -> bool:
  """Whether an item's folder is there whole: locally renamed into place; on an object
  store (no renames), its story.json, uploaded last."""
  final = paths.join(out_dir, item)
  return (
    paths.is_file(paths.join(final, "story.json")) if paths.is_uri(final) else paths.is_dir(final)
  )


def _chunks(items: list, size: int) -> Iterator[list]:
  for i in range(0, len(items), size):
    yield items[i : i + size]


def run_batch(
  config: ml_collections.ConfigDict,
  prompts: str,
  out_dir: str,
  *,
  progress: bool = True,
  sampler: StorySampler | None = None,
  redo_changed: bool = False,
) -> dict:
  """Renders this process's share of `prompts` into out_dir (see the module docstring).

  redo_changed: redo finished items whose prompt or output-shaping settings changed
  since they were rendered (otherwise each is reported in errors.jsonl and kept).
  Returns {"rendered": [ids], "skipped": n, "errors": n, "changed": [ids], "process": i,
  "processes": n}.
  """
  s = from_section(StorySampleConfig, config.sample, "config.sample")  # Before any write.
  if paths.is_file(out_dir):
    raise FileExistsError(f"--out {out_dir}: a file, not a folder")
  distributed.initialize(config.distributed)
  pi, pc = jax.process_index(), jax.process_count()
  chain = CHAINS.get(config.director.model.chain, ())
  items, errors = read_prompts(prompts, s.max_steps, tuple(f"{n}s" for n in chain))
  paths.makedirs(out_dir)
  if pi == 0:
    _repair_manifest(out_dir)
  if pc > 1:  # Nobody appends before the repair.
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices("auteur_sample_manifest")
  listed = read_manifest(out_dir)
  settings = settings_hash(config)
  changed = {
    r.id: n
    for n, r in items
    if _finished(out_dir, r.id) and r.id in listed and _differs(listed[r.id], r, settings)
  }
  if pi == 0:
    errors += [
      {
        "line": n,
        "id": i,
        "error": "finished with another prompt or other sampling "
        "settings than now; kept (--redo-changed redoes it)",
      }
      for i, n in changed.items()
      if not redo_changed
    ]
    _write_atomic(
      paths.join(out_dir, ERRORS),
      "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in errors),
    )
  mine = [(n, r) for i, (n, r) in enumerate(items) if i % pc == pi]
  todo, skipped = [], 0
  for n, r in mine:
    final, partial = paths.join(out_dir, r.id), paths.join(out_dir, PARTIAL + r.id)
    if paths.is_dir(partial):  # Killed while writing: redo from scratch.
      paths.remove_tree(partial)
    if r.id in changed and redo_changed:
      paths.remove_tree(final)
    if paths.is_uri(final) and not _finished(out_dir, r.id):  # Killed while uploading.
      paths.remove_tree(final)
    if _finished(out_dir, r.id):
      skipped += 1
      if r.id not in listed:  # Killed between the rename and the manifest append.
        _append_manifest(out_dir, _entry(n, r, final, settings))
    else:
      todo.append((n, r))
  if sampler is None and todo:
    sampler = StorySampler.from_config(config)
  rendered = []
  with tqdm.tqdm(
    total=len(mine),
    initial=skipped,
    desc=f"sample (process {pi})",
    unit="item",
    disable=not progress,
    smoothing=0.1,
  ) as bar:
    for chunk in _chunks(todo, s.batch_size):
      assert sampler is not None  # Made above when there is anything to do.
      results = sampler.render([r for _, r in chunk])
      for (n, r), result in zip(chunk, results):
        partial, final = paths.join(out_dir, PARTIAL + r.id), paths.join(out_dir, r.id)
        if paths.is_uri(final):  # Written locally, uploaded with story.json last.
          with tempfile.TemporaryDirectory(prefix="auteur-sample-") as local:
            write_story(result, local, s.fps, s.crf)
            paths.upload_tree(local, final, last="story.json")
        else:
          write_story(result, partial, s.fps, s.crf)
          os.rename(partial, final)
        _append_manifest(out_dir, _entry(n, r, final, settings))
        rendered.append(r.id)
        bar.update(1)
  return {
    "rendered": rendered,
    "skipped": skipped,
    "errors": len(errors),
    "changed": sorted(changed),
    "process": pi,
    "processes": pc,
    "out_dir": out_dir,
  }


def prompt_hash(r: StoryRequest) -> str:
  """SHA-256 of what an item's prompt line says (id aside)."""
  fields = {
    "task": r.task,
    "num_steps": r.num_steps,
    "actions": r.actions,
    "captions": r.captions,
    "seed": r.seed,
  }
  return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def settings_hash(config: ml_collections.ConfigDict) -> str:
  """SHA-256 of the settings that shape an item's output: the job's sample section (but
  its batch size), the director's text sampling and the DiT's sampler and CFG scales (the
  language director: the keyframe renderer's and the keyframe DiT's)."""
  sample = {k: v for k, v in config.sample.to_dict().items() if k != "batch_size"}
  fields = {"sample": sample, "director": config.director.sample.to_dict()}
  if sample.get("director", "interleaved") == "interleaved":
    sample.pop("director", None)  # Hashes from before the key existed stay valid.
    fields["dit"] = config.dit.sample.to_dict()
  else:  # The language director: the keyframe renderer's and the keyframe DiT's samplers.
    fields["keyframe"] = config.keyframe.sample.to_dict()
    fields["dit_keyframe"] = config.dit_keyframe.sample.to_dict()
  return hashlib.sha256(json.dumps(fields, sort_keys=True, default=list).encode()).hexdigest()


def _differs(entry: dict, r: StoryRequest, settings: str) -> bool:
  """A finished item's manifest entry against its prompt and settings now (entries from
  before hashes were recorded match)."""
  return ("prompt_sha256" in entry and entry["prompt_sha256"] != prompt_hash(r)) or (
    "settings_sha256" in entry and entry["settings_sha256"] != settings
  )


def _entry(line: int, r: StoryRequest, final: str, settings: str) -> dict:
  """The manifest line of a finished item (no times or process ids: reruns match), with
  the hashes of its prompt and of the settings it was rendered with."""
  with paths.open_file(paths.join(final, "story.json")) as f:
    meta = json.load(f)
  return {
    "id": r.id,
    "line": line,
    "dir": r.id,
    "num_steps": meta["num_steps"],
    "seed": meta["seed"],
    "prompt_sha256": prompt_hash(r),
    "settings_sha256": settings,
  }
