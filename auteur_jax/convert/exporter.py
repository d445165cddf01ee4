"""`auteur convert export`: an orbax checkpoint -> an HF / diffusers folder.

The family map (see families.py) runs backward: each source tensor is rebuilt from our
params (transposes and reshapes undone, stacked layers split, fused projections cut
apart) and streamed into safetensors shards of at most `max_shard_bytes`, with the index
JSON and a config.json the reference class reads (`from_pretrained`). Our params are
restored a few at a time (about `batch_bytes` each), not the whole model at once.
Works on converted checkpoints (conversion record) and training runs (run config).
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import numpy as np
import tqdm

from auteur_jax.checkpoint import layout, orbax_io
from auteur_jax.checkpoint.errors import WeightError
from auteur_jax.convert import families, mapping, records
from auteur_jax.convert.importer import committed, temporary
from auteur_jax.convert.safetensors_io import write_sharded


def hf_config(family: mapping.Family, cfg: Any, source: dict, dtype: np.dtype) -> dict:
  """config.json for `cfg`: generated from our config; keys only the original config.json
  had (token ids, library versions, ...) are kept from it."""
  out = family.to_hf(cfg)
  for k, v in source.items():
    out.setdefault(k, v)
  name = str(np.dtype(dtype)) if np.dtype(dtype) != jax.numpy.bfloat16 else "bfloat16"
  if "_class_name" not in out:
    out["torch_dtype"] = out["dtype"] = name
  return out


def export_weights(
  family: str,
  src: str,
  dst: str,
  *,
  dtype: str | None = None,
  max_shard_bytes: int = 5 * 10**9,
  batch_bytes: int = 1 << 30,
  progress: bool = True,
  ema: bool = False,
) -> dict:
  """Writes the `family` params of checkpoint `src` to the folder `dst` (see module doc);
  with `ema`, a training run's EMA weights (config.train.ema_decay > 0) instead.

  Returns a summary: dst, files, tensors, bytes.
  """
  fam = families.get(family)
  step_dir = layout.find_step_dir(src)
  cfg, prefix, source_config = records.model_of(fam, layout.read_config_item(step_dir), src)
  state_dir = os.path.join(step_dir, "state")
  meta = orbax_io.tree_metadata(state_dir)
  if ema:  # The train state keeps the average under "ema", mirroring "model".
    if prefix[:1] != ("model",) or not any(k[:1] == ("ema",) for k in meta):
      raise WeightError(
        f"{src}: no EMA weights to export (a training run with config.train.ema_decay > 0)"
      )
    prefix = ("ema", *prefix[1:])
  tmp = temporary(dst)
  ours, _ = records.abstract_params(fam, cfg)
  pieces = fam.pieces(cfg, {k: v.shape for k, v in ours.items()}, None)
  problems = []
  for name, want in ours.items():
    key = records.leaf_key(prefix, name)
    if any(p.ours == name for p in pieces):
      if key not in meta:
        problems.append(f"{'/'.join(key)} is missing")
      elif tuple(meta[key].shape) != tuple(want.shape):
        problems.append(
          f"{'/'.join(key)} has shape {tuple(meta[key].shape)}, the model "
          f"config expects {tuple(want.shape)}"
        )
  if problems:
    raise WeightError(
      f"{src}: the checkpoint does not fit the {family} config: " + "; ".join(problems[:12])
    )
  out_dtype = lambda name: (
    np.dtype(jax.numpy.dtype(dtype))
    if dtype
    else np.dtype(meta[records.leaf_key(prefix, name)].dtype)
  )
  # Source tensors in the order of the params they come from; pieces grouped per tensor.
  tensors: dict[str, list[mapping.Piece]] = {}
  for p in pieces:
    tensors.setdefault(p.theirs, []).append(p)
  order = sorted(tensors, key=lambda t: min(list(ours).index(p.ours) for p in tensors[t]))
  decl = [(t, tensors[t][0].shape, out_dtype(tensors[t][0].ours)) for t in order]

  def produce():
    cache: dict[str, np.ndarray] = {}
    bar = tqdm.tqdm(order, desc=f"export {family}", unit="tensor", disable=not progress)
    for i, t in enumerate(bar):
      need = {p.ours for p in tensors[t]}
      if not need <= set(cache):
        cache = {k: v for k, v in cache.items() if k in need}
        load: list[str] = []  # This tensor's params, then the next ones' up to batch_bytes.
        size = 0
        for u in order[i:]:
          new = sorted({p.ours for p in tensors[u]} - set(cache) - set(load))
          nbytes = sum(int(np.prod(ours[n].shape)) * ours[n].dtype.itemsize for n in new)
          if load and size + nbytes > batch_bytes:
            break
          load += new
          size += nbytes
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        targets = {
          records.leaf_key(prefix, n): jax.ShapeDtypeStruct(
            ours[n].shape, meta[records.leaf_key(prefix, n)].dtype, sharding=device
          )
          for n in load
        }
        got = orbax_io.restore(state_dir, targets)
        cache.update({n: np.asarray(got[records.leaf_key(prefix, n)]) for n in load})
      first = tensors[t][0]
      arr = np.zeros(first.shape, out_dtype(first.ours))
      for p in tensors[t]:
        slot = cache[p.ours][tuple(p.at)] if p.at else cache[p.ours]
        part = mapping.backward(slot, p)
        if p.take:
          arr[p.take] = part
        else:
          arr[...] = part
      yield t, arr

  with committed(tmp, dst):
    os.makedirs(tmp)
    files = write_sharded(tmp, fam.stem, decl, produce, max_shard_bytes)
    with open(os.path.join(tmp, "config.json"), "w") as f:
      json.dump(hf_config(fam, cfg, source_config, decl[0][2]), f, indent=2)
  total = sum(int(np.prod(s)) * d.itemsize for _, s, d in decl)
  return dict(dst=os.path.abspath(dst), files=files, tensors=len(decl), bytes=total)
