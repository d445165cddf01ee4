"""Attention of a few query rows over a KV cache, by the C++ CPU kernel.

`layers.Attention` calls `applies` on its cached (decoding) path and, where it holds,
`decode_attention` in place of the einsum attention: a decode step of 8 layers, batch
8, 2 kv heads at 1,280 cache slots reads the cache at memory speed (the einsums pack
each block first), and a bfloat16 cache is read without a float32 copy. Elsewhere
(GPU, TPU, a sharded mesh, many query rows, kernels off) the einsums run.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from auteur_jax.kernels import build

MAX_ROWS = 16  # L * G per call, as in decode_attention.cc.
_TARGET = "AuteurDecodeAttention"


def applies(q: jax.Array, k: jax.Array) -> bool:
  """Whether the kernel serves q [B, L, H, Dh] over k [B, KVH, Dh, T] here: a CPU
  backend, no multi-device mesh in context, L * H / KVH <= 16, a float32 or bfloat16
  cache (or its uint16 bits, as KVCache holds it), and the kernel built."""
  b, l, h, d = q.shape
  if l * (h // k.shape[1]) > MAX_ROWS or k.dtype not in (jnp.float32, jnp.bfloat16, jnp.uint16):
    return False
  if jax.default_backend() != "cpu" or jax.sharding.get_abstract_mesh().size > 1:
    return False
  return build.load("decode_attention", (_TARGET,))


def decode_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array) -> jax.Array:
  """Same contract as `layers.attend`: q [B, L, H, Dh], k / v [B, KVH, Dh, T] (float32,
  bfloat16 or bfloat16 bits as uint16), mask bool [B, L, T] -> [B, L, H, Dh] in q's
  dtype; computed in float32."""
  b, l, h, d = q.shape
  kvh = k.shape[1]
  q5 = (q.astype(jnp.float32) * (1.0 / math.sqrt(d))).reshape(b, l, kvh, h // kvh, d)
  out = jax.ffi.ffi_call(
    _TARGET, jax.ShapeDtypeStruct(q5.shape, jnp.float32), vmap_method="sequential"
  )(q5, k, v, mask)
  return out.reshape(b, l, h, d).astype(q.dtype)
