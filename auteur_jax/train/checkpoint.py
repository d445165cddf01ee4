"""Orbax checkpoints of a training run: items `state`, `data` and `config`.

OUT/checkpoints/<step>/
  state/    params + optimizer state + step (sharded arrays, written by every process)
  data/     the grain iterator state, one file per process
  config/   the run's config as JSON

Saves are asynchronous (training goes on while arrays are written). A saved state counts
as good once its own loss has been computed finite (the trainer calls `confirm`, or
`discard` when it is not); only then are older checkpoints pruned, to the last
`config.train.keep_last` confirmed ones plus every `keep_every`-th step, so the last good
checkpoint is never deleted for one that turns out to yield NaN. Restoring takes abstract targets
(ShapeDtypeStruct with the *current* mesh's shardings), so a checkpoint written on one
mesh restores onto another. The layout and the reads that other code shares (a run's
params for sampling, an init checkpoint) live in auteur_jax/checkpoint/.
"""

from __future__ import annotations

import json
from typing import Any

import grain
import ml_collections
import orbax.checkpoint as ocp

from auteur_jax.checkpoint.layout import absolute


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
    self.directory = absolute(f"{workdir.rstrip('/')}/checkpoints")
    self.keep_last, self.keep_every = train.keep_last, train.keep_every
    options = ocp.CheckpointManagerOptions(  # Retention is ours: see `confirm`.
      max_to_keep=None, enable_async_checkpointing=train.async_checkpoints, create=True
    )
    self.manager = ocp.CheckpointManager(
      self.directory,
      options=options,
      item_names=("state", "data", "config"),
      item_handlers={
        "state": ocp.StandardCheckpointHandler(),
        "data": grain.checkpoint.CheckpointHandler(),
        "config": ocp.JsonCheckpointHandler(),
      },
    )

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self.manager.all_steps())

  def save(
    self,
    step: int,
    state: Any,
    data_iterator: Any,
    config: ml_collections.ConfigDict,
    force: bool = False,
  ) -> bool:
    """Starts an (async) save of `state` (a pytree of jax.Arrays) at `step`."""
    return self.manager.save(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=grain.checkpoint.CheckpointSave(_IteratorState(data_iterator, snapshot=True)),
        config=ocp.args.JsonSave(json.loads(config.to_json())),
      ),
      force=force,
    )

  def confirm(self, step: int) -> None:
    """The state saved at `step` trains on (its loss is finite): prunes the checkpoints
    up to it to the last keep_last plus every keep_every-th step."""
    done = sorted(s for s in self.all_steps() if s <= step)
    for s in done[: -self.keep_last]:
      if not (self.keep_every and s % self.keep_every == 0):
        self.manager.delete(s)

  def discard(self, step: int) -> None:
    """Deletes the checkpoint of `step` (its state's loss is not finite)."""
    self.manager.wait_until_finished()
    if step in self.all_steps():
      self.manager.delete(step)

  def restore(self, step: int, abstract_state: Any, data_iterator: Any | None) -> Any:
    """Restores `state` onto the shardings of `abstract_state` (and the iterator in place)."""
    items = {"state": ocp.args.StandardRestore(abstract_state)}
    if data_iterator is not None:
      items["data"] = grain.checkpoint.CheckpointRestore(_IteratorState(data_iterator))
    return self.manager.restore(step, args=ocp.args.Composite(**items))["state"]

  def restore_config(self, step: int) -> dict:
    return self.manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))[
      "config"
    ]

  def wait(self) -> None:
    """Blocks until pending async saves are on disk."""
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()
