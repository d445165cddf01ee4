"""Decoding: cached generation equals the full forward; loops agree; one compile; sampling."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from auteur_jax.models import director as D
from auteur_jax.models import llm as L
from auteur_jax.sample import director as S

LLM_CFG = L.LLMConfig(
  vocab_size=40, width=32, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8, mlp_dim=48
)
MARKUP = D.MarkupIds(4, 5, 6, 7, 8, 9, bos=1)
K, DIM = 2, 5
SAMPLING = S.Sampling(max_action_tokens=4, max_caption_tokens=5)


def make_director(seed=0):
  with nnx.use_eager_sharding(False):
    model = D.Director(D.DirectorConfig(LLM_CFG, MARKUP, K, DIM), rngs=nnx.Rngs(seed))
  # Louder closing tokens, so that some segments end before their length limit.
  head = model.llm.lm_head[...]
  model.llm.lm_head[...] = head.at[:, jnp.array([5, 7])].multiply(25.0)
  return model


TASK_IDS = np.array([[12, 13, 14], [20, 21, 0], [30, 0, 0]], np.int32)
TASK_MASK = TASK_IDS > 0


@jax.jit
def _padded_logits(model, ids, valid):
  h, _ = model(model.embed_tokens(ids), L.positions_from_valid(valid), L.causal_mask(valid))
  return model.logits(h)


@pytest.mark.parametrize("loop", S.LOOPS)
def test_lm_greedy_equals_full_forward(loop):
  with nnx.use_eager_sharding(False):
    llm = L.LLM(LLM_CFG, rngs=nnx.Rngs(1))
  sampler = S.LMSampler(llm, loop=loop)
  ids, mask = sampler.generate(TASK_IDS, TASK_MASK, 6)
  assert ids.shape == (3, 6) and bool(mask.all())
  width = 3 + 6
  for row in range(3):  # Reference: the whole sequence again for every new token.
    seq = [int(t) for t, m in zip(TASK_IDS[row], TASK_MASK[row]) if m]
    for _ in range(6):
      padded = jnp.asarray([seq + [0] * (width - len(seq))], jnp.int32)
      valid = jnp.arange(width)[None] < len(seq)
      seq.append(int(jnp.argmax(_padded_logits(llm, padded, valid)[0, len(seq) - 1])))
    np.testing.assert_array_equal(np.asarray(ids[row]), seq[-6:], err_msg=f"row {row}")
  if loop == "host":
    assert sampler._step._cache_size() == 1  # One compiled step for all 6 tokens.


@pytest.mark.integration
def test_story_equals_teacher_forced_forward():
  """Greedy text and z_t from cached decoding == the training forward on the result."""
  model = make_director()
  out = S.DirectorSampler(model, SAMPLING).generate(TASK_IDS, TASK_MASK, 3)
  assert out.action_ids.shape == (3, 3, 4) and out.caption_ids.shape == (3, 3, 5)
  assert out.visual_embedding.shape == (3, 3, K, DIM)
  lengths = np.concatenate(
    [np.asarray(out.action_mask).sum(-1), np.asarray(out.caption_mask).sum(-1)]
  )
  assert (lengths < np.array([4] * 3 + [5] * 3)[:, None]).any(), "no segment ended early"
  assert (lengths > 0).any()
  batch = dict(
    task_ids=TASK_IDS,
    task_mask=TASK_MASK,
    action_ids=out.action_ids,
    action_mask=out.action_mask,
    caption_ids=out.caption_ids,
    caption_mask=out.caption_mask,
    step_mask=np.ones((3, 3), bool),
    visual_embedding=out.visual_embedding,
  )
  ref = jax.jit(lambda m, b: m(b))(model, batch)
  np.testing.assert_allclose(
    np.asarray(out.visual_embedding), np.asarray(ref.visual), rtol=1e-4, atol=1e-5
  )
  # Text: greedy choice (markup other than the segment's close banned) == next token,
  # except where the close was forced by the length limit.
  logits = np.array(ref.text_logits)
  n_a = 4 + 1
  logits[..., :n_a, [4, 6, 7, 8, 9, 1]] = -np.inf
  logits[..., n_a:, [4, 5, 6, 8, 9, 1]] = -np.inf
  forced = np.zeros(logits.shape[:3], bool)
  forced[..., n_a - 1] = np.asarray(out.action_mask).all(-1)
  forced[..., -1] = np.asarray(out.caption_mask).all(-1)
  check = np.asarray(ref.text_mask) & ~forced
  np.testing.assert_array_equal(logits.argmax(-1)[check], np.asarray(ref.text_targets)[check])


@pytest.mark.integration
def test_loops_agree_and_never_recompile_per_token():
  model = make_director()
  device = S.DirectorSampler(model, SAMPLING, loop="device")
  host = S.DirectorSampler(model, SAMPLING, loop="host")
  key = jax.random.key(3)
  a = device.generate(TASK_IDS, TASK_MASK, 2, key)
  b = host.generate(TASK_IDS, TASK_MASK, 2, key)
  for name in ("action_ids", "action_mask", "caption_ids", "caption_mask"):
    np.testing.assert_array_equal(np.asarray(getattr(a, name)), np.asarray(getattr(b, name)))
  np.testing.assert_allclose(
    np.asarray(a.visual_embedding), np.asarray(b.visual_embedding), rtol=1e-5, atol=1e-6
  )
  host.generate(TASK_IDS[::-1], TASK_MASK[::-1], 2, jax.random.key(4))
  # One compiled token step per segment kind (action, caption), however many tokens.
  assert host._token._cache_size() == 2
  assert host._visual._cache_size() == 1
  device.generate(TASK_IDS[::-1], TASK_MASK[::-1], 2, jax.random.key(4))
  assert device._generate._cache_size() == 1


@pytest.mark.integration
def test_sampled_stories_are_well_formed_and_seeded():
  model = make_director()
  sampler = S.DirectorSampler(
    model, S.Sampling(temperature=1.0, top_p=0.9, max_action_tokens=4, max_caption_tokens=5)
  )
  a = sampler.generate(TASK_IDS, TASK_MASK, 2, jax.random.key(0))
  b = sampler.generate(TASK_IDS, TASK_MASK, 2, jax.random.key(0))
  c = sampler.generate(TASK_IDS, TASK_MASK, 2, jax.random.key(1))
  np.testing.assert_array_equal(np.asarray(a.caption_ids), np.asarray(b.caption_ids))
  assert not np.array_equal(np.asarray(a.caption_ids), np.asarray(c.caption_ids))
  for ids, mask in ((a.action_ids, a.action_mask), (a.caption_ids, a.caption_mask)):
    ids, mask = np.asarray(ids), np.asarray(mask)
    assert not np.isin(ids[mask], [1, 4, 5, 6, 7, 8, 9]).any()  # No markup inside text.
    assert (np.sort(mask, -1)[..., ::-1] == mask).all()  # Right-padded.
    assert (ids[~mask] == 0).all()


def test_sample_token_top_p_temperature_and_bans():
  logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))
  keys = jax.random.split(jax.random.key(0), 2000)
  draw = jax.jit(
    jax.vmap(lambda k, s: S.sample_token(logits, k, s)[0], in_axes=(0, None)), static_argnums=1
  )
  greedy = np.asarray(draw(keys, S.Sampling(temperature=1.0, top_p=0.01)))
  assert (greedy == 0).all()  # The nucleus is the top token alone.
  nucleus = np.asarray(draw(keys, S.Sampling(temperature=1.0, top_p=0.7)))
  counts = np.bincount(nucleus, minlength=4) / len(nucleus)
  assert counts[2] == counts[3] == 0  # 0.5 + 0.3 reach 0.7: tokens 2, 3 cut.
  assert counts[0] == pytest.approx(0.5 / 0.8, abs=0.04)
  full = np.bincount(np.asarray(draw(keys, S.Sampling(temperature=1.0))), minlength=4) / 2000
  np.testing.assert_allclose(full, [0.5, 0.3, 0.15, 0.05], atol=0.04)
  banned = S.sample_token(logits, keys[0], S.Sampling(), banned=(0,))
  assert int(banned[0]) == 1
  with pytest.raises(ValueError, match="top_p"):
    S.Sampling(top_p=0.0)
  with pytest.raises(ValueError, match="loop must be one of"):
    S.DirectorSampler(make_director(), SAMPLING, loop="gpu")
