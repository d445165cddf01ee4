"""VideoMAE encoder: parity with HF transformers' VideoMAE on tiny random configs."""

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from transformers import VideoMAEConfig, VideoMAEForVideoClassification, VideoMAEModel

from auteur_jax.checkpoint.errors import WeightError
from auteur_jax.convert.hf_videomae import load_hf_videomae

SHAPE = dict(
  image_size=32,
  patch_size=8,
  num_frames=4,
  tubelet_size=2,
  hidden_size=32,
  num_hidden_layers=2,
  num_attention_heads=4,
  intermediate_size=64,
)


def _perturbed(model):
  torch.manual_seed(1)
  with torch.no_grad():  # Random norms and biases, not HF's ones and zeros.
    for p in model.parameters():
      p.add_(0.05 * torch.randn_like(p))
  return model.eval()


def _videos(seed=0):
  x = torch.randn(2, 4, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
  return x, jnp.asarray(x.permute(0, 1, 3, 4, 2).numpy())  # [B, T, C, H, W] -> [B, T, H, W, C]


def _close(ours, theirs):
  np.testing.assert_allclose(np.asarray(ours), theirs.detach().numpy(), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("mean_pooling", [True, False])
def test_videomae_model_parity(tmp_path, mean_pooling):
  torch.manual_seed(0)
  ref = _perturbed(VideoMAEModel(VideoMAEConfig(**SHAPE, use_mean_pooling=mean_pooling)))
  ref.save_pretrained(tmp_path)
  ours = load_hf_videomae(str(tmp_path))
  assert ours.cfg.use_mean_pooling == mean_pooling and not ours.cfg.fc_norm
  xt, xj = _videos()
  with torch.no_grad():
    hidden = ref(pixel_values=xt).last_hidden_state
  assert hidden.shape == (2, 32, 32)
  _close(ours(xj), hidden)
  _close(ours.features(xj), hidden.mean(1))


def test_videomae_classification_fc_norm_parity(tmp_path):
  torch.manual_seed(0)
  ref = _perturbed(VideoMAEForVideoClassification(VideoMAEConfig(**SHAPE, num_labels=3)))
  ref.save_pretrained(tmp_path)
  ours = load_hf_videomae(str(tmp_path))  # videomae. prefix; the classifier is skipped.
  assert ours.cfg.fc_norm
  xt, xj = _videos(1)
  with torch.no_grad():
    pooled = ref.fc_norm(ref.videomae(pixel_values=xt).last_hidden_state.mean(1))
  _close(ours.features(xj), pooled)


def test_videomae_converter_refuses_other_models(tmp_path):
  torch.manual_seed(0)
  VideoMAEModel(VideoMAEConfig(**SHAPE)).save_pretrained(tmp_path)
  with pytest.raises(WeightError, match="missing"):
    load_hf_videomae(str(tmp_path), use_mean_pooling=False)  # No layernorm.* in the file.


def test_videomae_fvd_features_from_a_converted_checkpoint(tmp_path):
  from auteur_jax.convert.importer import import_weights
  from auteur_jax.eval import video_features
  from auteur_jax.eval.fvd import fvd

  torch.manual_seed(0)
  ref = _perturbed(VideoMAEModel(VideoMAEConfig(**SHAPE)))
  ref.save_pretrained(tmp_path / "hf")
  import_weights("videomae", str(tmp_path / "hf"), str(tmp_path / "ckpt"), progress=False)
  extract = video_features.get("videomae", checkpoint=str(tmp_path / "ckpt"))
  rng = np.random.default_rng(0)
  videos = [rng.integers(0, 256, (6, 32, 40, 3), dtype=np.uint8) for _ in range(3)]
  feats = extract(videos)  # 4 of 6 frames evenly spaced, the centre 32 x 32.
  x = np.stack([v[[0, 2, 3, 5], :, 4:36] for v in videos])
  x = (x / 255.0 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
  with torch.no_grad():
    pixels = torch.from_numpy(x.transpose(0, 1, 4, 2, 3).astype(np.float32))
    want = ref(pixel_values=pixels).last_hidden_state.mean(1)
  assert feats.shape == (3, 32)
  np.testing.assert_allclose(feats, want.numpy(), atol=1e-4, rtol=1e-4)
  assert fvd(videos, videos, extract) == pytest.approx(0.0, abs=1e-6)
  with pytest.raises(video_features.FeatureError, match="HF folder; convert it first"):
    video_features.get("videomae", checkpoint=str(tmp_path / "hf"))
