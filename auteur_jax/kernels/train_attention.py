"""Masked attention with its gradient, by the C++ CPU kernel (train_attention.cc).

`layers.Attention` calls `applies` on its uncached path (training steps, prefill) and,
where it holds, `attend` in place of the einsum attention. The kernel keeps a few query
rows' scores in cache instead of writing the whole [L, T] score matrix to memory several
times, and skips the keys after a row group's last visible one (half of a causal mask).
The toy director's training step (4 layers, 8 stories of 1,616 tokens) spent ~3.6 s of
4.3 s in XLA's attention; see benchmarks/train_throughput.py. Elsewhere (GPU, TPU, a
sharded mesh, other dtypes, head dims over 64, kernels off) the einsums run.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from auteur_jax.kernels import build

_FORWARD, _BACKWARD = "AuteurTrainAttention", "AuteurTrainAttentionBackward"
MAX_HEAD_DIM = 64  # As train_attention.cc checks.


def applies(q: jax.Array, k: jax.Array, v: jax.Array) -> bool:
  """Whether the kernel serves q [B, L, H, Dh] over k, v [B, KVH, Dh, T] here: float32,
  Dh <= 64, a CPU backend, no multi-device mesh in context, and the kernel built."""
  if any(x.dtype != jnp.float32 for x in (q, k, v)) or q.shape[-1] > MAX_HEAD_DIM:
    return False
  if jax.default_backend() != "cpu" or jax.sharding.get_abstract_mesh().size > 1:
    return False
  return build.load("train_attention", (_FORWARD, _BACKWARD))


def _forward(q5, k, v, mask):
  b, l, kvh, g, _ = q5.shape
  return jax.ffi.ffi_call(
    _FORWARD,
    (
      jax.ShapeDtypeStruct(q5.shape, jnp.float32),
      jax.ShapeDtypeStruct((b, l, kvh, g), jnp.float32),
    ),
    vmap_method="sequential",
  )(q5, k, v, mask)


@jax.custom_vjp
def _attention(q5: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array) -> jax.Array:
  return _forward(q5, k, v, mask)[0]


def _attention_fwd(q5, k, v, mask):
  out, lse = _forward(q5, k, v, mask)
  return out, (q5, k, v, mask, out, lse)


def _attention_bwd(res, dout):
  q5, k, v, mask, out, lse = res
  dq, dk, dv = jax.ffi.ffi_call(
    _BACKWARD,
    (
      jax.ShapeDtypeStruct(q5.shape, jnp.float32),
      jax.ShapeDtypeStruct(k.shape, jnp.float32),
      jax.ShapeDtypeStruct(v.shape, jnp.float32),
    ),
    vmap_method="sequential",
  )(q5, k, v, mask, out, lse, dout.astype(jnp.float32))
  return dq, dk, dv, None


_attention.defvjp(_attention_fwd, _attention_bwd)


def attend(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array) -> jax.Array:
  """Same contract as `layers.attend`: q [B, L, H, Dh], k / v [B, KVH, Dh, T], mask bool
  [B, L, T] -> [B, L, H, Dh]; float32, differentiable in q, k and v."""
  b, l, h, d = q.shape
  kvh = k.shape[1]
  q5 = (q * (1.0 / math.sqrt(d))).reshape(b, l, kvh, h // kvh, d)
  return _attention(q5, k, v, mask.astype(bool)).reshape(b, l, h, d)
