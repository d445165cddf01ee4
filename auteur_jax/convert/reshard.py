"""`auteur convert reshard` and `auteur convert inspect`.

Reshard writes a checkpoint's `state` again for a new mesh (optionally without the
optimizer state, or in another dtype), leaf by leaf and chunk by chunk: each chunk of the
new layout (aligned with the new shards, orbax_io.ParamWriter) is read from the old
arrays with tensorstore, so a host holds one chunk, not the state (a 14B run with its
optimizer state reshards on a workstation), and each process writes its own shards. Target
shardings: for a converted checkpoint, the family model's logical shardings on the new
mesh (so a `tensor` axis that the old mesh lacked is used); otherwise each leaf keeps
its saved PartitionSpec, with mesh axes the new mesh lacks dropped. Other items
(`data`, the grain iterator) are copied as they are, and `config` is carried over.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Mapping

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from auteur_jax.checkpoint import layout, orbax_io
from auteur_jax.checkpoint.errors import WeightError
from auteur_jax.checkpoint.layout import RECORD
from auteur_jax.convert import families, records
from auteur_jax.convert.importer import MESH_HINT, committed, temporary
from auteur_jax.convert.mapping import check_divisible
from auteur_jax.parallel.mesh import make_mesh


def _saved_spec(meta, mesh: jax.sharding.Mesh) -> PartitionSpec:
  spec = getattr(getattr(meta, "sharding", None), "partition_spec", None) or ()
  keep = lambda p: (
    (p if p in mesh.axis_names else None)
    if isinstance(p, str)
    else (tuple(a for a in p if a in mesh.axis_names) or None)
    if p
    else None
  )
  return PartitionSpec(*[keep(p) for p in spec])


def reshard(
  src: str,
  dst: str,
  mesh_shape: Mapping[str, int],
  *,
  drop_optimizer: bool = False,
  dtype: str | None = None,
) -> dict:
  """Writes `src`'s latest step to the new checkpoint `dst` on mesh `mesh_shape`.

  Returns a summary: dst, step, leaves, bytes (of the state as written).
  """
  tmp = temporary(dst)
  step_dir = layout.find_step_dir(src)
  step = int(os.path.basename(step_dir)) if os.path.basename(step_dir).isdigit() else 0
  state_dir = os.path.join(step_dir, "state")
  meta = orbax_io.tree_metadata(state_dir)
  item = layout.read_config_item(step_dir)
  mesh = make_mesh(dict(mesh_shape))
  logical = {}
  if item and RECORD in item:
    rec = item[RECORD]
    try:
      fam = families.get(rec.get("family"))
    except WeightError as e:
      raise WeightError(f"{step_dir}: {RECORD}.family: {e}") from e
    cfg, prefix, _ = records.model_of(fam, item, src)
    _, shardings = records.abstract_params(fam, cfg, mesh)
    logical = {records.leaf_key(prefix, k): v for k, v in shardings.items()}
  cast = np.dtype(jax.numpy.dtype(dtype)) if dtype else None
  targets = {}
  for key, m in meta.items():
    if drop_optimizer and key[0] != "model":
      continue
    sharding = logical.get(key) or NamedSharding(mesh, _saved_spec(m, mesh))
    name = "/".join(key)
    check_divisible(name, tuple(m.shape), sharding, MESH_HINT)
    leaf_dtype = np.dtype(m.dtype)
    if cast is not None and np.issubdtype(leaf_dtype, np.floating):
      leaf_dtype = cast
    targets[key] = jax.ShapeDtypeStruct(tuple(m.shape), leaf_dtype, sharding=sharding)
  if not targets:
    raise WeightError(f"{src}: no `model` leaves to keep")
  with committed(tmp, dst):
    new_step = os.path.join(tmp, str(step))
    writer = orbax_io.ParamWriter(os.path.join(new_step, "state"))
    open_leaf = orbax_io.leaf_opener(state_dir)
    for key, t in targets.items():
      source = open_leaf(key)

      def fill(out, block, source=source):
        out[...] = source[block].read().result()  # Cast to out's dtype on assignment.

      writer.write(key, t.shape, t.dtype, t.sharding, fill)
    writer.finish()
    if item is not None and jax.process_index() == 0:
      if RECORD in item:
        item[RECORD]["mesh"] = dict(mesh.shape)
        if dtype:
          item[RECORD]["cfg"]["param_dtype"] = dtype
      layout.write_config_item(new_step, item)
    for extra in sorted(os.listdir(step_dir)):  # e.g. `data`: the grain iterator state.
      if (
        not drop_optimizer
        and extra not in ("state", "config")
        and os.path.isdir(os.path.join(step_dir, extra))
        and jax.process_index() == 0
      ):
        shutil.copytree(os.path.join(step_dir, extra), os.path.join(new_step, extra))
  total = sum(math.prod(t.shape) * t.dtype.itemsize for t in targets.values())
  return dict(
    dst=os.path.abspath(dst), step=step, leaves=len(targets), bytes=total, mesh=dict(mesh.shape)
  )


def inspect(path: str) -> str:
  """A table of the checkpoint's leaves (name, shape, dtype, sharding, bytes) + totals."""
  step_dir = layout.find_step_dir(path)
  meta = orbax_io.tree_metadata(os.path.join(step_dir, "state"))
  item = layout.read_config_item(step_dir) or {}
  lines = [f"{step_dir}"]
  if RECORD in item:
    r = item[RECORD]
    lines.append(
      f"converted: family {r['family']} from {r.get('source')}, params under "
      f"{'/'.join(r['prefix'])}, mesh {r.get('mesh')}"
    )
  elif "task" in item:
    lines.append(f"training run: task {item['task']}")
  total = 0
  width = max(len("/".join(k)) for k in meta)
  for key, m in sorted(meta.items()):
    dtype = np.dtype(m.dtype)
    nbytes = math.prod(m.shape) * dtype.itemsize
    total += nbytes
    sh = getattr(m, "sharding", None)
    spec = "-"
    if sh is not None and hasattr(sh, "partition_spec"):
      spec = f"{tuple(sh.partition_spec)} on {dict(zip(sh.axis_names, map(int, sh.shape)))}"

    lines.append(
      f"  {'/'.join(key):<{width}}  {str(tuple(m.shape)):<20} {str(dtype):<9} {spec}  {nbytes:,} B"
    )
  lines.append(f"{len(meta)} arrays, {total:,} bytes ({total / 2**30:.3f} GiB)")
  return "\n".join(lines)
