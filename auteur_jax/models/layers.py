"""Transformer building blocks: RMSNorm, 1-D rotary embeddings, GQA attention, SwiGLU.

Every parameter is an `nnx.Param` created through `nnx.with_partitioning` with logical
axis names (`embed`, `heads`, `kv_heads`, `head_dim`, `mlp`, `norm`); `parallel/rules.py`
maps them to mesh axes. Shapes follow the Llama/Qwen2 family so that HF weights map
onto them by transposes and reshapes only (see `convert/hf_llm.py`).

Attention takes an explicit boolean mask (True = may attend) so that callers decide
causality, padding and the director's hidden query slots. With a `KVCache` the new keys
and values are written into a fixed-size buffer at a (traced) slot index and the queries
attend over the whole buffer: one compiled shape for every decoding position.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from auteur_jax.kernels import decode_attention, train_attention
from auteur_jax.parallel.rules import constrain

Dtype = jnp.dtype | str


def param(
  rngs: nnx.Rngs, init, shape: Sequence[int], axes: Sequence[str | None], dtype: Dtype = jnp.float32
) -> nnx.Param:
  """A parameter of `shape` initialised by `init`, carrying logical `axes` (one per dim)."""
  if len(axes) != len(shape):
    raise ValueError(
      f"param of shape {tuple(shape)} needs {len(shape)} axis names, got {tuple(axes)}"
    )
  return nnx.Param(
    nnx.with_partitioning(init, tuple(axes))(rngs.params(), tuple(shape), jnp.dtype(dtype))
  )


class RMSNorm(nnx.Module):
  """y = x / sqrt(mean(x^2) + eps) * scale, computed in float32, cast back to x's dtype."""

  def __init__(
    self, dim: int, eps: float = 1e-6, *, param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs
  ):
    self.eps = eps
    self.scale = param(rngs, nnx.initializers.ones, (dim,), ("norm",), param_dtype)

  def __call__(self, x: jax.Array) -> jax.Array:
    """x [..., dim] -> same shape and dtype."""
    h = x.astype(jnp.float32)
    h = h * jax.lax.rsqrt(jnp.mean(h * h, axis=-1, keepdims=True) + self.eps)
    # Llama casts back before the scale; the scale multiplies in the compute dtype.
    return h.astype(x.dtype) * self.scale[...].astype(x.dtype)


# ---------------------------------------------------------------------------- RoPE 1-D


@dataclasses.dataclass(frozen=True)
class RopeScaling:
  """Llama-3 frequency scaling: long wavelengths slowed by `factor`, short ones kept.

  Wavelengths (2 pi / frequency, in tokens) above original_max_position / low_freq_factor
  are divided by `factor`; below original_max_position / high_freq_factor unchanged;
  in between interpolated linearly in original_max_position / wavelength.
  """

  factor: float
  low_freq_factor: float
  high_freq_factor: float
  original_max_position: int


def rope_frequencies(head_dim: int, theta: float, scaling: RopeScaling | None = None) -> np.ndarray:
  """Rotation frequencies (radians per position) float32 [head_dim // 2]."""
  if head_dim % 2:
    raise ValueError(f"rotary embeddings need an even head_dim, got {head_dim}")
  # float32 arithmetic, as the HF reference computes it (bit-closer parity).
  exponent = np.arange(0, head_dim, 2).astype(np.float32) / np.float32(head_dim)
  freq = np.float32(1.0) / np.float32(theta) ** exponent
  if scaling is not None:
    s = scaling
    if s.high_freq_factor <= s.low_freq_factor:
      raise ValueError(
        f"rope scaling: high_freq_factor ({s.high_freq_factor}) must exceed "
        f"low_freq_factor ({s.low_freq_factor})"
      )
    wavelen = np.float32(2 * math.pi) / freq
    ratio = np.float32(s.original_max_position) / wavelen
    smooth = np.clip(
      (ratio - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor), 0.0, 1.0
    ).astype(np.float32)
    # smooth = 0: long wavelength (slowed down); 1: short wavelength (kept).
    freq = (1 - smooth) * freq / np.float32(s.factor) + smooth * freq
  return freq.astype(np.float32)


def rope_angles(positions: jax.Array, freq: np.ndarray) -> tuple[jax.Array, jax.Array]:
  """positions int [B, L] -> (cos, sin) float32 [B, L, head_dim // 2]."""
  angles = positions.astype(jnp.float32)[..., None] * jnp.asarray(freq)
  return jnp.cos(angles), jnp.sin(angles)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
  """Rotates x [B, L, H, Dh] by (cos, sin) [B, L, Dh // 2]; halves layout (Llama/HF).

  Pairs are (x[..., i], x[..., i + Dh/2]), as in HF's rotate_half convention.
  """
  half = x.shape[-1] // 2
  c, s = cos[:, :, None, :], sin[:, :, None, :]
  x1 = x[..., :half].astype(jnp.float32)
  x2 = x[..., half:].astype(jnp.float32)
  out = jnp.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1)
  return out.astype(x.dtype)


# ---------------------------------------------------------------------------- attention


class KVCache(NamedTuple):
  """Keys and values [B, kv_heads, head_dim, T] of one layer (stacked layers add a
  leading layer axis).

  Both are stored transposed, slots last, so that both attention matmuls of a decode
  step take the big cache operand as a row-major right-hand side (q @ K^T, p @ V^T):
  XLA's CPU dot ran 2.3x slower with values as [T, head_dim], and the scores 1.6x
  slower with keys as [T, head_dim] (8 layers, batch 8, 2 kv heads, T = 1,280).

  A bfloat16 cache is held as its bits, dtype uint16 (`stored_dtype`): XLA:CPU runs a
  bfloat16 dynamic_update_slice in float32, a converted copy of the whole buffer per
  decode step; on uint16 it writes the new slots in place. `values` reads them back.
  """

  k: jax.Array
  v: jax.Array

  @classmethod
  def zeros(
    cls,
    batch: int,
    kv_heads: int,
    length: int,
    head_dim: int,
    dtype: Dtype = jnp.float32,
    layers: int | None = None,
  ) -> KVCache:
    lead = (batch, kv_heads) if layers is None else (layers, batch, kv_heads)
    dtype = stored_dtype(dtype)
    return cls(
      jnp.zeros((*lead, head_dim, length), dtype), jnp.zeros((*lead, head_dim, length), dtype)
    )


def stored_dtype(dtype: Dtype) -> jnp.dtype:
  """The dtype a cache of `dtype` is held in (uint16 bits for bfloat16)."""
  dtype = jnp.dtype(dtype)
  return jnp.dtype(jnp.uint16) if dtype == jnp.bfloat16 else dtype


def values(x: jax.Array) -> jax.Array:
  """A cache buffer's values: bfloat16 from its uint16 bits, else itself."""
  return jax.lax.bitcast_convert_type(x, jnp.bfloat16) if x.dtype == jnp.uint16 else x


def _masked_softmax(scores: jax.Array, mask: jax.Array) -> jax.Array:
  # Fully masked rows (padding queries) get a uniform distribution, never NaN.
  scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
  return jax.nn.softmax(scores, axis=-1)


def attend(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array) -> jax.Array:
  """Grouped-query attention with einsums (faster than dot_product_attention on CPU).

  Args:
    q: [B, L, H, Dh] (already rotated); H a multiple of the kv heads.
    k, v: [B, KVH, Dh, T] (the KVCache layout).
    mask: bool [B, L, T], True where query l may attend key t.
  Returns:
    [B, L, H, Dh] in q's dtype.
  """
  b, l, h, d = q.shape
  kvh = k.shape[1]
  q = q.reshape(b, l, kvh, h // kvh, d) * jnp.asarray(1.0 / math.sqrt(d), q.dtype)
  # Scores as [B, KVH, L, G, T]: the dot's natural (batch, lhs, rhs) order. Asked for as
  # [B, KVH, G, L, T], XLA:CPU swaps the operands and contracts the cache along its
  # strided axis (8x slower for one decode step's scores at T = 1,280).
  scores = jnp.einsum("blkgd,bkdt->bklgt", q, k, preferred_element_type=jnp.float32)
  probs = _masked_softmax(scores, mask[:, None, :, None, :]).astype(v.dtype)
  out = jnp.einsum("bklgt,bkdt->blkgd", probs, v)
  return out.reshape(b, l, h, d)


class Attention(nnx.Module):
  """Multi-head attention with grouped kv heads, optional qkv bias (Qwen2) and RoPE.

  Parameters: q [width, heads, head_dim], k / v [width, kv_heads, head_dim], o [heads,
  head_dim, width]; with qkv_bias also q_bias [heads, head_dim], k_bias / v_bias
  [kv_heads, head_dim].
  """

  def __init__(
    self,
    width: int,
    num_heads: int,
    num_kv_heads: int,
    head_dim: int,
    *,
    qkv_bias: bool = False,
    init_std: float = 0.02,
    dtype: Dtype = jnp.float32,
    param_dtype: Dtype = jnp.float32,
    rngs: nnx.Rngs,
  ):
    if num_heads % num_kv_heads:
      raise ValueError(
        f"num_heads ({num_heads}) must be a multiple of num_kv_heads ({num_kv_heads})"
      )
    self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, head_dim
    self.dtype = jnp.dtype(dtype)
    init = nnx.initializers.normal(init_std)
    self.q = param(
      rngs, init, (width, num_heads, head_dim), ("embed", "heads", "head_dim"), param_dtype
    )
    self.k = param(
      rngs, init, (width, num_kv_heads, head_dim), ("embed", "kv_heads", "head_dim"), param_dtype
    )
    self.v = param(
      rngs, init, (width, num_kv_heads, head_dim), ("embed", "kv_heads", "head_dim"), param_dtype
    )
    self.o = param(
      rngs, init, (num_heads, head_dim, width), ("heads", "head_dim", "embed"), param_dtype
    )
    self.qkv_bias = qkv_bias
    if qkv_bias:
      zeros = nnx.initializers.zeros
      self.q_bias = param(rngs, zeros, (num_heads, head_dim), ("heads", "head_dim"), param_dtype)
      self.k_bias = param(
        rngs, zeros, (num_kv_heads, head_dim), ("kv_heads", "head_dim"), param_dtype
      )
      self.v_bias = param(
        rngs, zeros, (num_kv_heads, head_dim), ("kv_heads", "head_dim"), param_dtype
      )

  def _project(self, x: jax.Array, w: nnx.Param, bias: str) -> jax.Array:
    y = jnp.einsum("blw,whd->blhd", x, w[...].astype(self.dtype))
    if self.qkv_bias:
      y = y + getattr(self, bias)[...].astype(self.dtype)
    return y

  def project(
    self, x: jax.Array, rope: tuple[jax.Array, jax.Array]
  ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """x [B, L, width] -> q [B, L, H, Dh], k and v [B, KVH, Dh, L] (q, k rotated)."""
    x = x.astype(self.dtype)
    q = apply_rope(self._project(x, self.q, "q_bias"), *rope)
    k = apply_rope(self._project(x, self.k, "k_bias"), *rope)
    v = self._project(x, self.v, "v_bias")
    q = constrain(q, ("batch", "length", "heads", "head_dim"))
    # The cache layout: (batch, head) leading for the batched dots, slots last.
    return q, jnp.transpose(k, (0, 2, 3, 1)), jnp.transpose(v, (0, 2, 3, 1))

  def combine(
    self, q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array, cached: bool = False
  ) -> jax.Array:
    """Attention of q [B, L, H, Dh] over k, v [B, KVH, Dh, T] -> [B, L, width].

    cached: k, v are a KV cache being decoded over (never differentiated): a few query
    rows go to the CPU decode kernel where it applies (kernels/decode_attention.py).
    Otherwise (training, prefill) the CPU kernel with its gradient serves where it applies
    (kernels/train_attention.py).
    """
    k = constrain(k, ("batch", "kv_heads", "head_dim", "length"))
    v = constrain(v, ("batch", "kv_heads", "head_dim", "length"))
    if cached and decode_attention.applies(q, k):
      out = decode_attention.decode_attention(q, k, v, mask)
    elif not cached and train_attention.applies(q, k, v):
      out = train_attention.attend(q, k, v, mask)
    else:
      out = attend(q, values(k).astype(self.dtype), values(v).astype(self.dtype), mask)
    # One flat contraction: with two contracting dims (h, d) XLA's CPU dot reorders
    # them by transposing the weight, a full copy of it on every decode step.
    b, l, h, d = out.shape
    w = self.o[...].astype(self.dtype).reshape(h * d, -1)
    return out.reshape(b, l, h * d) @ w

  def __call__(
    self,
    x: jax.Array,
    rope: tuple[jax.Array, jax.Array],
    mask: jax.Array,
    cache: KVCache | None = None,
    cache_index: jax.Array | int = 0,
  ) -> tuple[jax.Array, KVCache | None]:
    """Self-attention of x over itself, or over a cache after writing x's keys into it.

    Args:
      x: [B, L, width] in the compute dtype.
      rope: (cos, sin) [B, L, head_dim // 2] of x's positions (`rope_angles`).
      mask: bool [B, L, L] without a cache; [B, L, T] over the cache's slots with one.
      cache: this layer's KVCache or None.
      cache_index: first slot that x's keys are written to (scalar, may be traced).
    Returns:
      ([B, L, width], the updated cache or None).
    """
    q, k, v = self.project(x, rope)
    if cache is not None:
      cache = cache_write(cache, KVCache(k, v), cache_index)
      k, v = cache
    return self.combine(q, k, v, mask, cached=cache is not None), cache


def cache_write(
  cache: KVCache, new: KVCache, index: jax.Array | int, layer: jax.Array | int | None = None
) -> KVCache:
  """Writes new keys / values [B, KVH, Dh, L] at slots [index, index + L) (of `layer` if
  the cache is stacked).

  The caller keeps index + L <= T: XLA clamps out-of-range writes instead of failing.
  """
  zero, index = jnp.zeros((), jnp.int32), jnp.asarray(index, jnp.int32)
  at: tuple[jax.Array, ...] = (zero, zero, zero, index)
  k, v = _stored(new.k, cache.k.dtype), _stored(new.v, cache.v.dtype)
  if layer is not None:
    at = (jnp.asarray(layer, jnp.int32), *at)
    k, v = k[None], v[None]
  return KVCache(
    jax.lax.dynamic_update_slice(cache.k, k, at), jax.lax.dynamic_update_slice(cache.v, v, at)
  )


def _stored(x: jax.Array, dtype: jnp.dtype) -> jax.Array:
  if dtype == jnp.uint16:
    return jax.lax.bitcast_convert_type(x.astype(jnp.bfloat16), jnp.uint16)
  return x.astype(dtype)


# ---------------------------------------------------------------------------- MLP


class SwiGLU(nnx.Module):
  """down(silu(gate(x)) * up(x)); gate / up [width, mlp], down [mlp, width]."""

  def __init__(
    self,
    width: int,
    mlp_dim: int,
    *,
    init_std: float = 0.02,
    dtype: Dtype = jnp.float32,
    param_dtype: Dtype = jnp.float32,
    rngs: nnx.Rngs,
  ):
    self.dtype = jnp.dtype(dtype)
    init = nnx.initializers.normal(init_std)
    self.gate = param(rngs, init, (width, mlp_dim), ("embed", "mlp"), param_dtype)
    self.up = param(rngs, init, (width, mlp_dim), ("embed", "mlp"), param_dtype)
    self.down = param(rngs, init, (mlp_dim, width), ("mlp", "embed"), param_dtype)

  def __call__(self, x: jax.Array) -> jax.Array:
    """x [B, L, width] -> [B, L, width]."""
    x = x.astype(self.dtype)
    g = x @ self.gate[...].astype(self.dtype)
    u = x @ self.up[...].astype(self.dtype)
    h = constrain(jax.nn.silu(g) * u, ("batch", "length", "mlp"))
    return h @ self.down[...].astype(self.dtype)


# ---------------------------------------------------------------------------- RoPE 3-D
# Video DiT (models/dit.py): each head's channels split over frame / height / width.
# Appended by the DiT issue; functions above this section belong to the LLM layers.


def rope_3d_split(head_dim: int) -> tuple[int, int, int]:
  """Channels of a head given to (frame, height, width): h = w = 2 * (head_dim // 6) (Wan)."""
  hw = 2 * (head_dim // 6)
  return head_dim - 2 * hw, hw, hw


def rope_3d_tables(
  grid: tuple[int, int, int], head_dim: int, theta: float = 10000.0
) -> tuple[np.ndarray, np.ndarray]:
  """cos, sin float32 [F * H * W, head_dim // 2] for tokens in (frame, row, column) order.

  Each axis has its own frequency ladder theta^(-2i / d_axis) over its share d_axis of
  the head (`rope_3d_split`); token (f, h, w) turns pair i of the frame share by f * freq_i,
  and likewise for rows and columns. Computed in float64 on the host (the grid is static;
  long videos need the angle's precision), as the diffusers reference does.
  """
  angles = []
  for axis, (n, d) in enumerate(zip(grid, rope_3d_split(head_dim))):
    freqs = theta ** (-np.arange(0, d, 2, dtype=np.float64) / d)
    shape = [1, 1, 1, d // 2]
    shape[axis] = n
    a = (np.arange(n, dtype=np.float64)[:, None] * freqs[None]).reshape(shape)
    angles.append(np.broadcast_to(a, (*grid, d // 2)))
  a = np.concatenate(angles, axis=-1).reshape(-1, head_dim // 2)
  return np.cos(a).astype(np.float32), np.sin(a).astype(np.float32)


def apply_rope_interleaved(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
  """Rotates channel pairs (2i, 2i + 1) of x [B, N, heads, head_dim] by cos, sin [N, head_dim // 2].

  Pairs are adjacent channels (Wan / diffusers layout), unlike `apply_rope`'s halves.
  """
  xf = x.astype(jnp.float32).reshape(*x.shape[:-1], x.shape[-1] // 2, 2)
  x1, x2 = xf[..., 0], xf[..., 1]
  c, s = cos[:, None, :], sin[:, None, :]
  out = jnp.stack([x1 * c - x2 * s, x1 * s + x2 * c], axis=-1)
  return out.reshape(x.shape).astype(x.dtype)
