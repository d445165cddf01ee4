"""`auteur convert import`: an HF / diffusers safetensors folder -> a sharded orbax checkpoint.

  folder -> headers only (safetensors_io) -> family map (families) checked against our
  model's abstract params: every mismatch listed before anything is written ->
  per parameter, per chunk of its target shards: memory-map the source tensors that
  chunk needs, rename / transpose / stack / cast into the chunk, write it (orbax_io)
  -> tree metadata -> rename the temporary folder to the destination.

Peak memory is about one source tensor (its mapped pages) plus a few chunks
(`chunk_bytes`), whatever the model's size. On any error the temporary folder is
removed: the destination is either complete or absent.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shutil
from collections.abc import Iterator, Mapping
from typing import Any

import jax
import ml_collections
import numpy as np
import tqdm

from auteur_jax.checkpoint import layout, orbax_io
from auteur_jax.checkpoint.errors import WeightError
from auteur_jax.convert import families, mapping, records
from auteur_jax.convert.safetensors_io import SafetensorsFolder, read_hf_config
from auteur_jax.parallel.mesh import make_mesh
from auteur_jax.parallel.rules import DEFAULT_RULES, Rules, mesh_rules

STEP = 0  # Converted weights are step 0 of their folder.
MESH_HINT = "; choose another --mesh"


def _differences(a: Any, b: Any) -> list[str]:
  """Fields where two configs of one class differ (config.json vs the run's config)."""
  return [
    f"{f.name}: config.json {getattr(a, f.name)!r}, config {getattr(b, f.name)!r}"
    for f in dataclasses.fields(a)
    if getattr(a, f.name) != getattr(b, f.name)
  ]


def temporary(dst: str) -> str:
  """The folder a conversion writes before it becomes `dst` (refused if `dst` exists).
  Temporaries of earlier conversions to `dst` whose process is gone (killed) go first."""
  dst = os.path.abspath(dst.rstrip("/"))
  if os.path.exists(dst):
    raise WeightError(f"{dst} exists; remove it or choose another destination")
  parent, name = os.path.split(dst)
  stale = re.compile(re.escape(name) + r"\.tmp-(\d+)")
  for entry in os.listdir(parent) if os.path.isdir(parent) else ():
    m = stale.fullmatch(entry)
    if m and not _alive(int(m.group(1))):
      shutil.rmtree(os.path.join(parent, entry), ignore_errors=True)
  # Every process of a multi-host conversion writes into the same folder.
  return f"{dst}.tmp-{os.getpid() if jax.process_count() == 1 else 'multihost'}"


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # Someone else's process.
    return True
  return True


def _make_parents(folder: str) -> list[str]:
  """Creates `folder` and its missing parents; returns those created, outermost first."""
  missing = []
  while folder and not os.path.isdir(folder):
    missing.append(folder)
    folder = os.path.dirname(folder)
  for d in reversed(missing):
    os.makedirs(d, exist_ok=True)
  return missing[::-1]


@contextlib.contextmanager
def committed(tmp: str, dst: str) -> Iterator[None]:
  """Runs the body that writes `tmp`, then moves it to `dst` (process 0); on any failure
  `tmp` and the parent folders made for it are removed: nothing is left behind."""
  created = _make_parents(os.path.dirname(tmp))
  try:
    yield
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils

      multihost_utils.sync_global_devices("auteur_convert_commit")
    if jax.process_index() == 0:
      os.rename(tmp, os.path.abspath(dst.rstrip("/")))
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    for folder in reversed(created):
      with contextlib.suppress(OSError):  # Not empty: another writer's.
        os.rmdir(folder)
    raise


def import_weights(
  family: str,
  src: str,
  dst: str,
  *,
  config: ml_collections.ConfigDict | None = None,
  mesh_shape: Mapping[str, int] | None = None,
  dtype: str | None = None,
  chunk_bytes: int = 64 << 20,
  progress: bool = True,
) -> dict:
  """Converts the folder `src` into the orbax checkpoint `dst`.

  Args:
    config: a run config: the model's shapes, mesh, rules and params dtype come from it
      and the params go where its task's model keeps them (e.g. model/llm); without one,
      the model is config.json's, stored under model/.
    mesh_shape: overrides the mesh (default: config.mesh.shape, else all devices on fsdp).
    dtype: params dtype (default: the config's param_dtype, else each tensor's own).
  Returns:
    A summary: dst, family, params, bytes, mesh, fresh (params left to the model's
    initialiser), config_differences (config.json vs the run config).
  """
  fam = families.get(family)
  tmp = temporary(dst)
  folder = SafetensorsFolder(src)
  hf = read_hf_config(src)
  families.check_kind(fam, hf, src)
  hf_cfg = fam.from_hf(hf)
  differences: list[str] = []
  if config is not None:
    if fam.task is None or config.task != fam.task[0]:
      raise WeightError(
        f"config.task {config.task!r}: family {family} goes into "
        f"{fam.task[0] if fam.task else 'no'} runs"
      )
    _, prefix, get_cfg = fam.task
    cfg = get_cfg(config)
    differences = _differences(hf_cfg, cfg)
    rules: Rules = mesh_rules(config)
    mesh_shape = mesh_shape or dict(config.mesh.shape)
  else:
    prefix, cfg, rules = ("model",), hf_cfg, DEFAULT_RULES
  mesh = make_mesh(dict(mesh_shape or {"fsdp": -1}))
  ours, shardings = records.abstract_params(fam, cfg, mesh, rules)
  by_param = mapping.pieces_by_param(fam, cfg, {k: v.shape for k, v in ours.items()}, folder, src)
  for name in by_param:
    mapping.check_divisible(name, ours[name].shape, shardings[name], MESH_HINT)

  def target_dtype(name: str) -> np.dtype:
    if dtype:
      return np.dtype(jax.numpy.dtype(dtype))
    if config is not None:
      return np.dtype(ours[name].dtype)
    return folder.dtype(by_param[name][0].theirs)

  total = 0
  with committed(tmp, dst):
    step_dir = os.path.join(tmp, str(STEP))
    writer = orbax_io.ParamWriter(os.path.join(step_dir, "state"), chunk_bytes)
    bar = tqdm.tqdm(
      by_param.items(),
      desc=f"import {family}",
      unit="param",
      disable=not progress or jax.process_index() != 0,
    )
    for name, ps in bar:
      shape = ours[name].shape

      def fill(out, block, ps=ps, shape=shape):
        mapping.fill(out, block, shape, ps, folder.view)

      splits = [sorted({b for p in ps for b in _edges(shape, p.at, d)}) for d in range(len(shape))]
      total += writer.write(
        records.leaf_key(prefix, name), shape, target_dtype(name), shardings[name], fill, splits
      )
    writer.finish()
    stored = dataclasses.replace(cfg, param_dtype=dtype) if dtype else cfg
    if jax.process_index() == 0:
      layout.write_config_item(
        step_dir,
        {
          layout.RECORD: dict(
            family=family,
            prefix=list(prefix),
            hf_config=hf,
            source=os.path.abspath(src),
            mesh=dict(mesh.shape),
            **records.cfg_to_json(stored),
          )
        },
      )
  fresh = sorted(n for n in ours if n not in by_param)
  return dict(
    dst=os.path.abspath(dst),
    family=family,
    params=len(by_param),
    bytes=total,
    mesh=dict(mesh.shape),
    prefix="/".join(prefix),
    fresh=fresh,
    config_differences=differences,
  )


def _edges(shape, at, dim) -> list[int]:
  """Offsets along `dim` where a piece placed at `at` starts and stops."""
  start, stop, _ = mapping.region(shape, at)[dim]
  return [start, stop] if (start, stop) != (0, shape[dim]) else []
