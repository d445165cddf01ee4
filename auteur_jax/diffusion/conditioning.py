"""Visual-embedding regularisation for DiT training (VideoAuteur, Sec. 4.2):

  z' = Shuffle(Mask(z + eps)),   eps ~ N(0, (noise_scale * std_z)^2)

z [B, K, D] are the director's visual tokens for one clip. Each token is zeroed with
probability mask_prob; independently, each token is picked with probability
shuffle_prob and the picked tokens are permuted among themselves (a random
permutation of the picked positions; the others stay in place). std_z is one scalar:
the standard deviation of all embedding values, estimated from data
(`estimate_embedding_std`, 2,000 samples in the paper). Paper: 0.25 / 0.25 / 0.5.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from auteur_jax.config_sections import from_section


@dataclasses.dataclass(frozen=True)
class VisualRegConfig:
  """config.train.visual_reg. embedding_std <= 0 means "not estimated yet"."""

  mask_prob: float = 0.25
  shuffle_prob: float = 0.25
  noise_scale: float = 0.5
  embedding_std: float = -1.0
  std_samples: int = 2000

  @classmethod
  def from_dict(
    cls, d: Mapping[str, Any], path: str = "config.train.visual_reg"
  ) -> VisualRegConfig:
    """From the section `d` at `path`; unknown keys and bad values raise ConfigError."""
    return from_section(cls, d, path)

  def validate(self) -> None:
    for name in ("mask_prob", "shuffle_prob"):
      if not 0.0 <= getattr(self, name) <= 1.0:
        raise ValueError(
          f"config.train.visual_reg.{name} must be in [0, 1], got {getattr(self, name)}"
        )
    if self.noise_scale < 0:
      raise ValueError(f"config.train.visual_reg.noise_scale must be >= 0, got {self.noise_scale}")
    if self.std_samples < 1:
      raise ValueError(f"config.train.visual_reg.std_samples must be >= 1, got {self.std_samples}")


class Regularized(NamedTuple):
  """The regularised tokens and what was done to them (for tests and logging)."""

  z: jax.Array  # [B, K, D]
  masked: jax.Array  # bool [B, K]: zeroed.
  picked: jax.Array  # bool [B, K]: taking part in the shuffle.
  source: jax.Array  # int [B, K]: z'[b, k] came from position source[b, k].


def estimate_embedding_std(embeddings: Iterable[np.ndarray], num_samples: int = 2000) -> float:
  """Std of all values of the first `num_samples` embeddings ([K, D] or batches [B, K, D]).

  Accumulates sums in float64, so any number of batches fits in memory.
  """
  n, total, total_sq, seen = 0, 0.0, 0.0, 0
  for e in embeddings:
    e = np.asarray(e, np.float64)
    if e.ndim == 2:
      e = e[None]
    if e.ndim != 3:
      raise ValueError(f"visual embedding: expected [K, D] or [B, K, D], got shape {e.shape}")
    e = e[: num_samples - seen]
    seen += e.shape[0]
    n += e.size
    total += e.sum()
    total_sq += np.square(e).sum()
    if seen >= num_samples:
      break
  if n == 0:
    raise ValueError("estimate_embedding_std: no embeddings given")
  mean = total / n
  return float(np.sqrt(max(total_sq / n - mean * mean, 0.0)))


def regularize(key: jax.Array, z: jax.Array, cfg: VisualRegConfig) -> Regularized:
  """z [B, K, D] -> Shuffle(Mask(z + eps)) with cfg's probabilities and noise."""
  if z.ndim != 3:
    raise ValueError(f"visual embedding: expected [B, K, D], got shape {z.shape}")
  if cfg.noise_scale > 0 and cfg.embedding_std <= 0:
    raise ValueError(
      "config.train.visual_reg.embedding_std is not set: estimate it with "
      "conditioning.estimate_embedding_std over std_samples embeddings"
    )
  b, k, _ = z.shape
  k_noise, k_mask, k_pick, k_perm = jax.random.split(key, 4)
  std = cfg.noise_scale * max(cfg.embedding_std, 0.0)
  z = z + (std * jax.random.normal(k_noise, z.shape, jnp.float32)).astype(z.dtype)
  masked = jax.random.uniform(k_mask, (b, k)) < cfg.mask_prob
  z = jnp.where(masked[..., None], jnp.zeros_like(z), z)

  picked = jax.random.uniform(k_pick, (b, k)) < cfg.shuffle_prob
  pos = jnp.arange(k)
  # Picked positions in order, then the rest: slots[i] is the position that takes ...
  slots = jnp.argsort(jnp.where(picked, pos, k + pos), axis=-1)
  # ... the token from sources[i]: the picked positions in random order, then the rest
  # (unchanged order, so the rest map to themselves).
  order_key = jnp.where(picked, jax.random.uniform(k_perm, (b, k)), 2.0 + pos)
  sources = jnp.argsort(order_key, axis=-1)
  source = (
    jnp.zeros((b, k), jnp.int32).at[jnp.arange(b)[:, None], slots].set(sources.astype(jnp.int32))
  )
  z = jnp.take_along_axis(z, source[..., None], axis=1)
  return Regularized(z, masked, picked, source)
