"""Building blocks: RMSNorm, RoPE (plain and Llama-3 scaled), GQA attention, KV cache, SwiGLU."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from auteur_jax.models import layers as Ly


def _rngs():
  return nnx.Rngs(0)


def test_rmsnorm_matches_formula():
  with nnx.use_eager_sharding(False):
    norm = Ly.RMSNorm(6, eps=1e-5, rngs=_rngs())
  norm.scale[...] = jnp.arange(1.0, 7.0)
  x = np.random.default_rng(0).normal(size=(2, 3, 6)).astype(np.float32)
  want = x / np.sqrt((x * x).mean(-1, keepdims=True) + 1e-5) * np.arange(1.0, 7.0)
  np.testing.assert_allclose(np.asarray(norm(jnp.asarray(x))), want, rtol=1e-5, atol=1e-6)


def test_rope_frequencies_plain_and_llama3():
  plain = Ly.rope_frequencies(8, 10000.0)
  np.testing.assert_allclose(plain, 10000.0 ** (-np.arange(0, 8, 2) / 8), rtol=1e-6)
  s = Ly.RopeScaling(
    factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position=64
  )
  scaled = Ly.rope_frequencies(16, 500000.0, s)
  base = Ly.rope_frequencies(16, 500000.0)
  wavelen = 2 * np.pi / base
  short, long = wavelen < 64 / 4, wavelen > 64 / 1
  np.testing.assert_allclose(scaled[short], base[short], rtol=1e-6)  # Kept.
  np.testing.assert_allclose(scaled[long], base[long] / 8, rtol=1e-6)  # Slowed by factor.
  mid = ~short & ~long
  assert mid.any(), "the test needs a wavelength in the interpolated band"
  smooth = (64 / wavelen[mid] - 1.0) / (4.0 - 1.0)
  np.testing.assert_allclose(
    scaled[mid], (1 - smooth) * base[mid] / 8 + smooth * base[mid], rtol=1e-5
  )
  with pytest.raises(ValueError, match="even head_dim"):
    Ly.rope_frequencies(7, 10000.0)


def test_rope_is_a_relative_rotation():
  rng = np.random.default_rng(0)
  q = jnp.asarray(rng.normal(size=(1, 1, 1, 16)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(1, 1, 1, 16)), jnp.float32)
  freq = Ly.rope_frequencies(16, 10000.0)

  def rot(x, p):
    return Ly.apply_rope(x, *Ly.rope_angles(jnp.array([[p]]), freq))

  dot = lambda m, n: float(jnp.sum(rot(q, m) * rot(k, n)))  # noqa: E731
  assert dot(7, 3) == pytest.approx(dot(14, 10), rel=1e-4)  # Depends on m - n only.
  assert dot(7, 3) != pytest.approx(dot(7, 4), rel=1e-3)
  np.testing.assert_allclose(
    float(jnp.linalg.norm(rot(q, 5))), float(jnp.linalg.norm(q)), rtol=1e-5
  )


def _naive_attention(q, k, v, mask):
  """q [B, L, H, D], k/v [B, KVH, T, D], mask [B, L, T] in numpy, heads repeated."""
  b, l, h, d = q.shape
  rep = h // k.shape[1]
  k = np.repeat(k, rep, axis=1)
  v = np.repeat(v, rep, axis=1)
  s = np.einsum("blhd,bhtd->bhlt", q, k) / math.sqrt(d)
  s = np.where(mask[:, None], s, -np.inf)
  p = np.exp(s - s.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  return np.einsum("bhlt,bhtd->blhd", p, v)


def test_gqa_attention_matches_naive():
  rng = np.random.default_rng(1)
  q = rng.normal(size=(2, 5, 6, 8)).astype(np.float32)
  k = rng.normal(size=(2, 2, 7, 8)).astype(np.float32)
  v = rng.normal(size=(2, 2, 7, 8)).astype(np.float32)
  mask = rng.random((2, 5, 7)) < 0.7
  mask[..., 0] = True
  got = Ly.attend(
    jnp.asarray(q), jnp.asarray(k).swapaxes(2, 3), jnp.asarray(v).swapaxes(2, 3), jnp.asarray(mask)
  )  # Keys and values in the cache layout [B, KVH, Dh, T].
  np.testing.assert_allclose(np.asarray(got), _naive_attention(q, k, v, mask), rtol=1e-5, atol=1e-5)


@pytest.mark.integration
def test_attention_cache_chunks_equal_full_pass():
  with nnx.use_eager_sharding(False):
    attn = Ly.Attention(16, 4, 2, 8, qkv_bias=True, rngs=_rngs())
  attn.q_bias[...] = jnp.ones((4, 8)) * 0.1  # Non-zero biases take part.
  x = jnp.asarray(np.random.default_rng(2).normal(size=(2, 6, 16)), jnp.float32)
  freq = Ly.rope_frequencies(8, 10000.0)
  pos = jnp.broadcast_to(jnp.arange(6), (2, 6))
  full, _ = attn(x, Ly.rope_angles(pos, freq), jnp.tril(jnp.ones((6, 6), bool))[None].repeat(2, 0))
  cache = Ly.KVCache.zeros(2, 2, 10, 8)  # 4 spare slots stay masked.
  outs, start = [], 0
  for size in (3, 1, 2):  # A prompt chunk, then single tokens / a small chunk.
    sl = slice(start, start + size)
    mask = (jnp.arange(10)[None, :] <= jnp.arange(start, start + size)[:, None])[None]
    y, cache = attn(x[:, sl], Ly.rope_angles(pos[:, sl], freq), mask.repeat(2, 0), cache, start)
    outs.append(y)
    start += size
  np.testing.assert_allclose(
    np.asarray(jnp.concatenate(outs, 1)), np.asarray(full), rtol=1e-5, atol=1e-5
  )
  assert cache.k.shape == cache.v.shape == (2, 2, 8, 10)
  np.testing.assert_array_equal(np.asarray(cache.k[..., 6:]), 0)
  np.testing.assert_array_equal(np.asarray(cache.v[..., 6:]), 0)
  assert np.all(np.asarray(cache.v[..., :6]) != 0)


def test_swiglu_matches_formula():
  with nnx.use_eager_sharding(False):
    mlp = Ly.SwiGLU(4, 6, rngs=_rngs())
  x = np.random.default_rng(3).normal(size=(1, 2, 4)).astype(np.float32)
  g, u, d = (np.asarray(p[...]) for p in (mlp.gate, mlp.up, mlp.down))
  a = x @ g
  want = (a / (1 + np.exp(-a)) * (x @ u)) @ d
  np.testing.assert_allclose(np.asarray(mlp(jnp.asarray(x))), want, rtol=1e-5, atol=1e-6)


def test_every_param_has_logical_axes():
  with nnx.use_eager_sharding(False):
    attn = Ly.Attention(16, 4, 2, 8, qkv_bias=True, rngs=_rngs())
    mlp = Ly.SwiGLU(16, 32, rngs=_rngs())
    norm = Ly.RMSNorm(16, rngs=_rngs())
  for module in (attn, mlp, norm):
    for path, var in nnx.to_flat_state(nnx.state(module, nnx.Param)):
      axes = var.get_metadata().get("out_sharding")
      assert axes is not None and len(axes) == var[...].ndim, (path, axes)
  with pytest.raises(ValueError, match="multiple of num_kv_heads"):
    Ly.Attention(16, 4, 3, 8, rngs=_rngs())
  with pytest.raises(ValueError, match="3 axis names"):
    Ly.param(_rngs(), nnx.initializers.zeros, (2, 3, 4), ("embed",))


def test_attention_runs_under_jit_with_traced_cache_index():
  with nnx.use_eager_sharding(False):
    attn = Ly.Attention(8, 2, 1, 4, rngs=_rngs())
  freq = Ly.rope_frequencies(4, 10000.0)

  @jax.jit
  def step(cache, x, index):
    mask = (jnp.arange(5) <= index)[None, None]
    return attn(x, Ly.rope_angles(jnp.full((1, 1), index), freq), mask, cache, index)

  cache = Ly.KVCache.zeros(1, 1, 5, 4)
  x = jnp.ones((1, 1, 8))
  for i in range(3):
    _, cache = step(cache, x * (i + 1), jnp.int32(i))
  assert step._cache_size() == 1
  assert np.all(np.asarray(cache.k[0, 0, :, :3]) != 0)
  assert np.all(np.asarray(cache.k[0, 0, :, 3:]) == 0)
