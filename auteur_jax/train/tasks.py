"""Tasks: what the trainer needs from each model family.

A task builds its model from `config.model`, computes the loss of a batch and makes the
per-process grain dataset from `config.data`. Tasks register by name (`config.task`);
the registry imports a task's module only when it is asked for.
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
  """The three things a model family gives the trainer."""

  def build(self, config: ml_collections.ConfigDict, rngs: nnx.Rngs) -> nnx.Module:
    """The model, from config.model (parameters carry logical axis names)."""

  def loss(self, config: ml_collections.ConfigDict, model: nnx.Module,
           batch: dict[str, jax.Array], rng: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Scalar loss and its parts (logged). A `num_tokens` part gives tokens/s."""

  def dataset(self, config: ml_collections.ConfigDict, process_index: int,
              process_count: int) -> grain.IterDataset:
    """This process's batches (leading axis: the process's share of the global batch)."""

  # Optional: `adapt_init(config, model)` changes, in place, a model whose params were
  # just restored from config.init.checkpoint (e.g. task_vae's config.init.inflate).


# name -> "module:attribute" of a Task instance; modules import only when used.
_REGISTRY: dict[str, str] = {
    "director": "auteur_jax.train.task_director:TASK",
    "dit": "auteur_jax.train.task_dit:TASK",
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
    raise ConfigError(f"config.task: unknown task {name!r}; expected one of "
                      f"{sorted(set(_REGISTRY) | set(_INSTANCES))}")
  module, attr = _REGISTRY[name].split(":")
  try:
    task = getattr(importlib.import_module(module), attr)
  except ModuleNotFoundError as e:
    raise ConfigError(f"config.task: task {name!r} is not available ({e})") from e
  _INSTANCES[name] = task
  return task
