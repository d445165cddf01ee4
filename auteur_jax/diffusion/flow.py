"""Rectified flow (SD3 / Wan style): noising, time sampling, loss, samplers, guidance.

Convention: t in [0, 1]; t = 0 is data, t = 1 is noise.
  x_t = (1 - t) * x0 + t * eps,   velocity target v = dx_t/dt = eps - x0.
Sampling integrates dx/dt = v(x, t) from t = 1 down to t = 0 over a "shifted" grid:
  shift_time(t, s) = s t / (1 + (s - 1) t)
which for s > 1 spends more steps at high noise (SD3 / Wan; Wan 2.1 uses s = 3-5).

Models are passed as `velocity_fn(x, t) -> v` with x [B, ...] and t [B]; guidance wraps
a conditional model `fn(x, t, text, visual)` into such a function.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp

VelocityFn = Callable[[jax.Array, jax.Array], jax.Array]
TIME_SAMPLING = ("uniform", "logit_normal")


def _bcast(t: jax.Array, x: jax.Array) -> jax.Array:
  """t [B] -> [B, 1, ..., 1] matching x's rank."""
  return t.reshape(t.shape + (1,) * (x.ndim - t.ndim)).astype(x.dtype)


def shift_time(t: jax.Array, shift: float) -> jax.Array:
  """Maps t in [0, 1] to s t / (1 + (s - 1) t): s > 1 moves times towards noise."""
  if shift <= 0:
    raise ValueError(f"flow shift must be > 0, got {shift}")
  return shift * t / (1.0 + (shift - 1.0) * t)


def sample_time(
  key: jax.Array,
  batch: int,
  kind: str = "logit_normal",
  *,
  mean: float = 0.0,
  std: float = 1.0,
  shift: float = 1.0,
) -> jax.Array:
  """Training times [batch] in (0, 1).

  kind "uniform": t ~ U(0, 1); "logit_normal": t = sigmoid(n), n ~ N(mean, std^2) (SD3).
  Then `shift_time(t, shift)` (shift 1 = unchanged).
  """
  if kind == "uniform":
    t = jax.random.uniform(key, (batch,), minval=1e-5, maxval=1.0 - 1e-5)
  elif kind == "logit_normal":
    t = jax.nn.sigmoid(mean + std * jax.random.normal(key, (batch,)))
  else:
    raise ValueError(f"time sampling {kind!r} unknown; expected one of {TIME_SAMPLING}")
  return shift_time(t, shift)


def add_noise(x0: jax.Array, noise: jax.Array, t: jax.Array) -> jax.Array:
  """x_t = (1 - t) x0 + t noise; x0, noise [B, ...], t [B]."""
  tb = _bcast(t, x0)
  return (1.0 - tb) * x0 + tb * noise


def velocity_target(x0: jax.Array, noise: jax.Array) -> jax.Array:
  """d x_t / dt = noise - x0."""
  return noise - x0


def flow_loss(
  v_pred: jax.Array, x0: jax.Array, noise: jax.Array, mask: jax.Array | None = None
) -> jax.Array:
  """Mean squared error to the velocity target (float32 scalar).

  mask: optional weights broadcastable to x0 (e.g. valid frames [B, T, 1, 1, 1]); the
  mean is over the weighted elements.
  """
  if v_pred.shape != x0.shape:
    raise ValueError(f"velocity prediction shape {v_pred.shape} != latents shape {x0.shape}")
  err = jnp.square(v_pred.astype(jnp.float32) - velocity_target(x0, noise).astype(jnp.float32))
  if mask is None:
    return err.mean()
  w = jnp.broadcast_to(mask.astype(jnp.float32), err.shape)
  return (err * w).sum() / jnp.maximum(w.sum(), 1.0)


def time_grid(num_steps: int, shift: float = 1.0) -> jax.Array:
  """[num_steps + 1] times from 1 to 0, shifted (`shift_time`)."""
  if num_steps < 1:
    raise ValueError(f"sampler steps must be >= 1, got {num_steps}")
  return shift_time(jnp.linspace(1.0, 0.0, num_steps + 1), shift)


def euler_sample(
  velocity_fn: VelocityFn, noise: jax.Array, num_steps: int, shift: float = 1.0
) -> jax.Array:
  """First-order ODE solve from noise (t = 1) to data (t = 0); x_{k+1} = x_k + dt v."""
  ts = time_grid(num_steps, shift)
  b = noise.shape[0]

  def step(x, i):
    t, t_next = ts[i], ts[i + 1]
    v = velocity_fn(x, jnp.full((b,), t))
    return (x + (t_next - t) * v.astype(x.dtype)), None

  return jax.lax.scan(step, noise, jnp.arange(num_steps))[0]


def heun_sample(
  velocity_fn: VelocityFn, noise: jax.Array, num_steps: int, shift: float = 1.0
) -> jax.Array:
  """Second-order (Heun / trapezoidal) solve: two model calls per step."""
  ts = time_grid(num_steps, shift)
  b = noise.shape[0]

  def step(x, i):
    t, t_next = ts[i], ts[i + 1]
    dt = t_next - t
    v1 = velocity_fn(x, jnp.full((b,), t)).astype(x.dtype)
    v2 = velocity_fn(x + dt * v1, jnp.full((b,), t_next)).astype(x.dtype)
    return x + dt * 0.5 * (v1 + v2), None

  return jax.lax.scan(step, noise, jnp.arange(num_steps))[0]


SAMPLERS = {"euler": euler_sample, "heun": heun_sample}


def combine_guidance(
  v_none: jax.Array, v_visual: jax.Array, v_full: jax.Array, text_scale: float, visual_scale: float
) -> jax.Array:
  """Classifier-free guidance with separate scales (visual first, then text on top):

    v = v(0, 0) + visual_scale (v(0, z) - v(0, 0)) + text_scale (v(c, z) - v(0, z))

  v_none: no text, no visual; v_visual: visual only; v_full: text and visual. Scales of
  1 give v_full; equal scales s give ordinary CFG v_none + s (v_full - v_none).
  """
  return v_none + visual_scale * (v_visual - v_none) + text_scale * (v_full - v_visual)


def guided_velocity(
  fn: Callable[..., jax.Array],
  text: jax.Array,
  visual: jax.Array | None,
  null_text: jax.Array,
  null_visual: jax.Array | None,
  text_scale: float,
  visual_scale: float,
) -> VelocityFn:
  """velocity_fn(x, t) for a conditional model fn(x, t, text, visual) under CFG.

  The condition sets run as one batch (3 B rows with visual tokens, 2 B without, where
  only text_scale applies). null_text / null_visual: the unconditional inputs, e.g. zeros
  (what `drop_conditions` trains with), shaped like text / visual.
  """
  if visual is None:

    def velocity_text(x, t):
      v = fn(
        jnp.concatenate([x, x]), jnp.concatenate([t, t]), jnp.concatenate([null_text, text]), None
      )
      v_none, v_text = jnp.split(v, 2)
      return v_none + text_scale * (v_text - v_none)

    return velocity_text

  assert null_visual is not None  # Given with visual tokens (see above).

  def velocity(x, t):
    v = fn(
      jnp.concatenate([x, x, x]),
      jnp.concatenate([t, t, t]),
      jnp.concatenate([null_text, null_text, text]),
      jnp.concatenate([null_visual, visual, visual]),
    )
    v_none, v_vis, v_full = jnp.split(v, 3)
    return combine_guidance(v_none, v_vis, v_full, text_scale, visual_scale)

  return velocity


def drop_conditions(
  key: jax.Array, text: jax.Array, visual: jax.Array | None, p_text: float, p_visual: float
) -> tuple[jax.Array, jax.Array | None, jax.Array, jax.Array]:
  """Training-time condition dropout: per example, zero the text tokens with probability
  p_text and (independently) the visual tokens with p_visual; zeros are the null
  conditions that guidance later uses.

  Returns (text, visual, text_kept [B] bool, visual_kept [B] bool).
  """
  for name, p in (("p_text", p_text), ("p_visual", p_visual)):
    if not 0.0 <= p <= 1.0:
      raise ValueError(f"condition dropout {name} must be in [0, 1], got {p}")
  k_text, k_vis = jax.random.split(key)
  b = text.shape[0]
  keep_text = jax.random.uniform(k_text, (b,)) >= p_text
  keep_vis = jax.random.uniform(k_vis, (b,)) >= p_visual
  text = jnp.where(keep_text[:, None, None], text, jnp.zeros_like(text))
  if visual is not None:
    visual = jnp.where(keep_vis[:, None, None], visual, jnp.zeros_like(visual))
  return text, visual, keep_text, keep_vis


# --- config sections ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FlowConfig:
  """`config.train.flow` of a DiT config: training times (`sample_time`) and the
  condition dropout for classifier-free guidance (`drop_conditions`)."""

  time_sampling: str  # A TIME_SAMPLING name.
  logit_mean: float
  logit_std: float
  shift: float
  drop_text: float
  drop_visual: float

  def validate(self) -> None:
    if self.time_sampling not in TIME_SAMPLING:
      raise ValueError(
        f"time_sampling: expected one of {TIME_SAMPLING}, got {self.time_sampling!r}"
      )
    if self.logit_std <= 0 or self.shift <= 0:
      raise ValueError(f"logit_std and shift must be > 0, got {self.logit_std}, {self.shift}")
    for name in ("drop_text", "drop_visual"):
      if not 0.0 <= getattr(self, name) <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
  """`config.sample` of a DiT config: the solver (a SAMPLERS name) over `num_steps` of
  the time grid shifted by `shift`, with guidance scales (`combine_guidance`)."""

  solver: str
  num_steps: int
  shift: float
  text_scale: float
  visual_scale: float

  def validate(self) -> None:
    if self.solver not in SAMPLERS:
      raise ValueError(f"solver: expected one of {sorted(SAMPLERS)}, got {self.solver!r}")
    if self.num_steps < 1 or self.shift <= 0:
      raise ValueError(f"num_steps must be >= 1 and shift > 0, got {self.num_steps}, {self.shift}")
