"""Restoring params from a checkpoint straight onto a mesh.

Every reader of params goes through here: the trainer's start from another run or a
converted checkpoint (`restore_into`), and sampling, encoding, CLIP-T and the demo
(`restore_model`). Each parameter is read onto the sharding its logical axis names get
under the rules on the mesh (an abstract target with shardings): no device holds more
than its shards, and no host holds the whole model.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import jax
from flax import nnx

from auteur_jax.checkpoint import orbax_io
from auteur_jax.checkpoint.errors import WeightError
from auteur_jax.checkpoint.layout import Key, key_of, step_dir_of
from auteur_jax.config import ConfigError
from auteur_jax.parallel.mesh import make_mesh
from auteur_jax.parallel.rules import DEFAULT_RULES, Rules, state_shardings


def _state_dir(path: str, where: str) -> str:
  if "://" not in path and not os.path.exists(path):
    raise FileNotFoundError(f"{where}: {path} does not exist")
  step_dir = step_dir_of(path)
  if step_dir is None:
    raise ConfigError(
      f"{where}: {path} holds no orbax checkpoint (expected a training "
      "run's workdir, its checkpoints/ folder or one step folder)"
    )
  return os.path.join(step_dir, "state")


def restore_model(
  path: str,
  make: Callable[[], nnx.Module],
  key_path: Key,
  where: str,
  mesh: jax.sharding.Mesh | None = None,
  rules: Rules = DEFAULT_RULES,
) -> nnx.Module:
  """make()'s model (built abstractly) with its params restored from the `state` item of
  the latest checkpoint of `path` (a training run's workdir, its checkpoints/ folder, one
  step folder or a converted checkpoint), each onto its sharding under `rules` on `mesh`
  (default: the first local device). The optimizer state and the rest are not read.

  key_path: where the module sits in the saved state, e.g. ("model",) or
  ("model", "vision"). where: the config key that errors name.
  """
  state_dir = _state_dir(path, where)
  mesh = mesh or make_mesh({"data": 1}, jax.local_devices()[:1])
  with nnx.use_eager_sharding(False):
    model = nnx.eval_shape(make)
  params = nnx.state(model, nnx.Param)
  leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
  shardings = jax.tree.leaves(state_shardings(params, mesh, rules))
  keys = [(*key_path, *key_of(p)) for p, _ in leaves]
  targets = {
    k: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s)
    for k, (_, x), s in zip(keys, leaves, shardings, strict=True)
  }
  try:
    restored = orbax_io.restore(state_dir, targets)
  except WeightError as e:
    raise ConfigError(f"{where}: cannot restore {'/'.join(key_path)} params ({e})") from e
  nnx.update(model, jax.tree_util.tree_unflatten(treedef, [restored[k] for k in keys]))
  return model


def restore_into(
  path: str, state: Any, abstract: Any, where: str = "config.init.checkpoint"
) -> tuple[Any, list[str]]:
  """`state` (a train state {model, opt, ...}) with the model params that the checkpoint
  at `path` holds (a converted checkpoint from `auteur convert import`, or another run)
  restored onto `abstract`'s shardings and dtypes; the optimizer state and params the
  checkpoint lacks stay as given. Returns (state, names of the params left as given)."""
  state_dir = _state_dir(path, where)
  saved = orbax_io.tree_metadata(state_dir)
  wanted = {key_of(p): x for p, x in jax.tree_util.tree_flatten_with_path(abstract)[0]}
  wanted = {k: x for k, x in wanted.items() if k[0] == "model"}
  found = {k: x for k, x in wanted.items() if k in saved}
  bad = [
    f"{'/'.join(k)}: checkpoint {tuple(saved[k].shape)}, model {x.shape}"
    for k, x in found.items()
    if tuple(saved[k].shape) != tuple(x.shape)
  ]
  if not found or bad:
    raise ConfigError(
      f"{where}: {state_dir} does not fit this run's model: "
      + (
        "; ".join(bad[:8])
        if bad
        else f"none of its params are there (it has e.g. {['/'.join(k) for k in list(saved)[:3]]})"
      )
    )
  try:
    restored = orbax_io.restore(state_dir, found)
  except WeightError as e:
    raise ConfigError(f"{where}: {e}") from e
  state = jax.tree_util.tree_map_with_path(lambda p, x: restored.get(key_of(p), x), state)
  return state, sorted("/".join(k[1:-1]) for k in wanted if k not in found)
