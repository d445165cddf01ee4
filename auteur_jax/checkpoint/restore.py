"""Restoring params from a checkpoint straight onto a mesh.

Every reader of params goes through here: the trainer's start from another run or a
converted checkpoint (`restore_into`), and sampling, encoding, CLIP-T and the demo
(`restore_model`). Each parameter is read onto the sharding its logical axis names get
under the rules on the mesh (an abstract target with shardings): no device holds more
than its shards, and no host holds the whole model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from auteur_jax import paths
from auteur_jax.checkpoint import orbax_io
from auteur_jax.checkpoint.errors import WeightError
from auteur_jax.checkpoint.layout import Key, key_of, step_dir_of
from auteur_jax.config import ConfigError
from auteur_jax.parallel.mesh import make_mesh
from auteur_jax.parallel.rules import DEFAULT_RULES, Rules, state_shardings


def _state_dir(path: str, where: str) -> str:
  if not paths.exists(path):
    raise FileNotFoundError(f"{where}: {path} does not exist")
  step_dir = step_dir_of(path)
  if step_dir is None:
    raise ConfigError(
      f"{where}: {path} holds no orbax checkpoint (expected a training "
      "run's workdir, its checkpoints/ folder or one step folder)"
    )
  return paths.join(step_dir, "state")


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


# (saved param as the checkpoint holds it, the model's param) -> the model's param.
Adapt = Callable[[jax.Array, jax.ShapeDtypeStruct], jax.Array]


def _name(k: Key) -> str:
  """A state key ("model", ..., "value") as the param names of restore_into."""
  return "/".join(k[1:-1])


def restore_into(
  path: str,
  state: Any,
  abstract: Any,
  where: str = "config.init.checkpoint",
  adapt: Mapping[str, Adapt] | None = None,
) -> tuple[Any, list[str]]:
  """`state` (a train state {model, opt, ...}) with the model params that the checkpoint
  at `path` holds (a converted checkpoint from `auteur convert import`, or another run)
  restored onto `abstract`'s shardings and dtypes; the optimizer state and params the
  checkpoint lacks stay as given. Returns (state, names of the params left as given).

  adapt: param name (e.g. "dit/patch_embed/kernel") -> fn(saved, target) for params the
  checkpoint holds in another shape (e.g. models.dit.widen_patch_kernel): the saved array
  is restored whole (replicated) and fn's result, of the target's shape, placed on the
  target's sharding. Params whose shapes agree are restored as they are."""
  adapt = adapt or {}
  state_dir = _state_dir(path, where)
  saved = orbax_io.tree_metadata(state_dir)
  wanted = {key_of(p): x for p, x in jax.tree_util.tree_flatten_with_path(abstract)[0]}
  wanted = {k: x for k, x in wanted.items() if k[0] == "model"}
  found = {k: x for k, x in wanted.items() if k in saved}
  reshaped = {
    k: x for k, x in found.items() if _name(k) in adapt and tuple(saved[k].shape) != tuple(x.shape)
  }
  bad = [
    f"{'/'.join(k)}: checkpoint {tuple(saved[k].shape)}, model {x.shape}"
    for k, x in found.items()
    if tuple(saved[k].shape) != tuple(x.shape) and k not in reshaped
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
  targets = {
    k: jax.ShapeDtypeStruct(
      tuple(saved[k].shape), x.dtype, sharding=NamedSharding(x.sharding.mesh, PartitionSpec())
    )
    if k in reshaped
    else x
    for k, x in found.items()
  }
  try:
    restored = orbax_io.restore(state_dir, targets)
  except WeightError as e:
    raise ConfigError(f"{where}: {e}") from e
  for k, x in reshaped.items():
    y = adapt[_name(k)](restored[k], x)
    if tuple(y.shape) != tuple(x.shape):
      raise ConfigError(
        f"{where}: adapting {_name(k)} {tuple(saved[k].shape)} gave {tuple(y.shape)}, "
        f"the model needs {tuple(x.shape)}"
      )
    restored[k] = jax.device_put(y.astype(x.dtype), x.sharding)
  state = jax.tree_util.tree_map_with_path(lambda p, x: restored.get(key_of(p), x), state)
  return state, sorted(_name(k) for k in wanted if k not in found)
