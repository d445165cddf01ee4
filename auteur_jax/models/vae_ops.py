"""Convolution and normalisation primitives of the causal video VAE (channels last).

XLA's CPU `conv_general_dilated` is slow for 3-D kernels at small channel counts, while
its 2-D convolution (an im2col packed on the fly into a GEMM) runs near the matmul rate.
So a kt x kh x kw causal convolution is a 2-D convolution per frame whose contraction
also spans the kt temporal taps (CONV_IMPLS):

  fold_in   the kt shifted frame slices stacked on the input channels; one 2-D conv
            with K = kt*kh*kw*C_in (exact FLOPs).
  fold_out  the kt taps stacked on the output channels; one 2-D conv over all
            T + kt - 1 frames, then a shifted sum over time (for narrow outputs).
  taps      kt 2-D convs on shifted frame slices, summed.
  im2col    explicit patch copy [.., kt*kh*kw*C_in] and one jnp.dot.
  tap_dots  kt*kh*kw jnp.dots with K = C_in on shifted views, summed.
  xla3d     lax.conv_general_dilated in 3-D (the reference).
  auto      per shape, see auto_conv_impl.

Pointwise and temporal-only kernels are plain matmuls. `benchmarks/vae_throughput.py`
times every formulation on each conv shape of a model (explicit patch copies lose to
the 2-D conv's on-the-fly packing on CPU: they are memory-bound).

Shapes: video activations [B, T, H, W, C]; 3-D kernels [kt, kh, kw, C_in, C_out];
2-D kernels [kh, kw, C_in, C_out].
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

import jax
import jax.numpy as jnp
from jax import lax

CONV_IMPLS = ("auto", "fold_in", "fold_out", "taps", "im2col", "tap_dots", "xla3d")
# What "auto" picks, from benchmarks/vae_throughput.py's per-shape table (2 CPU cores):
# narrow inputs / outputs (RGB) gain most from the wide GEMM of fold_out (2-4x); wide
# convs on long chunks run taps and fold_in within a few % of each other, taps slightly
# ahead (no kt-times input copy to stream through memory); short chunks favour fold_in
# (everything stays in cache, and the contraction is the widest).
_NARROW = 16
_LONG_CHUNK = 8


def auto_conv_impl(frames: int, cin: int, cout: int) -> str:
  """The formulation "auto" uses for a 3-D conv of a `frames`-frame chunk, cin -> cout."""
  if min(cin, cout) < _NARROW:
    return "fold_out"
  return "taps" if frames >= _LONG_CHUNK else "fold_in"


def conv2d(x: jax.Array, w: jax.Array, stride: int = 1, padding: str | tuple = "SAME") -> jax.Array:
  """x [N, H, W, Ci], w [kh, kw, Ci, Co] -> [N, H', W', Co]."""
  return lax.conv_general_dilated(
    x, w, (stride, stride), padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
  )


def _frames2d(x: jax.Array, w: jax.Array) -> jax.Array:
  """Per-frame 'SAME' 2-D conv: x [B, T, H, W, Ci], w [kh, kw, Ci, Co] -> [B, T, H, W, Co]."""
  b, t = x.shape[:2]
  y = conv2d(x.reshape(b * t, *x.shape[2:]), w)
  return y.reshape(b, t, *y.shape[1:])


def _sum(terms: Iterable[jax.Array]) -> jax.Array:
  """sum() of one or more arrays (its start, 0, adds nothing to the first)."""
  return cast(jax.Array, sum(terms))


def causal_conv3d(
  x: jax.Array, prev: jax.Array | None, w: jax.Array, impl: str = "auto"
) -> tuple[jax.Array, jax.Array | None]:
  """Causal in time, 'SAME' in space, stride 1.

  Args:
    x: [B, T, H, W, Ci], the chunk.
    prev: [B, kt - 1, H, W, Ci], the stream's previous kt - 1 input frames (zeros at its
      start), or None when kt == 1.
    w: [kt, kh, kw, Ci, Co] (kh, kw odd).
    impl: one of CONV_IMPLS.
  Returns:
    (y [B, T, H, W, Co] without bias, the last kt - 1 frames of prev + x, or None).
  """
  kt, kh, kw = w.shape[:3]
  b, t = x.shape[:2]
  if kt > 1:
    assert prev is not None  # Given whenever kt > 1 (see Args).
    xs = jnp.concatenate([prev.astype(x.dtype), x], axis=1)
  else:
    xs = x
  state = xs[:, t:] if kt > 1 else None
  if kh == kw == 1:  # Temporal-only or pointwise: matmuls over the taps.
    y = _sum(jnp.einsum("bthwc,cd->bthwd", xs[:, a : a + t], w[a, 0, 0]) for a in range(kt))
    return y, state
  if impl == "auto":
    impl = auto_conv_impl(t, w.shape[3], w.shape[4])
  if impl == "xla3d":
    pad = ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2))
    y = lax.conv_general_dilated(
      xs, w, (1, 1, 1), pad, dimension_numbers=("NTHWC", "THWIO", "NTHWC")
    )
  elif impl in ("im2col", "tap_dots"):  # Pure matmuls over explicit spatial shifts.
    ph, pw = kh // 2, kw // 2
    xp = jnp.pad(xs, ((0, 0), (0, 0), (ph, ph), (pw, pw), (0, 0)))
    h, wd = x.shape[2:4]
    shifts = [(a, i, j) for a in range(kt) for i in range(kh) for j in range(kw)]
    tap = lambda a, i, j: xp[:, a : a + t, i : i + h, j : j + wd]
    if impl == "im2col":  # One GEMM, K = kt*kh*kw*Ci, on a patch copy of that size.
      patches = jnp.concatenate([tap(*s) for s in shifts], axis=-1)
      y = patches @ w.reshape(-1, w.shape[-1])
    else:  # kt*kh*kw GEMMs with K = Ci, accumulated.
      y = _sum(jnp.einsum("bthwc,cd->bthwd", tap(*s), w[s]) for s in shifts)
  elif impl == "taps":
    y = _sum(_frames2d(xs[:, a : a + t], w[a]) for a in range(kt))
  elif impl == "fold_in":  # Taps stacked on input channels: one conv, K = kt*kh*kw*Ci.
    u = jnp.concatenate([xs[:, a : a + t] for a in range(kt)], axis=-1)
    y = _frames2d(u, jnp.moveaxis(w, 0, 2).reshape(kh, kw, kt * w.shape[3], w.shape[4]))
  elif impl == "fold_out":
    co = w.shape[-1]
    wf = jnp.moveaxis(w, 0, 3).reshape(kh, kw, w.shape[3], kt * co)  # [kh, kw, Ci, kt*Co]
    yf = _frames2d(xs, wf).reshape(b, t + kt - 1, *x.shape[2:4], kt, co)
    y = _sum(yf[:, a : a + t, :, :, a] for a in range(kt))
  else:
    raise ValueError(f"conv impl {impl!r} is unknown; expected one of {CONV_IMPLS}")
  return y, state


def temporal_conv(x: jax.Array, w: jax.Array, stride: int = 1) -> jax.Array:
  """Valid conv over time only: x [B, T, H, W, Ci], w [kt, Ci, Co] -> [B, T', H, W, Co]."""
  kt = w.shape[0]
  n = (x.shape[1] - kt) // stride + 1
  if n < 1:
    raise ValueError(f"temporal conv of {kt} taps needs >= {kt} frames, got {x.shape[1]}")
  span = stride * (n - 1) + 1  # Input frames between a tap's first and last use.
  return _sum(jnp.einsum("bthwc,cd->bthwd", x[:, a : a + span : stride], w[a]) for a in range(kt))


# Nearest-neighbour 2x upsampling followed by a 3x3 'SAME' conv equals, per output phase
# (p, q), a 3x3 conv of the low-resolution input whose taps sum the high-resolution ones
# that land on the same input pixel. _PHASE[p][k] is the low-res row tap (0, 1, 2 for
# -1, 0, +1) that high-res tap k reads at phase p.
_PHASE = ((0, 1, 1), (1, 1, 2))


def upsample_conv_weights(w: jax.Array) -> jax.Array:
  """[3, 3, Ci, Co] -> [3, 3, Ci, 4 * Co] (phases (p, q) major, then Co)."""
  m = jnp.zeros((2, 3, 3), w.dtype)  # m[p, k, r] = 1 if high-res tap k reads low-res r.
  for p in range(2):
    for k in range(3):
      m = m.at[p, k, _PHASE[p][k]].set(1)
  ws = jnp.einsum("pkr,qls,klio->rsipqo", m, m, w)
  return ws.reshape(3, 3, w.shape[2], 4 * w.shape[3])


def upsample2x_conv(x: jax.Array, w: jax.Array, impl: str = "subpixel") -> jax.Array:
  """Nearest 2x upsampling then a 3x3 'SAME' conv: [N, H, W, Ci] -> [N, 2H, 2W, Co].

  impl "subpixel" convolves the low-resolution input with per-phase kernels and
  interleaves (no upsampled copy of the input); "direct" upsamples first.
  """
  n, h, wd, _ = x.shape
  co = w.shape[-1]
  if impl == "direct":
    up = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
    return conv2d(up, w)
  y = conv2d(x, upsample_conv_weights(w)).reshape(n, h, wd, 2, 2, co)
  return y.transpose(0, 1, 3, 2, 4, 5).reshape(n, 2 * h, 2 * wd, co)


def downsample2x_conv(x: jax.Array, w: jax.Array) -> jax.Array:
  """Zero-pad bottom/right by 1, 3x3 conv with stride 2: [N, H, W, Ci] -> [N, H/2, W/2, Co]."""
  return conv2d(x, w, stride=2, padding=((0, 1), (0, 1)))


def channel_rms_norm(x: jax.Array, scale: jax.Array) -> jax.Array:
  """Wan's norm: x / max(||x||_2, 1e-12) * sqrt(C) * scale over the channel axis (last).

  Computed in float32 and cast back to x's dtype.
  """
  h = x.astype(jnp.float32)
  ss = jnp.sum(h * h, axis=-1, keepdims=True)
  h = h * lax.rsqrt(jnp.maximum(ss, 1e-24)) * (x.shape[-1] ** 0.5)
  return (h * scale.astype(jnp.float32)).astype(x.dtype)
