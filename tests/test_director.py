"""The interleaved director: masked queries == last-step-only passes, losses, chains, mesh."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from auteur_jax.config import load_config
from auteur_jax.models import director as D
from auteur_jax.models import llm as L
from auteur_jax.parallel import rules as R
from auteur_jax.parallel.mesh import make_mesh

LLM_CFG = L.LLMConfig(
  vocab_size=48, width=32, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8, mlp_dim=48
)
MARKUP = D.MarkupIds(4, 5, 6, 7, 8, 9, bos=1)
K, DIM = 3, 6


def make_cfg(chain="action_caption_visual", **kw):
  return D.DirectorConfig(LLM_CFG, MARKUP, K, DIM, chain=chain, **kw)


def make_model(cfg, seed=0):
  with nnx.use_eager_sharding(False):
    return D.Director(cfg, rngs=nnx.Rngs(seed))


def make_batch(b=2, s=3, la=4, lc=5, seed=0):
  """Right-padded stories with varied lengths, an empty action and a padded last step."""
  rng = np.random.default_rng(seed)
  al = rng.integers(1, la + 1, (b, s))
  al[0, 1] = 0
  cl = rng.integers(1, lc + 1, (b, s))
  step = np.ones((b, s), bool)
  step[-1, -1] = False
  return dict(
    task_ids=rng.integers(10, 48, (b, la)).astype(np.int32),
    task_mask=np.arange(la)[None] < rng.integers(1, la + 1, (b, 1)),
    action_ids=rng.integers(10, 48, (b, s, la)).astype(np.int32),
    action_mask=np.arange(la) < al[..., None],
    caption_ids=rng.integers(10, 48, (b, s, lc)).astype(np.int32),
    caption_mask=np.arange(lc) < cl[..., None],
    step_mask=step,
    visual_embedding=rng.normal(size=(b, s, K, DIM)).astype(np.float32),
  )


@jax.jit
def forward(model, batch):
  return model(batch)


@jax.jit
def compact_pass(model, x, valid):
  """Plain causal LLM pass over right-padded compact sequences -> hidden states."""
  h, _ = model.llm(x, L.positions_from_valid(valid), L.causal_mask(valid))
  return h


def last_step_sequences(model, batch, row, t):
  """Embeddings of `history (true z) + step t up to its K queries`, no padding inside,
  plus the offsets of step t's text slots (opener, content...) in that sequence."""
  cfg = model.cfg
  emb = lambda ids: model.llm.embed_tokens(jnp.asarray([ids], jnp.int32))[0]  # noqa: E731
  prefix = ([cfg.markup.bos] if cfg.markup.bos is not None else []) + [
    int(i) for i, m in zip(batch["task_ids"][row], batch["task_mask"][row]) if m
  ]
  parts = [emb(prefix)]
  n = len(prefix)
  text_slots = []
  for u in range(t + 1):
    for name in cfg.segments:
      open_, close = cfg.markup.segment(name)
      ids = [
        int(i) for i, m in zip(batch[f"{name}_ids"][row, u], batch[f"{name}_mask"][row, u]) if m
      ]
      if u == t:
        text_slots += list(range(n, n + 1 + len(ids)))
      parts.append(emb([open_] + ids + [close]))
      n += len(ids) + 2
    parts.append(emb([cfg.markup.img]))
    n += 1
    if u < t:
      parts += [
        model.encode_visual(jnp.asarray(batch["visual_embedding"][row, u])),
        emb([cfg.markup.img_end]),
      ]
      n += K + 1
  parts.append(model.query_embeddings())
  return jnp.concatenate(parts, 0), text_slots


@pytest.mark.integration
@pytest.mark.parametrize("chain", sorted(D.CHAINS))
def test_masked_queries_equal_last_step_only_passes(chain):
  model = make_model(make_cfg(chain))
  batch = make_batch()
  out = forward(model, batch)
  seqs, slots, where = [], [], []
  for row in range(2):
    for t in range(3):
      if batch["step_mask"][row, t]:
        x, text_slots = last_step_sequences(model, batch, row, t)
        seqs.append(x)
        slots.append(text_slots)
        where.append((row, t))
  length = max(len(x) for x in seqs)
  x = jnp.stack([jnp.pad(s, ((0, length - len(s)), (0, 0))) for s in seqs])
  valid = jnp.arange(length)[None] < jnp.asarray([len(s) for s in seqs])[:, None]
  h = compact_pass(model, x, valid)
  for i, (row, t) in enumerate(where):
    n = len(seqs[i])
    want_z = model.decode_visual(h[i, n - K : n])
    np.testing.assert_allclose(
      np.asarray(out.visual[row, t]),
      np.asarray(want_z),
      rtol=1e-4,
      atol=1e-5,
      err_msg=f"z_hat row {row} step {t}",
    )
    # Text: the loss-carrying slots of step t, in order, are the compact text slots.
    got = np.asarray(out.text_logits[row, t])[np.asarray(out.text_mask[row, t])]
    want = np.asarray(model.llm.logits(h[i, jnp.asarray(slots[i])]))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=f"text row {row} step {t}")


def test_segment_targets_and_loss_mask():
  ids = jnp.array([[11, 12, 13, 0], [0, 0, 0, 0]])
  mask = jnp.array([[True, True, True, False], [False] * 4])
  targets, source = D.segment_targets(ids, mask, close=5)
  np.testing.assert_array_equal(np.asarray(targets), [[11, 12, 13, 5, 5], [5, 5, 5, 5, 5]])
  np.testing.assert_array_equal(np.asarray(source), [[1, 1, 1, 1, 0], [1, 0, 0, 0, 0]])


def test_chains_ignore_what_they_leave_out():
  batch = make_batch()
  other = dict(
    batch, action_ids=(batch["action_ids"] + 7) % 48, caption_ids=(batch["caption_ids"] + 7) % 48
  )
  for chain, changed in [("caption_visual", "action_ids"), ("action_visual", "caption_ids")]:
    model = make_model(make_cfg(chain))
    a = forward(model, batch).visual
    b = forward(model, dict(batch, **{changed: other[changed]})).visual
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  model = make_model(make_cfg())
  a = forward(model, batch).visual
  assert not np.allclose(np.asarray(a), np.asarray(forward(model, other).visual))
  # z_t is an input of later steps only: changing the last step's z changes nothing.
  z = batch["visual_embedding"].copy()
  z[:, -1] += 1.0
  with_z = lambda z: np.asarray(forward(model, dict(batch, visual_embedding=z)).visual)  # noqa: E731
  np.testing.assert_array_equal(np.asarray(a), with_z(z))
  z[:, 0] += 1.0
  assert not np.allclose(np.asarray(a[:, 1:]), with_z(z)[:, 1:])


@pytest.mark.integration
def test_loss_decreases_when_overfitting_one_batch():
  model = make_model(make_cfg(alpha=1.0, beta=0.5))
  batch = make_batch(seed=3)
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  opt = optax.adam(1e-2)

  @jax.jit
  def step(params, opt_state):
    def loss_fn(p):
      return nnx.merge(graphdef, p, rest).loss(batch)

    (loss, parts), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, parts

  opt_state = opt.init(params)
  history = []
  for _ in range(60):
    params, opt_state, parts = step(params, opt_state)
    history.append(jax.tree.map(float, parts))
  first, last = history[0], history[-1]
  assert last["loss"] < 0.3 * first["loss"], (first, last)
  for key in ("text_ce", "visual_cos", "visual_mse"):
    assert last[key] < 0.5 * first[key], (key, first[key], last[key])
  assert last["text_acc"] > 0.9
  want = 1.0 * last["text_ce"] + 1.0 * last["visual_cos"] + 0.5 * last["visual_mse"]
  assert last["loss"] == pytest.approx(want, rel=1e-5)


@pytest.mark.integration
def test_sharded_forward_equals_single_device():
  cfg = make_cfg()
  batch = make_batch(b=4, seed=5)
  ref = forward(make_model(cfg), batch)
  mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  with R.use_mesh(mesh):
    model = D.Director(cfg, rngs=nnx.Rngs(0))
    out = forward(model, batch)
  assert tuple(model.llm.layers.mlp.gate[...].sharding.spec) == (None, "fsdp", "tensor")
  assert len(model.llm.embed[...].addressable_shards) == 8
  for a, b in zip(out, ref):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)


def test_batch_and_config_errors_name_the_key():
  model = make_model(make_cfg())
  batch = make_batch()
  with pytest.raises(KeyError, match="visual_embedding.*embedding_shape"):
    model({k: v for k, v in batch.items() if k != "visual_embedding"})
  with pytest.raises(
    ValueError,
    match=r"visual_embedding'\] has shape \(2, 3, 3, 5\), "
    r"expected \(2, 3, 3, 6\)",
  ):
    model(dict(batch, visual_embedding=batch["visual_embedding"][..., :5]))
  with pytest.raises(ValueError, match=r"caption_mask'\] has shape"):
    model(dict(batch, caption_mask=batch["caption_mask"][..., :2]))
  with pytest.raises(ValueError, match="config.model.chain"):
    make_cfg("visual_action")
  with pytest.raises(ValueError, match="outside the vocabulary"):
    D.DirectorConfig(LLM_CFG, dataclasses.replace(MARKUP, img_end=48), K, DIM)


class _Tok:
  bos_id = 1

  def special_id(self, name):
    return {
      "<action>": 4,
      "</action>": 5,
      "<caption>": 6,
      "</caption>": 7,
      "<img>": 8,
      "</img>": 9,
    }[name]


def test_configs_build():
  assert D.MarkupIds.from_tokenizer(_Tok()) == MARKUP
  toy = load_config("toy/director")
  cfg = D.DirectorConfig.from_config(toy.model)
  assert toy.task == "director" and toy.data.kind == "stories"
  assert tuple(toy.data.embedding_shape) == (cfg.num_queries, cfg.visual_dim)
  assert D.MarkupIds.from_tokenizer(_Tok()) == cfg.markup  # The ids train_bpe gives.
  paper = load_config("paper/director_7b")
  pcfg = D.DirectorConfig.from_config(paper.model)
  assert (pcfg.num_queries, pcfg.visual_dim, pcfg.llm.width) == (64, 4096, 4096)
  with nnx.use_eager_sharding(False):
    abstract = nnx.eval_shape(lambda: D.Director(pcfg, rngs=nnx.Rngs(0)))
  llm_params = sum(x.size for x in jax.tree.leaves(nnx.state(abstract.llm, nnx.Param)))
  # Llama-2-7B: 6,738,415,616 parameters with 32,000 rows; 128 more rows of 2 x 4096.
  assert llm_params == 6_738_415_616 + 128 * 2 * 4096
  with pytest.raises(ValueError, match="config.model: missing key 'visual_dim'"):
    D.DirectorConfig.from_config({k: v for k, v in toy.model.items() if k != "visual_dim"})
  with pytest.raises(ValueError, match=r"config.model.markup: unknown key 'bos_id'"):
    D.DirectorConfig.from_config({**toy.model, "markup": {**toy.model.markup, "bos_id": 1}})
