"""Optimizer and learning-rate schedule from `config.train`.

AdamW with linear warm-up then cosine decay (or constant), global-norm gradient
clipping and optional gradient accumulation (optax.MultiSteps). Weight decay skips
1-D parameters (norm scales, biases), as is usual for transformers.
"""

from __future__ import annotations

import jax
import ml_collections
import optax

from auteur_jax.config import ConfigError


def make_schedule(t: ml_collections.ConfigDict) -> optax.Schedule:
  """Learning rate per optimizer step: warm-up over `t.warmup_steps`, then `t.schedule`.

  `cosine` decays to `t.end_lr_fraction * t.lr` at `t.steps`; `constant` stays at `t.lr`.
  """
  warmup = optax.linear_schedule(0.0, t.lr, max(t.warmup_steps, 1))
  if t.schedule == "cosine":
    rest = optax.cosine_decay_schedule(t.lr, max(t.steps - t.warmup_steps, 1),
                                       alpha=t.end_lr_fraction)
  elif t.schedule == "constant":
    rest = optax.constant_schedule(t.lr)
  else:
    raise ConfigError(f"config.train.schedule must be 'cosine' or 'constant', got {t.schedule!r}")
  return optax.join_schedules([warmup, rest], [t.warmup_steps])


def _decay_mask(params):
  return jax.tree.map(lambda p: p.ndim > 1, params)


def make_optimizer(t: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """clip(t.grad_clip) -> AdamW(t.b1, t.b2, t.eps, t.weight_decay) at make_schedule(t)."""
  parts = []
  if t.grad_clip > 0:
    parts.append(optax.clip_by_global_norm(t.grad_clip))
  parts.append(optax.adamw(make_schedule(t), b1=t.b1, b2=t.b2, eps=t.eps,
                           weight_decay=t.weight_decay, mask=_decay_mask))
  tx = optax.chain(*parts)
  if t.grad_accum_steps > 1:
    tx = optax.MultiSteps(tx, every_k_schedule=t.grad_accum_steps)
  return tx


def train_defaults() -> ml_collections.ConfigDict:
  """The `config.train` fields every task shares (configs override what they need)."""
  return ml_collections.ConfigDict(dict(
      steps=100, lr=1e-3, warmup_steps=10, schedule="cosine", end_lr_fraction=0.0,
      b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.0, grad_clip=1.0, grad_accum_steps=1,
      seed=0, log_every=10, checkpoint_every=50, keep_last=3, keep_every=0,
      async_checkpoints=True, profile_steps=()))
