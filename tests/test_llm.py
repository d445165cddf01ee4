"""The decoder: causality, KV-cache decoding vs the full forward, remat, padding, config."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from auteur_jax.config import ConfigError
from auteur_jax.models import llm as L

CFG = L.LLMConfig(
  vocab_size=64,
  width=32,
  num_layers=2,
  num_heads=4,
  num_kv_heads=2,
  head_dim=8,
  mlp_dim=48,
  rope_theta=100.0,
)


def _model(cfg=CFG, seed=0):
  with nnx.use_eager_sharding(False):
    return L.LLM(cfg, rngs=nnx.Rngs(seed))


def _full_logits(model, ids, valid=None):
  valid = jnp.ones(ids.shape, bool) if valid is None else valid
  return _forward(model, ids, valid)


@jax.jit
def _forward(model, ids, valid):
  h, _ = model(model.embed_tokens(ids), L.positions_from_valid(valid), L.causal_mask(valid))
  return model.logits(h)


def _ids(shape, seed=0):
  return jnp.asarray(np.random.default_rng(seed).integers(0, CFG.vocab_size, shape), jnp.int32)


def test_causality():
  model = _model()
  ids = _ids((2, 9))
  base = _full_logits(model, ids)
  changed = _full_logits(model, ids.at[:, 6].set((ids[:, 6] + 1) % CFG.vocab_size))
  np.testing.assert_array_equal(np.asarray(base[:, :6]), np.asarray(changed[:, :6]))
  assert not np.allclose(np.asarray(base[:, 6:]), np.asarray(changed[:, 6:]))


def test_stacked_cache_decoding_equals_full_forward():
  model = _model()
  ids = _ids((2, 8), seed=1)
  full = _full_logits(model, ids)
  cache = model.init_cache(2, 12)
  step = jax.jit(lambda m, c, x, p, mask, i: m(x, p, mask, c, i))
  outs, start = [], 0
  for size in (5, 1, 1, 1):  # Prefill, then token by token.
    idx = jnp.arange(start, start + size)
    mask = jnp.broadcast_to(jnp.arange(12)[None, :] <= idx[:, None], (2, size, 12))
    h, cache = step(
      model,
      cache,
      model.embed_tokens(ids[:, idx]),
      jnp.broadcast_to(idx, (2, size)),
      mask,
      jnp.int32(start),
    )
    outs.append(model.logits(h))
    start += size
  np.testing.assert_allclose(
    np.asarray(jnp.concatenate(outs, 1)), np.asarray(full), rtol=1e-5, atol=1e-5
  )


def test_unrolled_decode_equals_full_forward_and_compiles_once():
  model = _model()
  ids = _ids((3, 7), seed=2)
  full = _full_logits(model, ids)
  layers = model.unstack_layers()
  caches = model.init_caches(3, 7)

  @jax.jit
  def step(caches, tok, index):
    mask = jnp.broadcast_to(jnp.arange(7) <= index, (3, 1, 7))
    h, caches = model.decode(
      model.embed_tokens(tok[:, None]), jnp.full((3, 1), index), mask, caches, index, layers
    )
    return caches, model.logits(h[:, 0])

  outs = []
  for i in range(7):
    caches, logits = step(caches, ids[:, i], jnp.int32(i))
    outs.append(logits)
  assert step._cache_size() == 1  # One compiled step for every position.
  np.testing.assert_allclose(np.asarray(jnp.stack(outs, 1)), np.asarray(full), rtol=1e-5, atol=1e-5)


def test_padding_is_invisible():
  model = _model()
  ids = _ids((1, 5), seed=3)
  ref = _full_logits(model, ids)
  # The same tokens with pad slots between them: masked keys, positions not advanced.
  padded = jnp.zeros((1, 8), jnp.int32).at[:, jnp.array([0, 2, 3, 6, 7])].set(ids)
  valid = jnp.zeros((1, 8), bool).at[:, jnp.array([0, 2, 3, 6, 7])].set(True)
  got = _full_logits(model, padded, valid)[:, jnp.array([0, 2, 3, 6, 7])]
  np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=1e-5, atol=1e-5)


@pytest.mark.integration
def test_remat_policies_keep_values_and_grads():
  ids = _ids((2, 6), seed=4)

  @jax.jit
  def value_and_grad(model):
    valid = jnp.ones(ids.shape, bool)
    return nnx.value_and_grad(lambda m: jnp.mean(_forward(m, ids, valid) ** 2))(model)

  ref_loss, ref_grads = value_and_grad(_model())
  for remat in ("full", "dots"):  # Each policy compiles anew: two keep the test fast.
    got_loss, got_grads = value_and_grad(_model(dataclasses.replace(CFG, remat=remat)))
    np.testing.assert_allclose(float(got_loss), float(ref_loss), rtol=1e-6)
    for a, b in zip(jax.tree.leaves(got_grads), jax.tree.leaves(ref_grads)):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-7)


def test_params_stacked_with_logical_axes_and_tied_head():
  model = _model()
  flat = dict(nnx.to_flat_state(nnx.state(model, nnx.Param)))
  q = flat[("layers", "attn", "q")]
  assert q[...].shape == (2, 32, 4, 8)
  assert q.get_metadata()["out_sharding"] == ("layers", "embed", "heads", "head_dim")
  for path, var in flat.items():
    assert len(var.get_metadata()["out_sharding"]) == var[...].ndim, path
  assert ("lm_head",) in flat
  tied = _model(dataclasses.replace(CFG, tie_embeddings=True))
  assert ("lm_head",) not in dict(nnx.to_flat_state(nnx.state(tied, nnx.Param)))
  h = jnp.ones((1, 1, 32))
  np.testing.assert_allclose(
    np.asarray(tied.logits(h)), np.asarray(h @ tied.embed[...].T), rtol=1e-6
  )


def test_config_errors_name_the_key():
  base = {f.name: getattr(CFG, f.name) for f in dataclasses.fields(CFG)}
  assert L.LLMConfig.from_config(base) == CFG
  with pytest.raises(ConfigError, match=r"config.model.llm: unknown key 'hidden'; allowed"):
    L.LLMConfig.from_config({**base, "hidden": 3})
  with pytest.raises(ConfigError, match=r"config.model.llm: missing key 'width'"):
    L.LLMConfig.from_config({k: v for k, v in base.items() if k != "width"})
  with pytest.raises(ValueError, match="llm.remat"):
    L.LLMConfig.from_config({**base, "remat": "some"})
  with pytest.raises(ConfigError, match=r"config.model.llm.rope_scaling: missing keys \["):
    L.LLMConfig.from_config({**base, "rope_scaling": {"factor": 8.0}})
  scaled = L.LLMConfig.from_config(
    {
      **base,
      "rope_scaling": dict(
        factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position=64
      ),
    }
  )
  assert scaled.rope_scaling.factor == 8.0
  with pytest.raises(ValueError, match="input width 16 != config width 32"):
    _model()(jnp.zeros((1, 2, 16)), jnp.zeros((1, 2), jnp.int32), jnp.ones((1, 2, 2), bool))
