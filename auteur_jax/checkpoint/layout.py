"""Where things sit in a checkpoint: step folders, items and key paths.

  ROOT/<step>/state    a PyTree checkpoint: a training run's {model, opt, ...} or, for a
                       converted checkpoint (ROOT/0/), params only, under the key path
                       where a run keeps them (e.g. model/llm/..., each leaf ending in
                       nnx's `value`)
  ROOT/<step>/config   JSON: a run's config, or a conversion record {RECORD: {family,
                       prefix, cfg, hf_config, source}}
  ROOT/<step>/data     the grain iterator state of a training run (train/checkpoint.py)

ROOT is a run's workdir/checkpoints; a run's workdir, ROOT or one step folder all name a
checkpoint. Local paths are made absolute here, once (orbax restores absolute paths
only); a URI (gs://...) is passed on as it is.
"""

from __future__ import annotations

from typing import Any

import jax
import orbax.checkpoint as ocp

from auteur_jax import paths
from auteur_jax.checkpoint.errors import WeightError

RECORD = "auteur_convert"  # The `config` item key of a conversion record.
Key = tuple[str, ...]  # A leaf's key path in a `state` item.


def absolute(path: str) -> str:
  """A local path made absolute; a URI (scheme://...) unchanged."""
  return paths.absolute(path)


def key_str(k: Any) -> str:
  """One step of a jax key path as the string orbax names it by."""
  return str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))))


def key_of(path: Any) -> Key:
  """A jax key path (tree_flatten_with_path) as a checkpoint Key."""
  return tuple(key_str(k) for k in path)


def step_dir_of(path: str) -> str | None:
  """The absolute step folder holding `state/` of a run workdir, its checkpoints/ folder, a
  converted checkpoint or one step folder (the latest step where there are several)."""
  path = absolute(path)
  for base in (path, paths.join(path, "checkpoints")):
    if paths.is_dir(paths.join(base, "state")):
      return base
    steps = [int(n) for n in paths.listdir(base) if n.isdigit()] if paths.is_dir(base) else []
    if steps and paths.is_dir(paths.join(base, str(max(steps)), "state")):
      return paths.join(base, str(max(steps)))
  return None


def find_step_dir(path: str) -> str:
  """step_dir_of(path), or a WeightError saying what was expected."""
  found = step_dir_of(path)
  if found is not None:
    return found
  raise WeightError(
    f"{path}: no orbax checkpoint (expected a folder with <step>/state, a "
    "training run's workdir or one step folder)"
  )


def read_config_item(step_dir: str) -> dict | None:
  """The step's `config` item (a run's config or a conversion record), if any."""
  item = paths.join(absolute(step_dir), "config")
  if not paths.is_dir(item):
    return None
  return ocp.Checkpointer(ocp.JsonCheckpointHandler()).restore(item)


def write_config_item(step_dir: str, value: dict) -> None:
  ocp.Checkpointer(ocp.JsonCheckpointHandler()).save(
    paths.join(absolute(step_dir), "config"), args=ocp.args.JsonSave(value)
  )


def nest(flat: dict[Key, Any]) -> dict:
  """{("a", "b"): x} -> {"a": {"b": x}}."""
  out: dict = {}
  for key, value in flat.items():
    node = out
    for k in key[:-1]:
      node = node.setdefault(k, {})
    node[key[-1]] = value
  return out


def flatten(tree: dict, prefix: Key = ()) -> dict[Key, Any]:
  """{"a": {"b": x}} -> {("a", "b"): x}."""
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(flatten(v, (*prefix, k)))
    else:
      out[(*prefix, k)] = v
  return out


def abstract_like(tree: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs of `tree` (arrays or ShapeDtypeStructs) with `shardings`."""
  return jax.tree.map(
    lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings
  )
