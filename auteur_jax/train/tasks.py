"""Tasks: what the trainer needs from each model family.

A task computes the loss of a batch and makes the per-process grain dataset from
`config.data`; its model comes from models/registry.py (the same `config.task` name).
Tasks register by name; the registry imports a task's module only when it is asked for.
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol

import grain
import jax
import ml_collections
from flax import nnx

from auteur_jax.config import ConfigError


class Task(Protocol):
  """What a model family gives the trainer besides its model."""

  def loss(
    self,
    config: ml_collections.ConfigDict,
    model: nnx.Module,
    batch: dict[str, jax.Array],
    rng: jax.Array,
  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Scalar loss and its parts (logged). A `num_tokens` part gives tokens/s."""

  def dataset(
    self, config: ml_collections.ConfigDict, process_index: int, process_count: int
  ) -> grain.IterDataset:
    """This process's batches (leading axis: the process's share of the global batch);
    checks the config's data against the model first."""

  # Optional: `adapt_init(config, model)` changes, in place, a model whose params were
  # just restored from config.init.checkpoint (e.g. task_vae's config.init.inflate);
  # `init_adapters(config)` gives checkpoint.restore.restore_into's `adapt` (params the
  # checkpoint holds in another shape, e.g. task_dit's config.init.widen_inputs).


# name -> "module:attribute" of a Task instance; modules import only when used.
_REGISTRY: dict[str, str] = {
  "director": "auteur_jax.train.task_director:TASK",
  "dit": "auteur_jax.train.task_dit:TASK",
  "keyframe": "auteur_jax.train.task_keyframe:TASK",
  "vae": "auteur_jax.train.task_vae:TASK",
  "clip": "auteur_jax.train.task_clip:TASK",
}
_INSTANCES: dict[str, Any] = {}


def register(name: str, task: Any) -> None:
  """Registers a Task instance under `name` (tests and extensions)."""
  _INSTANCES[name] = task


def get(name: str) -> Task:
  """The task called `name` (config.task)."""
  if name in _INSTANCES:
    return _INSTANCES[name]
  if name not in _REGISTRY:
    raise ConfigError(
      f"config.task: unknown task {name!r}; expected one of "
      f"{sorted(set(_REGISTRY) | set(_INSTANCES))}"
    )
  module, attr = _REGISTRY[name].split(":")
  try:
    task = getattr(importlib.import_module(module), attr)
  except ModuleNotFoundError as e:
    raise ConfigError(f"config.task: task {name!r} is not available ({e})") from e
  _INSTANCES[name] = task
  return task
