"""Vision towers: parity with HF CLIP / SigLIP, the resampler, converter errors."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from transformers import (
  CLIPConfig,
  CLIPModel,
  CLIPVisionConfig,
  CLIPVisionModelWithProjection,
  SiglipVisionConfig,
  SiglipVisionModel,
)

from auteur_jax.checkpoint.errors import WeightError
from auteur_jax.convert.hf_vision import load_hf_vision
from auteur_jax.models import vision as VIS

SHAPE = dict(
  hidden_size=32,
  intermediate_size=64,
  num_hidden_layers=3,
  num_attention_heads=4,
  image_size=32,
  patch_size=8,
)


def _perturbed(model):
  torch.manual_seed(1)
  with torch.no_grad():  # Random norms / biases / embeddings, not HF's ones and zeros.
    for p in model.parameters():
      p.add_(0.05 * torch.randn_like(p))
  return model.eval()


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
  torch.manual_seed(0)
  ref = _perturbed(CLIPVisionModelWithProjection(CLIPVisionConfig(**SHAPE, projection_dim=16)))
  path = str(tmp_path_factory.mktemp("clip_vision"))
  ref.save_pretrained(path)
  return ref, path


@pytest.fixture(scope="module")
def siglip(tmp_path_factory):
  torch.manual_seed(0)
  # 36 px with 8 px patches: a 4 x 4 grid, the remainder dropped (as so400m's 384 / 14).
  ref = _perturbed(SiglipVisionModel(SiglipVisionConfig(**dict(SHAPE, image_size=36))))
  path = str(tmp_path_factory.mktemp("siglip_vision"))
  ref.save_pretrained(path)
  return ref, path


def _images(seed=0):
  x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
  return x, jnp.asarray(x.permute(0, 2, 3, 1).numpy())


def _close(ours, theirs):
  np.testing.assert_allclose(np.asarray(ours), theirs.detach().numpy(), atol=1e-4, rtol=1e-4)


@pytest.mark.integration
def test_clip_vision_parity(clip):
  ref, path = clip
  tower = load_hf_vision(path)
  xt, xj = _images()
  with torch.no_grad():
    out = ref(pixel_values=xt, output_hidden_states=True)
  hidden, pooled = tower(xj)
  assert hidden.shape == (2, 17, 32) and pooled.shape == (2, 16)
  _close(hidden, out.last_hidden_state)
  _close(pooled, out.image_embeds)
  for layer in (0, 1, -2):
    _close(tower.hidden(xj, layer), out.hidden_states[layer])


@pytest.mark.integration
def test_siglip_vision_parity(siglip):
  ref, path = siglip
  tower = load_hf_vision(path)
  xt = torch.randn(2, 3, 36, 36, generator=torch.Generator().manual_seed(1))
  xj = jnp.asarray(xt.permute(0, 2, 3, 1).numpy())
  with torch.no_grad():
    out = ref(pixel_values=xt, output_hidden_states=True)
  hidden, pooled = tower(xj)
  assert hidden.shape == (2, 16, 32) and pooled.shape == (2, 32)
  _close(hidden, out.last_hidden_state)
  _close(pooled, out.pooler_output)
  _close(tower.hidden(xj, -2), out.hidden_states[-2])


def test_vision_half_of_a_full_clip_model(tmp_path):
  torch.manual_seed(0)
  full = _perturbed(
    CLIPModel(
      CLIPConfig(
        vision_config=dict(SHAPE),
        projection_dim=16,
        text_config=dict(
          hidden_size=32,
          intermediate_size=64,
          num_hidden_layers=1,
          num_attention_heads=4,
          vocab_size=64,
          max_position_embeddings=8,
        ),
      )
    )
  )
  full.save_pretrained(tmp_path)
  tower = load_hf_vision(str(tmp_path))  # Text tensors and logit_scale are skipped.
  xt, xj = _images(2)
  with torch.no_grad():
    ref = full.get_image_features(pixel_values=xt)
  _close(tower.embed_images(xj), getattr(ref, "pooler_output", ref))


def test_avgpool_resampler_shapes_and_means():
  assert VIS.adaptive_pool_matrix(4, 2).tolist() == [[0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5]]
  # Non-divisible grids pool overlapping bins, as torch's adaptive_avg_pool2d does.
  np.testing.assert_allclose(VIS.adaptive_pool_matrix(3, 2), [[0.5, 0.5, 0], [0, 0.5, 0.5]])
  cfg = VIS.VisionConfig(
    family="siglip",
    image_size=32,
    patch_size=8,
    width=8,
    depth=1,
    num_heads=2,
    mlp_dim=16,
    num_tokens=4,
    feature_layer=-1,
  )
  with nnx.use_eager_sharding(False):
    tower = VIS.VisionTower(cfg, rngs=nnx.Rngs(0))
  tokens = jnp.arange(2 * 16 * 8, dtype=jnp.float32).reshape(2, 16, 8)  # 4 x 4 grid.
  pooled = np.asarray(tower.resample(tokens))
  assert pooled.shape == (2, 4, 8)
  grid = np.asarray(tokens).reshape(2, 4, 4, 8)
  np.testing.assert_allclose(pooled[:, 0], grid[:, :2, :2].mean((1, 2)))  # Top-left.
  np.testing.assert_allclose(pooled[:, 3], grid[:, 2:, 2:].mean((1, 2)))  # Bottom-right.
  images = jax.random.normal(jax.random.key(0), (3, 32, 32, 3))
  assert tower.visual_tokens(images).shape == (3, 4, 8)
  with pytest.raises(ValueError, match="square number"):
    VIS.VisionConfig(num_tokens=60)
  with pytest.raises(ValueError, match="images must be \\[B, 32, 32, 3\\]"):
    tower.visual_tokens(jnp.zeros((1, 16, 16, 3)))


def test_visual_tokens_from_a_converted_clip_tower(clip):
  ref, path = clip
  _, xj = _images(3)
  tower = load_hf_vision(path, feature_layer=-2, num_tokens=4, project_tokens=True)
  with torch.no_grad():
    hs = ref(
      pixel_values=torch.from_numpy(np.array(xj)).permute(0, 3, 1, 2), output_hidden_states=True
    ).hidden_states[-2]
  grid = hs[:, 1:].reshape(2, 4, 4, 32)  # Patch tokens of the penultimate block.
  pooled = torch.nn.functional.adaptive_avg_pool2d(grid.permute(0, 3, 1, 2), 2)
  pooled = pooled.permute(0, 2, 3, 1).reshape(2, 4, 32)
  vm = ref.vision_model
  with torch.no_grad():
    expected = ref.visual_projection(vm.post_layernorm(pooled))
  got = tower.visual_tokens(xj)
  assert got.shape == (2, 4, 16) and tower.cfg.out_dim == 16
  _close(got, expected)
  attn = load_hf_vision(path, resampler="attention", num_tokens=5)  # Fresh, not converted.
  assert attn.visual_tokens(xj).shape == (2, 5, 32)
  np.testing.assert_allclose(np.asarray(attn.hidden(xj, -1)), np.asarray(tower.hidden(xj, -1)))


def test_vision_converter_errors(clip, tmp_path):
  _, path = clip
  with open(os.path.join(path, "config.json")) as f:
    config = json.load(f)
  os.symlink(os.path.join(path, "model.safetensors"), tmp_path / "model.safetensors")
  (tmp_path / "config.json").write_text(json.dumps(dict(config, intermediate_size=48)))
  shapes = "mlp.fc1.weight' has shape \\(64, 32\\), the config expects \\(48, 32\\)"
  with pytest.raises(WeightError, match=shapes):
    load_hf_vision(str(tmp_path))
  (tmp_path / "config.json").write_text(json.dumps(dict(config, num_hidden_layers=2)))
  with pytest.raises(WeightError, match="not used by this model config.*encoder.layers.2"):
    load_hf_vision(str(tmp_path))
  (tmp_path / "config.json").write_text(json.dumps(dict(config, model_type="vit")))
  with pytest.raises(WeightError, match="model_type 'vit'"):
    load_hf_vision(str(tmp_path))
