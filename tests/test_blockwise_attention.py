"""Blockwise attention: equal to full softmax attention (values and gradients), any block
size, low-precision inputs, sharded inputs; far less memory for long sequences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from auteur_jax.models import blockwise_attention as ba
from auteur_jax.models.dit import _attend as full_attention
from auteur_jax.parallel.mesh import make_mesh


def _qkv(b=2, n=19, m=23, h=3, k=8, dtype=jnp.float32, seed=0):
  ks = jax.random.split(jax.random.key(seed), 4)
  q = jax.random.normal(ks[0], (b, n, h, k))
  key = 3.0 * jax.random.normal(ks[1], (b, m, h, k))  # Peaked softmax rows.
  v = jax.random.normal(ks[2], (b, m, h, k))
  w = jax.random.normal(ks[3], (b, n, h, k))  # Cotangent weights for the loss.
  return q.astype(dtype), key.astype(dtype), v.astype(dtype), w


def _value_and_grads(fn, q, k, v, w):
  loss = lambda q, k, v: jnp.sum(fn(q, k, v).astype(jnp.float32) * w)  # noqa: E731
  return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))(q, k, v)


# Unit: 7 keys a block (the 23 keys leave a padded last block); the sweep is integration.
@pytest.mark.parametrize(
  "block", [7, *(pytest.param(b, marks=pytest.mark.integration) for b in (1, 4, 23, 64))]
)
def test_equals_full_attention(block):
  """Blocks that divide the 23 keys or not, one key, all keys in one block, more."""
  q, k, v, w = _qkv()
  out = jax.jit(ba.attend, static_argnums=3)(q, k, v, block)
  np.testing.assert_allclose(out, full_attention(q, k, v), rtol=1e-5, atol=1e-5)
  val, grads = _value_and_grads(lambda q, k, v: ba.attend(q, k, v, block), q, k, v, w)
  ref_val, ref_grads = _value_and_grads(full_attention, q, k, v, w)
  np.testing.assert_allclose(val, ref_val, rtol=1e-5)
  for name, g, r in zip("qkv", grads, ref_grads):
    np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-5, err_msg=name)


def test_bfloat16_inputs():
  q, k, v, w = _qkv(dtype=jnp.bfloat16)
  out = ba.attend(q, k, v, 8)
  assert out.dtype == jnp.bfloat16
  ref = full_attention(*(x.astype(jnp.float32) for x in (q, k, v)))
  np.testing.assert_allclose(np.asarray(out, np.float32), ref, atol=3e-2)
  grads = _value_and_grads(lambda q, k, v: ba.attend(q, k, v, 8), q, k, v, w)[1]
  assert [g.dtype for g in grads] == [jnp.bfloat16] * 3
  ref_grads = _value_and_grads(full_attention, *(x.astype(jnp.float32) for x in (q, k, v)), w)[1]
  for g, r in zip(grads, ref_grads):
    np.testing.assert_allclose(np.asarray(g, np.float32), r, atol=0.1 * float(jnp.abs(r).max()))


def test_sharded_over_sequence_and_heads():
  """Queries split over `context`, heads over `tensor`, batch over `data`: same result."""
  q, k, v, w = _qkv(b=2, n=24, m=24, h=2)
  mesh = make_mesh({"data": 2, "context": 2, "tensor": 2})
  spec = NamedSharding(mesh, PartitionSpec("data", "context", "tensor", None))
  sq, sk, sv = (jax.device_put(x, spec) for x in (q, k, v))
  val, grads = _value_and_grads(lambda q, k, v: ba.attend(q, k, v, 5), sq, sk, sv, w)
  ref_val, ref_grads = _value_and_grads(full_attention, q, k, v, w)
  np.testing.assert_allclose(val, ref_val, rtol=1e-5)
  for g, r in zip(grads, ref_grads):
    np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-5)


def test_scores_memory_is_per_block():
  """The compiled gradient's scratch memory at 2,048 tokens: a fraction of the full
  attention's, whose [B, H, N, M] scores and probabilities are kept for the backward."""
  q, k, v, w = _qkv(b=1, n=2048, m=2048, h=2, k=16)

  def temp_bytes(fn):
    loss = lambda q, k, v: jnp.sum(fn(q, k, v) * w)  # noqa: E731
    compiled = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(q, k, v).compile()
    return compiled.memory_analysis().temp_size_in_bytes

  full = temp_bytes(full_attention)
  blockwise = temp_bytes(lambda q, k, v: ba.attend(q, k, v, 128))
  scores = 2 * 2048 * 2048 * 4  # One [1, 2, N, M] float32 array: 32 MiB.
  assert full >= scores
  assert blockwise < full / 8, (blockwise, full)


def test_errors():
  q, k, v, _ = _qkv()
  with pytest.raises(ValueError, match="attention block: expected >= 1 keys, got 0"):
    ba.attend(q, k, v, 0)
  with pytest.raises(ValueError, match=r"expected q \[B, N, H, K\], k / v \[B, M, H, K\]"):
    ba.attend(q, k[:, :5], v, 4)
