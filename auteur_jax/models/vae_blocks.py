"""Building blocks of the causal video VAE: convs with stream state, residual blocks,
per-frame attention, spatial / temporal resamplers. Channels last, [B, T, H, W, C].

A `Stream` threads per-layer temporal state through one chunk: modules `take` the state
their previous chunk left (None at the head of a stream) in call order and `put` the
state for the next chunk. The state list is a pytree, so a jitted chunk function takes
and returns it.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from auteur_jax.models import vae_ops as ops
from auteur_jax.models.layers import param


def _fan_in(n_in: int):
  """Normal init with variance 1 / prod(shape[:n_in]) (our kernels are [in..., out])."""

  def init(key, shape, dtype):
    # Drawn flat: the same values (threefry counts the flat index), 5x faster to compile.
    z = jax.random.normal(key, (math.prod(shape),), dtype).reshape(shape)
    return z / math.sqrt(math.prod(shape[:n_in]))

  return init


_zeros = nnx.initializers.zeros
_ones = nnx.initializers.ones


class Stream:
  """Temporal state of one chunk: the previous chunk's states in, this chunk's out."""

  def __init__(self, prev: list | None):
    self.prev = prev
    self.new: list = []
    self._i = 0

  @property
  def head(self) -> bool:
    """True for the first chunk of a stream (no earlier frames)."""
    return self.prev is None

  def take(self):
    """The next state of the previous chunk (None at the head)."""
    if self.prev is None:
      return None
    if self._i >= len(self.prev):
      raise ValueError(
        f"stream state holds {len(self.prev)} entries; the model needs more "
        "(state from a different model?)"
      )
    self._i += 1
    return self.prev[self._i - 1]

  def put(self, state) -> None:
    self.new.append(state)

  def finish(self) -> list:
    if self.prev is not None and self._i != len(self.prev):
      raise ValueError(
        f"stream state holds {len(self.prev)} entries, the model used "
        f"{self._i} (state from a different model?)"
      )
    return self.new


class CausalConv3d(nnx.Module):
  """k x k x k conv, causal in time (kt - 1 frames of state), 'SAME' in space."""

  def __init__(
    self,
    cin: int,
    cout: int,
    k: int,
    impl: str,
    param_dtype,
    rngs: nnx.Rngs,
    out_axis: str | None = "conv_out",
  ):
    self.impl = impl
    shape = (k, k, k, cin, cout)
    self.kernel = param(
      rngs, _fan_in(4), shape, (None, None, None, "conv_in", out_axis), param_dtype
    )
    self.bias = param(rngs, _zeros, (cout,), (out_axis,), param_dtype)

  def __call__(self, x: jax.Array, s: Stream) -> jax.Array:
    """x [B, T, H, W, C_in] -> [B, T, H, W, C_out]."""
    kt = self.kernel.shape[0]
    prev = s.take()
    if prev is None:
      prev = jnp.zeros((x.shape[0], kt - 1, *x.shape[2:]), x.dtype)
    y, state = ops.causal_conv3d(x, prev, self.kernel[...].astype(x.dtype), self.impl)
    s.put(state)
    return y + self.bias[...].astype(x.dtype)


class Pointwise(nnx.Module):
  """1 x 1 x 1 conv: x @ kernel + bias over the channel axis."""

  def __init__(self, cin: int, cout: int, param_dtype, rngs: nnx.Rngs):
    self.kernel = param(rngs, _fan_in(1), (cin, cout), ("conv_in", "conv_out"), param_dtype)
    self.bias = param(rngs, _zeros, (cout,), ("conv_out",), param_dtype)

  def __call__(self, x: jax.Array) -> jax.Array:
    return x @ self.kernel[...].astype(x.dtype) + self.bias[...].astype(x.dtype)


class WanRMSNorm(nnx.Module):
  """ops.channel_rms_norm with a learned per-channel scale."""

  def __init__(self, dim: int, param_dtype, rngs: nnx.Rngs):
    self.scale = param(rngs, _ones, (dim,), ("norm",), param_dtype)

  def __call__(self, x: jax.Array) -> jax.Array:
    return ops.channel_rms_norm(x, self.scale[...])


class ResBlock(nnx.Module):
  """x + conv2(silu(norm2(conv1(silu(norm1(x)))))); a pointwise shortcut if C changes."""

  def __init__(self, cin: int, cout: int, impl: str, param_dtype, rngs: nnx.Rngs):
    self.norm1 = WanRMSNorm(cin, param_dtype, rngs)
    self.conv1 = CausalConv3d(cin, cout, 3, impl, param_dtype, rngs)
    self.norm2 = WanRMSNorm(cout, param_dtype, rngs)
    self.conv2 = CausalConv3d(cout, cout, 3, impl, param_dtype, rngs)
    self.shortcut = Pointwise(cin, cout, param_dtype, rngs) if cin != cout else None

  def __call__(self, x: jax.Array, s: Stream) -> jax.Array:
    h = self.shortcut(x) if self.shortcut is not None else x
    x = self.conv1(jax.nn.silu(self.norm1(x)), s)
    x = self.conv2(jax.nn.silu(self.norm2(x)), s)
    return x + h


class FrameAttention(nnx.Module):
  """Single-head self-attention over the H x W positions of each frame, residual."""

  def __init__(self, dim: int, param_dtype, rngs: nnx.Rngs):
    self.norm = WanRMSNorm(dim, param_dtype, rngs)
    self.qkv = Pointwise(dim, 3 * dim, param_dtype, rngs)
    self.proj = Pointwise(dim, dim, param_dtype, rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    b, t, h, w, c = x.shape
    q, k, v = jnp.split(self.qkv(self.norm(x)).reshape(b * t, h * w, 3 * c), 3, axis=-1)
    scores = jnp.einsum("nqc,nkc->nqk", q, k, preferred_element_type=jnp.float32)
    probs = jax.nn.softmax(scores / math.sqrt(c), axis=-1).astype(v.dtype)
    out = jnp.einsum("nqk,nkc->nqc", probs, v).reshape(b, t, h, w, c)
    return x + self.proj(out)


class MidBlock(nnx.Module):
  """ResBlock, FrameAttention, ResBlock at the lowest resolution."""

  def __init__(self, dim: int, impl: str, param_dtype, rngs: nnx.Rngs):
    self.res0 = ResBlock(dim, dim, impl, param_dtype, rngs)
    self.attn = FrameAttention(dim, param_dtype, rngs)
    self.res1 = ResBlock(dim, dim, impl, param_dtype, rngs)

  def __call__(self, x: jax.Array, s: Stream) -> jax.Array:
    return self.res1(self.attn(self.res0(x, s)), s)


class Resample(nnx.Module):
  """Spatial 2x resampling per frame, with a causal temporal 2x for the *3d modes.

  down2d: zero-pad bottom/right, 3x3 stride-2 conv. down3d: then a 3-tap stride-2
  temporal conv that keeps the stream's first frame alone (state: the last input frame).
  up3d: a causal 3-tap temporal conv to 2C channels, read as two frames per input frame
  (the stream's first frame stays one frame; state: the last 2 inputs after it), then
  up2d: nearest 2x upsampling and a 3x3 conv to `up_out` channels.
  """

  MODES = ("down2d", "down3d", "up2d", "up3d")

  def __init__(self, dim: int, mode: str, param_dtype, rngs: nnx.Rngs, up_out: int | None = None):
    if mode not in self.MODES:
      raise ValueError(f"resample mode {mode!r}: expected one of {self.MODES}")
    self.mode = mode
    cout = dim if mode.startswith("down") else (up_out or dim // 2)
    axes2 = (None, None, "conv_in", "conv_out")
    self.conv_kernel = param(rngs, _fan_in(3), (3, 3, dim, cout), axes2, param_dtype)
    self.conv_bias = param(rngs, _zeros, (cout,), ("conv_out",), param_dtype)
    if mode.endswith("3d"):
      tout = dim if mode == "down3d" else 2 * dim
      self.time_kernel = param(
        rngs, _fan_in(2), (3, dim, tout), (None, "conv_in", "conv_out"), param_dtype
      )
      self.time_bias = param(rngs, _zeros, (tout,), ("conv_out",), param_dtype)

  def _time(self, x: jax.Array, stride: int) -> jax.Array:
    w = self.time_kernel[...].astype(x.dtype)
    return ops.temporal_conv(x, w, stride) + self.time_bias[...].astype(x.dtype)

  def __call__(self, x: jax.Array, s: Stream) -> jax.Array:
    """x [B, T, H, W, C] -> resampled [B, T', H', W', C']."""
    if self.mode == "up3d":
      x = self._up_time(x, s)
    b, t = x.shape[:2]
    frames = x.reshape(b * t, *x.shape[2:])
    w = self.conv_kernel[...].astype(x.dtype)
    if self.mode.startswith("up"):
      y = ops.upsample2x_conv(frames, w)
    else:
      y = ops.downsample2x_conv(frames, w)
    y = (y + self.conv_bias[...].astype(x.dtype)).reshape(b, t, *y.shape[1:])
    return self._down_time(y, s) if self.mode == "down3d" else y

  def _down_time(self, x: jax.Array, s: Stream) -> jax.Array:
    prev = s.take()
    s.put(x[:, -1:])
    if prev is None:  # Head: frame 0 alone, then windows (0,1,2), (2,3,4), ...
      if x.shape[1] % 2 == 0:
        raise ValueError(
          f"down3d: the head chunk must have an odd number of frames here, got {x.shape[1]}"
        )
      if x.shape[1] == 1:
        return x
      return jnp.concatenate([x[:, :1], self._time(x, 2)], axis=1)
    if x.shape[1] % 2:
      raise ValueError(
        f"down3d: a continuation chunk needs an even number of frames here, got {x.shape[1]}"
      )
    return self._time(jnp.concatenate([prev, x], axis=1), 2)

  def _up_time(self, x: jax.Array, s: Stream) -> jax.Array:
    prev = s.take()
    first, rest = (x[:, :1], x[:, 1:]) if prev is None else (None, x)
    if prev is None:
      prev = jnp.zeros((x.shape[0], 2, *x.shape[2:]), x.dtype)
    xs = jnp.concatenate([prev.astype(x.dtype), rest], axis=1)
    s.put(xs[:, -2:])
    if rest.shape[1] == 0:
      assert first is not None  # Only a head chunk of one frame leaves no rest.
      return first
    y = self._time(xs, 1)  # [B, n, H, W, 2C]: channel halves are frames 2i, 2i + 1.
    b, n, h, w, c2 = y.shape
    y = y.reshape(b, n, h, w, 2, c2 // 2).transpose(0, 1, 4, 2, 3, 5)
    y = y.reshape(b, 2 * n, h, w, c2 // 2)
    return y if first is None else jnp.concatenate([first, y], axis=1)
