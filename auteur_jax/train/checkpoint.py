"""Orbax checkpoints of a training run: items `state`, `data` and `config`.

OUT/checkpoints/<step>/
  state/    params + optimizer state + step (sharded arrays, written by every process)
  data/     the grain iterator state, one file per process
  config/   the run's config as JSON

Saves are asynchronous (training goes on while arrays are written); keep-last-N and
keep-every-K come from `config.train`. Restoring takes abstract targets
(ShapeDtypeStruct with the *current* mesh's shardings), so a checkpoint written on one
mesh restores onto another.
"""

from __future__ import annotations

import json
import os
from typing import Any

import grain
import jax
import ml_collections
import orbax.checkpoint as ocp


class _IteratorState:
  """What grain's checkpoint handler saves / restores for an iterator with a dict state.

  The state is taken when the save *starts* (snapshot): an async save writes it later,
  when the training loop has already moved the iterator on.
  """

  def __init__(self, iterator: Any, snapshot: bool = False):
    self._iterator = iterator
    self._state = iterator.get_state() if snapshot else None

  def get_state(self) -> bytes:
    return json.dumps(self._state, indent=1).encode()

  def set_state(self, state: bytes) -> None:
    self._iterator.set_state(json.loads(state))

  def start_prefetch(self) -> None:  # Called by the handler after a restore.
    pass


class Checkpoints:
  """A CheckpointManager with the run's three items."""

  def __init__(self, workdir: str, train: ml_collections.ConfigDict):
    self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
    options = ocp.CheckpointManagerOptions(
        max_to_keep=train.keep_last, keep_period=train.keep_every or None,
        enable_async_checkpointing=train.async_checkpoints, create=True)
    self.manager = ocp.CheckpointManager(
        self.directory, options=options, item_names=("state", "data", "config"),
        item_handlers={"state": ocp.StandardCheckpointHandler(),
                       "data": grain.checkpoint.CheckpointHandler(),
                       "config": ocp.JsonCheckpointHandler()})

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self.manager.all_steps())

  def save(self, step: int, state: Any, data_iterator: Any,
           config: ml_collections.ConfigDict, force: bool = False) -> bool:
    """Starts an (async) save of `state` (a pytree of jax.Arrays) at `step`."""
    return self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=grain.checkpoint.CheckpointSave(_IteratorState(data_iterator, snapshot=True)),
        config=ocp.args.JsonSave(json.loads(config.to_json()))), force=force)

  def restore(self, step: int, abstract_state: Any, data_iterator: Any | None) -> Any:
    """Restores `state` onto the shardings of `abstract_state` (and the iterator in place)."""
    items = {"state": ocp.args.StandardRestore(abstract_state)}
    if data_iterator is not None:
      items["data"] = grain.checkpoint.CheckpointRestore(_IteratorState(data_iterator))
    return self.manager.restore(step, args=ocp.args.Composite(**items))["state"]

  def restore_config(self, step: int) -> dict:
    return self.manager.restore(step, args=ocp.args.Composite(
        config=ocp.args.JsonRestore()))["config"]

  def wait(self) -> None:
    """Blocks until pending async saves are on disk."""
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def abstract_like(tree: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs of `tree` (arrays or ShapeDtypeStructs) with `shardings`."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      tree, shardings)


def key_str(k: Any) -> str:
  """One step of a jax key path as the string orbax names it by."""
  return str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))))


def step_dir_of(path: str) -> str | None:
  """The step folder holding `state/` of a run workdir, its checkpoints/ folder, a
  converted checkpoint or one step folder (the latest step where there are several)."""
  for base in (path, os.path.join(path, "checkpoints")):
    if os.path.isdir(os.path.join(base, "state")):
      return base
    steps = [int(n) for n in os.listdir(base) if n.isdigit()] if os.path.isdir(base) else []
    if steps and os.path.isdir(os.path.join(base, str(max(steps)), "state")):
      return os.path.join(base, str(max(steps)))
  return None


def init_params(path: str, state: Any, abstract: Any) -> tuple[Any, list[str]]:
  """`state` with the model params that the checkpoint at `path` holds (a converted
  checkpoint from `auteur convert import`, or another run) restored onto `abstract`'s
  shardings and dtypes; the optimizer state and params the checkpoint lacks stay as
  given. Returns (state, names of the params left as given)."""
  from auteur_jax.config import ConfigError
  from auteur_jax.convert import orbax_io
  from auteur_jax.convert.weights import WeightError
  step_dir = step_dir_of(path)
  if step_dir is None:
    raise ConfigError(f"config.init.checkpoint: {path} holds no orbax checkpoint")
  state_dir = os.path.join(step_dir, "state")
  saved = orbax_io.tree_metadata(state_dir)
  wanted = {tuple(key_str(k) for k in p): x
            for p, x in jax.tree_util.tree_flatten_with_path(abstract)[0]}
  wanted = {k: x for k, x in wanted.items() if k[0] == "model"}
  found = {k: x for k, x in wanted.items() if k in saved}
  bad = [f"{'/'.join(k)}: checkpoint {tuple(saved[k].shape)}, model {x.shape}"
         for k, x in found.items() if tuple(saved[k].shape) != tuple(x.shape)]
  if not found or bad:
    raise ConfigError(f"config.init.checkpoint: {state_dir} does not fit this run's model: "
                      + ("; ".join(bad[:8]) if bad else "none of its params are there "
                         f"(it has e.g. {['/'.join(k) for k in list(saved)[:3]]})"))
  try:
    restored = orbax_io.restore(state_dir, found)
  except WeightError as e:
    raise ConfigError(f"config.init.checkpoint: {e}") from e
  state = jax.tree_util.tree_map_with_path(
      lambda p, x: restored.get(tuple(key_str(k) for k in p), x), state)
  return state, sorted("/".join(k[1:-1]) for k in wanted if k not in found)
