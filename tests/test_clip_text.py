"""CLIP text tower parity with HF, the contrastive losses, and the toy ClipModel."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from flax import nnx
from transformers import CLIPTextConfig, CLIPTextModelWithProjection

from auteur_jax.convert.hf_text import load_hf_clip_text
from auteur_jax.models import clip_text as CT
from auteur_jax.models.vision import VisionConfig

SHAPE = dict(
  hidden_size=32,
  intermediate_size=64,
  num_hidden_layers=2,
  num_attention_heads=4,
  vocab_size=100,
  max_position_embeddings=16,
  projection_dim=16,
)


def _reference(tmp_path, **extra):
  torch.manual_seed(0)
  ref = CLIPTextModelWithProjection(CLIPTextConfig(**SHAPE, **extra))
  with torch.no_grad():
    for p in ref.parameters():
      p.add_(0.05 * torch.randn_like(p))
  ref.eval().save_pretrained(tmp_path)
  return ref


# 2: OpenAI's legacy configs, pooled at argmax(ids) (here the bos 98 at position 0).
@pytest.mark.parametrize("eos", [50, 2])
def test_clip_text_parity(tmp_path, eos):
  ref = _reference(tmp_path, eos_token_id=eos, bos_token_id=98, pad_token_id=0)
  tower = load_hf_clip_text(str(tmp_path))
  assert tower.cfg.eos_token_id == eos and tower.cfg.pool_argmax == (eos == 2)
  # Right-padded rows ending in the end-of-text token 50 (not the largest id).
  ids = torch.tensor([[98, 5, 6, 7, 50, 0, 0, 0], [98, 9, 10, 11, 12, 13, 14, 50]])
  mask = torch.tensor([[1] * 5 + [0] * 3, [1] * 8])
  with torch.no_grad():
    out = ref(input_ids=ids, attention_mask=mask)
  hidden, pooled = tower(jnp.asarray(ids.numpy()), jnp.asarray(mask.numpy()))
  theirs = out.last_hidden_state.numpy()
  # Padded positions' states are not used by anyone; compare the real tokens.
  np.testing.assert_allclose(np.asarray(hidden)[0, :5], theirs[0, :5], atol=1e-4, rtol=1e-4)
  np.testing.assert_allclose(np.asarray(hidden)[1], theirs[1], atol=1e-4, rtol=1e-4)
  np.testing.assert_allclose(np.asarray(pooled), out.text_embeds.numpy(), atol=1e-4, rtol=1e-4)
  with pytest.raises(ValueError, match="max_len=16"):
    tower(jnp.zeros((1, 17), jnp.int32))


def test_clip_loss_hand_computed():
  img = jnp.array([[2.0, 0.0], [0.0, 3.0]])  # Normalised inside: the identity.
  txt = jnp.array([[1.0, 0.0], [0.0, 0.5]])
  # logits = exp(log 2) * I = [[2, 0], [0, 2]]; every row and column has CE
  # -log(e^2 / (e^2 + e^0)) = log(1 + e^-2).
  got = CT.clip_loss(img, txt, jnp.log(2.0))
  np.testing.assert_allclose(float(got), math.log(1 + math.exp(-2)), rtol=1e-6)
  # Swapping the texts makes the off-diagonal pairs the matches: CE log(1 + e^2).
  got = CT.clip_loss(img, txt[::-1], jnp.log(2.0))
  np.testing.assert_allclose(float(got), math.log(1 + math.exp(2)), rtol=1e-6)
  # Asymmetric case: txt = [[1, 0], [1, 1]/sqrt 2]; scale 1.
  txt = jnp.array([[1.0, 0.0], [1.0, 1.0]])
  c = 1 / math.sqrt(2)
  logits = np.array([[1.0, c], [0.0, c]])
  i2t = np.mean([-logits[i, i] + np.log(np.exp(logits[i]).sum()) for i in range(2)])
  t2i = np.mean([-logits[i, i] + np.log(np.exp(logits[:, i]).sum()) for i in range(2)])
  np.testing.assert_allclose(
    float(CT.clip_loss(img, txt, jnp.log(1.0))), (i2t + t2i) / 2, rtol=1e-6
  )


def test_sigmoid_loss_hand_computed():
  img = jnp.eye(2)
  # logits = 2 I - 1: the diagonal 1 with label +1, off-diagonal -1 with label -1, so
  # all four terms are -log sigmoid(1); summed and divided by B = 2.
  got = CT.sigmoid_loss(img, img, jnp.log(2.0), jnp.asarray(-1.0))
  np.testing.assert_allclose(float(got), 2 * math.log(1 + math.exp(-1)), rtol=1e-6)


@pytest.mark.integration
@pytest.mark.parametrize("loss", ["softmax", "sigmoid"])
def test_clip_model_learns_to_pair(loss):
  vision = VisionConfig(
    family="clip",
    image_size=16,
    patch_size=8,
    width=16,
    depth=1,
    num_heads=2,
    mlp_dim=32,
    projection_dim=8,
    num_tokens=4,
  )
  text = CT.TextConfig(
    vocab_size=20,
    width=16,
    depth=1,
    num_heads=2,
    mlp_dim=32,
    max_len=6,
    projection_dim=8,
    eos_token_id=19,
  )
  with nnx.use_eager_sharding(False):
    model = CT.ClipModel(vision, text, loss=loss, rngs=nnx.Rngs(0))
  images = jax.random.normal(jax.random.key(1), (4, 16, 16, 3))
  ids = jnp.array(
    [[1, 2, 19, 0, 0, 0], [3, 4, 5, 19, 0, 0], [6, 19, 0, 0, 0, 0], [7, 8, 9, 10, 19, 0]]
  )
  mask = (ids > 0).astype(jnp.int32)
  opt = nnx.Optimizer(model, optax.adam(3e-3), wrt=nnx.Param)

  @nnx.jit
  def step(model, opt):
    loss_value, grads = nnx.value_and_grad(lambda m: m.loss(images, ids, mask))(model)
    opt.update(model, grads)
    return loss_value

  first = float(step(model, opt))
  for _ in range(12):
    last = float(step(model, opt))
  assert last < 0.5 * first, (first, last)
  with pytest.raises(ValueError, match="width 8, text embeddings 16"):
    CT.ClipModel(
      vision, CT.TextConfig(projection_dim=0, width=16, depth=1, num_heads=2), rngs=nnx.Rngs(0)
    )
