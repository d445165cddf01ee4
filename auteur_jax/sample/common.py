"""Helpers the story and keyframe samplers share: the sampling mesh rules, item seeds,
fixed row groups, and models built or restored from a training config."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import jax
import ml_collections
from flax import nnx

from auteur_jax.checkpoint.restore import restore_model
from auteur_jax.config import ConfigError
from auteur_jax.models import registry
from auteur_jax.parallel import rules as rules_lib

# The models' logical rules with the batch on `data` only: fsdp / tensor split weights
# (a DiT too big for one device), never the rows of a call.
RULES = tuple((name, "data" if name == "batch" else axes) for name, axes in rules_lib.DEFAULT_RULES)


def item_seed(item_id: str, base_seed: int = 0) -> int:
  """A 31-bit seed from the item's id (and the job's base seed); stable across runs."""
  digest = hashlib.sha256(f"{base_seed}:{item_id}".encode()).digest()
  return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def fixed_rows(n: int, rows: int) -> list[list[int]]:
  """Indices 0..n-1 in groups of exactly `rows`, the last padded with its last index."""
  groups = [list(range(i, min(i + rows, n))) for i in range(0, n, rows)]
  if groups:
    groups[-1] += [groups[-1][-1]] * (rows - len(groups[-1]))
  return groups


def build_jitted(make: Callable[[], nnx.Module]) -> nnx.Module:
  """make() run as one compiled init (eager initialisation costs seconds per model)."""
  with nnx.use_eager_sharding(False):
    graphdef = nnx.graphdef(nnx.eval_shape(make))
    return nnx.merge(graphdef, jax.jit(lambda: nnx.state(make()))())


def load_model(
  config: ml_collections.ConfigDict,
  where: str,
  allow_random: bool = False,
  seed: int = 0,
  mesh: jax.sharding.Mesh | None = None,
  rules: rules_lib.Rules = RULES,
) -> nnx.Module:
  """The model of a training config (models/registry.py), params restored from its
  init.checkpoint (a run's workdir, its checkpoints/ folder or a step folder; its EMA
  weights with init.ema) onto `mesh`
  (default: the first local device) under `rules`. Empty init.checkpoint: random weights
  if `allow_random` (smoke tests), else a ConfigError naming `where`."""
  path = (config.get("init") or {}).get("checkpoint", "")
  if not path:
    if not allow_random:
      raise ConfigError(
        f"{where}.init.checkpoint is empty: set it to the model's training "
        "run (auteur train --workdir), or allow_random_init=True for a "
        "smoke test"
      )
    return build_jitted(lambda: registry.build(config, nnx.Rngs(seed)))
  return restore_model(
    path,
    lambda: registry.build(config, nnx.Rngs(0)),
    ("ema",) if config.init.get("ema") else ("model",),  # The run's EMA weights (init.ema).
    f"{where}.init.checkpoint",
    mesh,
    rules,
  )
