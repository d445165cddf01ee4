"""Optimizer and learning-rate schedule from `config.train`.

AdamW with linear warm-up then cosine decay (or constant), global-norm gradient
clipping and optional gradient accumulation (optax.MultiSteps). Weight decay skips
1-D parameters (norm scales, biases), as is usual for transformers.
"""

from __future__ import annotations

import dataclasses

import jax
import ml_collections
import optax

from auteur_jax.config_sections import from_section
from auteur_jax.diffusion.conditioning import VisualRegConfig
from auteur_jax.diffusion.flow import FlowConfig

SCHEDULES = ("cosine", "constant")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """`config.train`: optimizer, schedule, loop and checkpoints. The defaults are the ones
  every task shares (`train_defaults`); `flow` and `visual_reg` are the dit task's."""

  steps: int = 100
  lr: float = 1e-3
  warmup_steps: int = 10
  schedule: str = "cosine"  # After the warm-up: "cosine" | "constant".
  end_lr_fraction: float = 0.0  # cosine ends at end_lr_fraction * lr.
  b1: float = 0.9
  b2: float = 0.95
  eps: float = 1e-8
  weight_decay: float = 0.0  # Matrices only (see _decay_mask).
  grad_clip: float = 1.0  # Global norm; 0 = no clipping.
  grad_accum_steps: int = 1  # Batches per optimizer step.
  seed: int = 0
  log_every: int = 10
  checkpoint_every: int = 50
  keep_last: int = 3  # Checkpoints kept ...
  keep_every: int = 0  # ... plus every keep_every-th step (0: none).
  async_checkpoints: bool = True
  # (A, B): trace steps A..B (or (A,): step A) into WORKDIR/tensorboard (TensorBoard's
  # profile plugin; also a Perfetto trace); `auteur train --profile-steps A,B`.
  profile_steps: tuple[int, ...] = ()
  # > 0: the state keeps ema = d * ema + (1 - d) * params after every optimizer update
  # (trainer.TrainState.ema), checkpointed with it; init.ema reads it back.
  ema_decay: float = 0.0
  flow: FlowConfig | None = None  # dit: training times and condition dropout.
  visual_reg: VisualRegConfig | None = None  # dit: visual-embedding regularisation.

  def validate(self) -> None:
    if self.schedule not in SCHEDULES:
      raise ValueError(f"schedule must be 'cosine' or 'constant', got {self.schedule!r}")
    for name in ("steps", "warmup_steps", "keep_every", "lr", "weight_decay", "grad_clip"):
      if getattr(self, name) < 0:
        raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
    for name in ("grad_accum_steps", "log_every", "checkpoint_every", "keep_last"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
    p = tuple(self.profile_steps)
    if p and (len(p) > 2 or p[0] < 0 or p[0] > p[-1]):
      raise ValueError(f"profile_steps must be (A, B) with 0 <= A <= B, or (A,); got {p}")
    if not 0.0 <= self.ema_decay < 1.0:
      raise ValueError(f"ema_decay must be in [0, 1) (0: off), got {self.ema_decay}")
    for name in ("b1", "b2", "end_lr_fraction"):
      if not 0.0 <= getattr(self, name) <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")


def train_config(t: TrainConfig | ml_collections.ConfigDict) -> TrainConfig:
  """`config.train` checked (unknown keys, types, values) as a TrainConfig."""
  return from_section(TrainConfig, t, "config.train")


def make_schedule(t: TrainConfig | ml_collections.ConfigDict) -> optax.Schedule:
  """Learning rate per optimizer step: warm-up over `t.warmup_steps`, then `t.schedule`.

  `cosine` decays to `t.end_lr_fraction * t.lr` at `t.steps`; `constant` stays at `t.lr`.
  """
  t = train_config(t)
  warmup = optax.linear_schedule(0.0, t.lr, max(t.warmup_steps, 1))
  if t.schedule == "cosine":
    rest = optax.cosine_decay_schedule(
      t.lr, max(t.steps - t.warmup_steps, 1), alpha=t.end_lr_fraction
    )
  else:
    rest = optax.constant_schedule(t.lr)
  return optax.join_schedules([warmup, rest], [t.warmup_steps])


def _decay_mask(params):
  return jax.tree.map(lambda p: p.ndim > 1, params)


def make_optimizer(t: TrainConfig | ml_collections.ConfigDict) -> optax.GradientTransformation:
  """clip(t.grad_clip) -> AdamW(t.b1, t.b2, t.eps, t.weight_decay) at make_schedule(t)."""
  t = train_config(t)
  parts = []
  if t.grad_clip > 0:
    parts.append(optax.clip_by_global_norm(t.grad_clip))
  parts.append(
    optax.adamw(
      make_schedule(t), b1=t.b1, b2=t.b2, eps=t.eps, weight_decay=t.weight_decay, mask=_decay_mask
    )
  )
  tx = optax.chain(*parts)
  if t.grad_accum_steps > 1:
    tx = optax.MultiSteps(tx, every_k_schedule=t.grad_accum_steps)
  return tx


def train_defaults() -> ml_collections.ConfigDict:
  """The `config.train` fields every task shares, at TrainConfig's defaults (configs
  override what they need; the dit task adds flow and visual_reg)."""
  shared = TrainConfig()
  return ml_collections.ConfigDict(
    {
      f.name: getattr(shared, f.name)
      for f in dataclasses.fields(TrainConfig)
      if f.name not in ("flow", "visual_reg")
    }
  )
