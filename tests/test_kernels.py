"""The C++ CPU attention kernels (decoding; training with its gradient) against the einsum
attention they stand in for."""

import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from auteur_jax.kernels import build
from auteur_jax.kernels import decode_attention as da
from auteur_jax.kernels import train_attention as ta
from auteur_jax.models import layers as Ly
from auteur_jax.models import llm as L
from auteur_jax.sample.director import LMSampler

pytestmark = pytest.mark.skipif(shutil.which("c++") is None, reason="no C++ compiler")


def _inputs(b, l, h, kvh, d, t, seed=0):
  rng = np.random.default_rng(seed)
  q = jnp.asarray(rng.normal(size=(b, l, h, d)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(b, kvh, d, t)), jnp.float32)
  v = jnp.asarray(rng.normal(size=(b, kvh, d, t)), jnp.float32)
  lens = rng.integers(1, t + 1, b)
  mask = np.arange(t)[None, None, :] < lens[:, None, None] + np.arange(l)[None, :, None]
  mask[0, 0] = False  # A fully masked row: uniform weights, as the einsum path gives.
  return q, k, v, jnp.asarray(mask)


@pytest.mark.parametrize(
  "b,l,h,kvh,d,t",
  [
    (2, 1, 8, 2, 64, 1280),  # A decode step: 4 query heads per kv head.
    (3, 1, 4, 4, 16, 37),  # Multi-head; slots not a multiple of the vector width.
    (1, 2, 8, 1, 8, 5),  # Fewer slots than one vector; 16 rows in two passes of 4 rows.
    (2, 3, 6, 2, 8, 50),  # 3 rows per kv head and query: groups of 4 and 3, 2.
  ],
)
@pytest.mark.parametrize("cache", ["float32", "bfloat16", "uint16"])
def test_kernel_equals_einsum_attention(b, l, h, kvh, d, t, cache):
  assert build.compile_library("decode_attention").exists()
  q, k, v, mask = _inputs(b, l, h, kvh, d, t)
  if cache != "float32":  # bfloat16 values, given as such or as KVCache's uint16 bits.
    k, v = k.astype(jnp.bfloat16), v.astype(jnp.bfloat16)
  want = Ly.attend(q, k.astype(jnp.float32), v.astype(jnp.float32), mask)
  if cache == "uint16":
    k, v = (jax.lax.bitcast_convert_type(x, jnp.uint16) for x in (k, v))
  assert da.applies(q, k)
  got = jax.jit(da.decode_attention)(q, k, v, mask)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=2e-5, atol=2e-5)


def test_kernel_with_no_slots_gives_zeros_like_the_einsums():
  q = jnp.ones((2, 1, 4, 8))
  k = v = jnp.zeros((2, 2, 8, 0))
  mask = jnp.zeros((2, 1, 0), bool)
  got = jax.jit(da.decode_attention)(q, k, v, mask)
  np.testing.assert_array_equal(np.asarray(got), np.asarray(Ly.attend(q, k, v, mask)))
  np.testing.assert_array_equal(np.asarray(got), 0.0)


def test_applies_only_where_it_serves():
  q, k, _, _ = _inputs(1, 1, 8, 2, 8, 16)
  assert da.applies(q, k)
  assert not da.applies(jnp.zeros((1, 5, 8, 8)), k)  # 20 rows per kv head: XLA's GEMM.
  assert not da.applies(q, k.astype(jnp.float16))
  mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  with jax.set_mesh(mesh):  # Sharded: the einsums, which XLA partitions.
    assert not da.applies(q, k)


def test_missing_compiler_is_named(monkeypatch):
  monkeypatch.setenv("CXX", "no-such-c++")
  with pytest.raises(RuntimeError, match="no C\\+\\+ compiler \\(no-such-c\\+\\+\\)"):
    build.compile_library("decode_attention")


def _llm():
  cfg = L.LLMConfig(
    vocab_size=64, width=32, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8, mlp_dim=48
  )
  with nnx.use_eager_sharding(False):
    return L.LLM(cfg, rngs=nnx.Rngs(0))


@pytest.mark.integration
@pytest.mark.parametrize("cache_dtype", ["float32", "bfloat16"])
def test_sampler_decodes_through_kernel_and_matches_einsums(cache_dtype, monkeypatch):
  llm = _llm()
  ids = jnp.asarray(np.random.default_rng(1).integers(0, 64, (2, 6)), jnp.int32)
  mask = jnp.ones(ids.shape, bool)
  sampler = LMSampler(llm, cache_dtype=cache_dtype)
  carry = sampler.prefill(ids, mask, 8)
  if cache_dtype == "bfloat16":
    assert carry.state.caches[0].k.dtype == jnp.uint16  # Its bits: in-place writes.
  hlo = sampler._loop.lower(
    sampler.params, sampler.layer_states(), carry, jax.random.key(0), 8
  ).as_text()
  assert hlo.count("AuteurDecodeAttention") == 2  # One call per layer in the step.
  out = sampler._loop(sampler.params, sampler.layer_states(), carry, jax.random.key(0), 8)

  monkeypatch.setattr(da, "applies", lambda q, k: False)
  plain = LMSampler(llm, cache_dtype=cache_dtype)
  ref = plain._loop(
    plain.params, plain.layer_states(), plain.prefill(ids, mask, 8), jax.random.key(0), 8
  )
  assert (
    "AuteurDecodeAttention"
    not in plain._loop.lower(
      plain.params, plain.layer_states(), plain.prefill(ids, mask, 8), jax.random.key(0), 8
    ).as_text()
  )
  np.testing.assert_allclose(np.asarray(out.logits), np.asarray(ref.logits), rtol=1e-4, atol=1e-4)
  np.testing.assert_array_equal(np.asarray(out.ids), np.asarray(ref.ids))


@pytest.mark.integration
def test_bfloat16_cache_decoding_is_close_to_full_forward():
  llm = _llm()
  ids = jnp.asarray(np.random.default_rng(2).integers(0, 64, (2, 7)), jnp.int32)
  valid = jnp.ones(ids.shape, bool)
  h, _ = llm(llm.embed_tokens(ids), L.positions_from_valid(valid), L.causal_mask(valid))
  full = llm.logits(h)
  layers, caches = llm.unstack_layers(), llm.init_caches(2, 7, "bfloat16")
  outs = []
  for i in range(7):
    m = jnp.broadcast_to(jnp.arange(7) <= i, (2, 1, 7))
    h, caches = llm.decode(
      llm.embed_tokens(ids[:, i : i + 1]), jnp.full((2, 1), i), m, caches, i, layers
    )
    outs.append(llm.logits(h[:, 0]))
  got = np.asarray(jnp.stack(outs, 1))
  np.testing.assert_allclose(got, np.asarray(full), atol=2e-2 * np.abs(full).max())
  assert not np.array_equal(got, np.asarray(full))  # Rounded keys / values: not exact.
  written = Ly.values(caches[0].k)
  assert written.dtype == jnp.bfloat16 and np.all(np.asarray(written) != 0)


def _train_inputs(b, l, h, kvh, d, t, seed=0):
  """Causal-with-offset masks over keys of which ~20 % are padding; row 0 of story 0
  sees nothing (uniform weights and no gradient to q, k, as the einsums give)."""
  rng = np.random.default_rng(seed)
  q = jnp.asarray(rng.normal(size=(b, l, h, d)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(b, kvh, d, t)), jnp.float32)
  v = jnp.asarray(rng.normal(size=(b, kvh, d, t)), jnp.float32)
  mask = np.tril(np.ones((l, t), bool), t - l)[None].repeat(b, 0)
  mask &= rng.random((b, 1, t)) > 0.2
  mask[0, 0] = False
  return q, k, v, jnp.asarray(mask)


@pytest.mark.parametrize(
  "b,l,h,kvh,d,t",
  [
    (2, 37, 4, 2, 32, 37),  # The toy director's heads; 37 keys: a vector tail.
    (1, 5, 2, 1, 8, 9),  # Fewer keys than one AVX-512 vector past the first.
    (2, 50, 6, 3, 16, 70),  # Groups of rows that straddle query positions.
    (3, 20, 4, 4, 64, 20),  # Multi-head, the largest head dim the kernel takes.
  ],
)
def test_train_kernel_equals_einsum_attention_and_its_gradient(b, l, h, kvh, d, t):
  q, k, v, mask = _train_inputs(b, l, h, kvh, d, t)
  assert ta.applies(q, k, v)

  def loss(attend):
    return lambda q, k, v: jnp.sum(jnp.sin(attend(q, k, v, mask)))

  want, want_grads = jax.value_and_grad(loss(Ly.attend), argnums=(0, 1, 2))(q, k, v)
  got, grads = jax.jit(jax.value_and_grad(loss(ta.attend), argnums=(0, 1, 2)))(q, k, v)
  out = jax.jit(ta.attend)(q, k, v, mask)
  np.testing.assert_allclose(
    np.asarray(out), np.asarray(Ly.attend(q, k, v, mask)), rtol=1e-5, atol=1e-5
  )
  np.testing.assert_allclose(float(got), float(want), rtol=1e-5, atol=1e-4)  # A sum of ~1e4.
  for name, g, w in zip("qkv", grads, want_grads):
    np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-5, atol=1e-5, err_msg=name)


@pytest.mark.integration
@pytest.mark.skipif(
  "avx512f" not in open("/proc/cpuinfo").read(), reason="native is the AVX2 build already"
)
def test_train_kernel_built_for_avx2_equals_einsum_attention(tmp_path):
  """The AVX2 build (8-lane vectors, 6-row groups) runs other code than AVX-512's: the
  equality test above again, in a process that builds the kernel with -mavx2 -mfma."""
  env = dict(
    os.environ, AUTEUR_KERNEL_ARCH="-mavx2 -mfma", AUTEUR_KERNEL_CACHE=str(tmp_path / "kernels")
  )
  cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "unit"]
  cmd += [f"{__file__}::test_train_kernel_equals_einsum_attention_and_its_gradient"]
  done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
  assert "4 passed" in done.stdout
  assert list((tmp_path / "kernels").glob("train_attention-*.so"))  # Built for AVX2 here.


def test_train_kernel_applies_only_where_it_serves():
  q, k, v, _ = _train_inputs(1, 4, 4, 2, 8, 4)
  assert ta.applies(q, k, v)
  assert not ta.applies(q.astype(jnp.bfloat16), k, v)  # float32 only.
  wide = jnp.zeros((1, 4, 2, 128))
  assert not ta.applies(wide, jnp.zeros((1, 2, 128, 4)), jnp.zeros((1, 2, 128, 4)))
  mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  with jax.set_mesh(mesh):  # Sharded: the einsums, which XLA partitions.
    assert not ta.applies(q, k, v)


def test_llm_training_gradient_through_kernel_equals_einsums(monkeypatch):
  llm = _llm()
  rng = np.random.default_rng(3)
  ids = jnp.asarray(rng.integers(0, 64, (2, 21)), jnp.int32)
  valid = jnp.asarray(np.arange(21)[None] < np.array([[21], [15]]))
  graphdef, params = nnx.split(llm)

  def loss(params):
    model = nnx.merge(graphdef, params)
    h, _ = model(model.embed_tokens(ids), L.positions_from_valid(valid), L.causal_mask(valid))
    return jnp.mean(model.token_nll(h[:, :-1], ids[:, 1:])[0])

  step = jax.jit(jax.value_and_grad(loss))
  assert "AuteurTrainAttentionBackward" in step.lower(params).compile().as_text()
  got, grads = step(params)
  monkeypatch.setattr(ta, "applies", lambda q, k, v: False)
  want, want_grads = jax.value_and_grad(loss)(params)
  np.testing.assert_allclose(float(got), float(want), rtol=1e-6)
  for g, w in zip(jax.tree.leaves(grads), jax.tree.leaves(want_grads)):
    np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-5, atol=1e-6)
