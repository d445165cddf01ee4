"""Softmax attention over key blocks, never holding the whole score matrix.

`attend(q, k, v, block)` equals softmax(q k^T / sqrt(K)) v, but the forward runs over
blocks of `block` keys with a running max and sum (flash attention's online softmax), and
its backward (a custom VJP) recomputes each block's probabilities from the saved
log-sum-exp instead of keeping them. The scores then take B * H * N * block floats at a
time instead of B * H * N * M: for a 16,464-token Wan clip with 40 heads, 1.3 GiB
instead of 43 GiB per layer in float32. The price is one more score matmul in the
backward. It is plain JAX (`lax.scan`), so it runs, shards and AOT-compiles on any
backend; fused kernels (TPU splash attention, cuDNN flash attention) are faster still.

Shapes: q [B, N, H, K], k / v [B, M, H, K] -> [B, N, H, K]. Scores and the softmax are
float32; probabilities meet the values in the values' dtype (as the DiT's full
attention does). A key count that `block` does not divide is padded and masked.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

F32 = jnp.float32


def _key_blocks(x: jax.Array, block: int) -> jax.Array:
  """[B, M, H, K] -> [M_pad / block, B, block, H, K] (zero padded to a multiple of block)."""
  b, m, h, d = x.shape
  nb = -(-m // block)
  x = jnp.pad(x, ((0, 0), (0, nb * block - m), (0, 0), (0, 0)))
  return x.reshape(b, nb, block, h, d).transpose(1, 0, 2, 3, 4)


def _blocks(k: jax.Array, v: jax.Array, block: int):
  """Keys, values and the valid-key mask [nb, block], block by block."""
  m = k.shape[1]
  kb, vb = _key_blocks(k, block), _key_blocks(v, block)
  valid = (jnp.arange(kb.shape[0] * block) < m).reshape(kb.shape[0], block)
  return kb, vb, valid


def _scores(qs: jax.Array, kj: jax.Array, ok: jax.Array) -> jax.Array:
  """Scaled queries [B, N, H, K] x one key block [B, b, H, K] -> [B, H, N, b] float32."""
  s = jnp.einsum("bnhk,bmhk->bhnm", qs, kj, preferred_element_type=F32)
  return jnp.where(ok, s, -jnp.inf)


def _forward(q: jax.Array, k: jax.Array, v: jax.Array, block: int) -> tuple[jax.Array, jax.Array]:
  """(out [B, N, H, K] in q's dtype, log-sum-exp [B, H, N] float32)."""
  b, n, h, d = q.shape
  qs = q * d**-0.5

  def step(carry, xs):
    mx, total, acc = carry  # Running max and sum [B, H, N], output sum [B, N, H, K].
    kj, vj, ok = xs
    s = _scores(qs, kj, ok)
    new = jnp.maximum(mx, s.max(-1))  # Finite from the first block on (it has a key).
    p = jnp.exp(s - new[..., None])
    fix = jnp.exp(mx - new)
    total = total * fix + p.sum(-1)
    pv = jnp.einsum("bhnm,bmhk->bnhk", p.astype(v.dtype), vj, preferred_element_type=F32)
    acc = acc * fix.transpose(0, 2, 1)[..., None] + pv
    return (new, total, acc), None

  init = (
    jnp.full((b, h, n), -jnp.inf, F32),
    jnp.zeros((b, h, n), F32),
    jnp.zeros((b, n, h, v.shape[-1]), F32),
  )
  (mx, total, acc), _ = jax.lax.scan(step, init, _blocks(k, v, block))
  out = acc / total.transpose(0, 2, 1)[..., None]
  return out.astype(q.dtype), mx + jnp.log(total)


def attend(q: jax.Array, k: jax.Array, v: jax.Array, block: int = 512) -> jax.Array:
  """softmax(q k^T / sqrt(K)) v over key blocks of `block` (see the module docstring)."""
  if block < 1:
    raise ValueError(f"attention block: expected >= 1 keys, got {block}")
  if (
    q.ndim != 4
    or k.ndim != 4
    or v.shape[:3] != k.shape[:3]
    or k.shape[0] != q.shape[0]
    or k.shape[2:] != q.shape[2:]
  ):
    raise ValueError(
      f"attend: expected q [B, N, H, K], k / v [B, M, H, K], got {q.shape}, {k.shape}, {v.shape}"
    )
  return _attend(q, k, v, min(int(block), k.shape[1]))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _attend(q, k, v, block):
  return _forward(q, k, v, block)[0]


def _attend_fwd(q, k, v, block):
  out, lse = _forward(q, k, v, block)
  return out, (q, k, v, out, lse)


def _attend_bwd(block, res, dout):
  q, k, v, out, lse = res
  b, n, h, d = q.shape
  m = k.shape[1]
  scale = d**-0.5
  qs = q * scale
  delta = jnp.einsum("bnhk,bnhk->bhn", dout.astype(F32), out.astype(F32))  # rowsum(dP * P).

  def step(dq, xs):
    kj, vj, ok = xs
    p = jnp.exp(_scores(qs, kj, ok) - lse[..., None])  # This block's probabilities.
    dv = jnp.einsum("bhnm,bnhk->bmhk", p.astype(dout.dtype), dout, preferred_element_type=F32)
    dp = jnp.einsum("bnhk,bmhk->bhnm", dout, vj, preferred_element_type=F32)
    ds = p * (dp - delta[..., None])
    dq = dq + jnp.einsum("bhnm,bmhk->bnhk", ds.astype(k.dtype), kj, preferred_element_type=F32)
    dk = jnp.einsum("bhnm,bnhk->bmhk", ds.astype(q.dtype), qs, preferred_element_type=F32)
    return dq, (dk, dv)

  dq, (dk, dv) = jax.lax.scan(step, jnp.zeros(q.shape, F32), _blocks(k, v, block))
  unblock = (
    lambda x, like: (
      x.transpose(1, 0, 2, 3, 4)
      .reshape(  # noqa: E731
        b, -1, h, like.shape[-1]
      )[:, :m]
      .astype(like.dtype)
    )
  )
  return (dq * scale).astype(q.dtype), unblock(dk, k), unblock(dv, v)


_attend.defvjp(_attend_fwd, _attend_bwd)
