"""Causal video VAE: parity with diffusers' AutoencoderKLWan, chunked streams, conv forms."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import AutoencoderKLWan
from flax import nnx

from auteur_jax.checkpoint.errors import WeightError
from auteur_jax.convert.diffusers_vae import load_diffusers_vae
from auteur_jax.models import vae as V
from auteur_jax.models import vae_ops as ops

TINY = dict(
  base_dim=8,
  z_dim=4,
  dim_mult=[1, 2, 2, 2],
  num_res_blocks=1,
  temperal_downsample=[False, True, True],
  latents_mean=[0.0] * 4,
  latents_std=[1.0] * 4,
)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """A tiny random AutoencoderKLWan (norm scales and biases perturbed) and its folder."""
  torch.manual_seed(0)
  ref = AutoencoderKLWan(**TINY).eval()
  with torch.no_grad():
    for name, p in ref.named_parameters():
      if name.endswith(("gamma", "bias")):
        p.add_(0.1 * torch.randn_like(p))
  path = str(tmp_path_factory.mktemp("wan_vae"))
  ref.save_pretrained(path)
  return ref, path, load_diffusers_vae(path)


def _ours(x: torch.Tensor) -> jax.Array:
  return jnp.asarray(x.permute(0, 2, 3, 4, 1).numpy())


def _theirs(x: torch.Tensor) -> np.ndarray:
  return x.permute(0, 2, 3, 4, 1).numpy()


@pytest.mark.parametrize("frames", [1, 5])
def test_parity_encode_decode(reference, frames):
  ref, _, model = reference
  torch.manual_seed(frames)
  x = torch.rand(2, 3, frames, 16, 16) * 2 - 1
  with torch.no_grad():
    post = ref.encode(x).latent_dist
    rec = ref.decode(post.mean).sample
  mean, logvar = V.encode(model, _ours(x))
  assert mean.shape == (2, 1 + (frames - 1) // 4, 2, 2, 4)
  np.testing.assert_allclose(np.asarray(mean), _theirs(post.mean), atol=1e-4, rtol=1e-4)
  np.testing.assert_allclose(np.asarray(logvar), _theirs(post.logvar), atol=1e-4, rtol=1e-4)
  out = V.decode(model, mean)
  assert out.shape == (2, frames, 16, 16, 3)
  np.testing.assert_allclose(np.asarray(out), _theirs(rec), atol=1e-4, rtol=1e-4)
  assert np.abs(_theirs(rec)).mean() > 0.05  # Not a trivially zero output.


@pytest.mark.integration
def test_chunked_streams_parity_and_whole_clip(reference):
  """9 frames (4k + 1, two temporal steps): streamed encode and whole / streamed decode.

  Shapes are shared with the parity tests (batch 2, 16 x 16), so the head chunks reuse
  their compiled programs and only the continuation chunks and the whole decode compile.
  """
  ref, _, model = reference
  torch.manual_seed(9)
  x = torch.rand(2, 3, 9, 16, 16) * 2 - 1
  with torch.no_grad():
    post = ref.encode(x).latent_dist
    rec = ref.decode(post.mean).sample
  mean, logvar = V.encode(model, _ours(x), chunk_frames=4)  # Frames [0, 5) then [5, 9).
  np.testing.assert_allclose(np.asarray(mean), _theirs(post.mean), atol=1e-4, rtol=1e-4)
  np.testing.assert_allclose(np.asarray(logvar), _theirs(post.logvar), atol=1e-4, rtol=1e-4)
  whole = V.decode(model, mean)
  assert whole.shape == (2, 9, 16, 16, 3)
  np.testing.assert_allclose(np.asarray(whole), _theirs(rec), atol=1e-4, rtol=1e-4)
  chunked = V.decode(model, mean, chunk_frames=1)  # Latents [0, 2) then [2, 3).
  np.testing.assert_allclose(np.asarray(chunked), np.asarray(whole), atol=1e-5)
  # The stream state matters: the last latent decoded from a fresh stream differs.
  cold, _ = model.decode_chunk(mean[:, 2:3], None)
  assert np.abs(np.asarray(cold)[:, :1] - np.asarray(whole)[:, 5:6]).max() > 1e-3


@pytest.mark.parametrize("impl", ["fold_in", "fold_out", "taps", "im2col", "tap_dots"])
@pytest.mark.parametrize("frames", [1, 4])
def test_conv_formulations_match_xla_conv3d(impl, frames):
  k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(k1, (2, frames, 6, 5, 4))
  prev = jax.random.normal(k2, (2, 2, 6, 5, 4))
  w = jax.random.normal(k3, (3, 3, 3, 4, 7))
  ref, ref_state = ops.causal_conv3d(x, prev, w, "xla3d")
  y, state = ops.causal_conv3d(x, prev, w, impl)
  np.testing.assert_allclose(np.asarray(y), np.asarray(ref), atol=1e-4, rtol=1e-5)
  np.testing.assert_array_equal(np.asarray(state), np.asarray(ref_state))
  np.testing.assert_array_equal(
    np.asarray(state), np.asarray(jnp.concatenate([prev, x], 1)[:, -2:])
  )


@pytest.mark.parametrize("impl", ["subpixel", "direct"])
def test_upsample_conv_equals_nearest_then_conv(impl):
  x = jax.random.normal(jax.random.key(0), (2, 5, 4, 3))
  w = jax.random.normal(jax.random.key(1), (3, 3, 3, 6))
  up = np.repeat(np.repeat(np.asarray(x), 2, 1), 2, 2)
  xt = torch.from_numpy(up).permute(0, 3, 1, 2)
  wt = torch.from_numpy(np.array(w)).permute(3, 2, 0, 1)
  ref = torch.nn.functional.conv2d(xt, wt, padding=1).permute(0, 2, 3, 1).numpy()
  np.testing.assert_allclose(np.asarray(ops.upsample2x_conv(x, w, impl)), ref, atol=1e-4)


def test_input_errors_and_kl(reference):
  _, _, model = reference
  with pytest.raises(ValueError, match="6 frames; the VAE takes 1 \\+ 4k frames"):
    V.encode(model, jnp.zeros((1, 6, 16, 16, 3)))
  with pytest.raises(ValueError, match="multiples of 8"):
    V.encode(model, jnp.zeros((1, 1, 12, 16, 3)))
  with pytest.raises(ValueError, match="chunk_frames must be a positive multiple of 4"):
    V.encode(model, jnp.zeros((1, 5, 16, 16, 3)), chunk_frames=3)
  with pytest.raises(ValueError, match="z_dim=4"):
    V.decode(model, jnp.zeros((1, 2, 2, 2, 3)))
  mean = jnp.array([[[1.0, 0.0]]])
  logvar = jnp.array([[[0.0, jnp.log(2.0)]]])
  # 0.5 * (1 + 1 - 1 - 0) + 0.5 * (0 + 2 - 1 - log 2)
  np.testing.assert_allclose(
    np.asarray(V.kl_divergence(mean, logvar)), [0.5 + 0.5 * (1 - np.log(2.0))], rtol=1e-6
  )
  cfg = V.VAEConfig(z_dim=2, latents_mean=(1.0, -1.0), latents_std=(2.0, 4.0))
  with nnx.use_eager_sharding(False):
    small = nnx.eval_shape(lambda: V.VideoVAE(cfg, rngs=nnx.Rngs(0)))
  z = jnp.array([3.0, 3.0])
  np.testing.assert_allclose(np.asarray(small.normalize(z)), [1.0, 1.0])
  np.testing.assert_allclose(np.asarray(small.denormalize(small.normalize(z))), [3.0, 3.0])


def test_converter_refuses_mismatches(reference, tmp_path):
  _, path, _ = reference
  with open(os.path.join(path, "config.json")) as f:
    config = json.load(f)
  bad = tmp_path / "bad"
  bad.mkdir()
  os.symlink(
    os.path.join(path, "diffusion_pytorch_model.safetensors"),
    bad / "diffusion_pytorch_model.safetensors",
  )
  (bad / "config.json").write_text(json.dumps(dict(config, z_dim=8, latents_mean=None)))
  with pytest.raises(WeightError, match="has shape .*, the config expects"):
    load_diffusers_vae(str(bad))
  config_2d = dict(config, temperal_downsample=[False, False, True])
  (bad / "config.json").write_text(json.dumps(config_2d))
  with pytest.raises(WeightError, match="not used by this model config.*time_conv"):
    load_diffusers_vae(str(bad))
  (bad / "config.json").write_text(json.dumps(dict(config, is_residual=True)))
  with pytest.raises(WeightError, match="is_residual"):
    load_diffusers_vae(str(bad))


@pytest.mark.integration
def test_inflated_image_weights_run_video_frame_by_frame():
  """After inflation a clip's first and last frames reconstruct as images do, and a
  static clip reconstructs every frame as its image."""
  cfg = V.VAEConfig(
    base_dim=8,
    z_dim=4,
    dim_mult=(1, 2, 2, 2),
    num_res_blocks=1,
    temporal_downsample=(False, True, True),
    latents_mean=(),
    latents_std=(),
  )
  with nnx.use_eager_sharding(False):
    model = V.VideoVAE(cfg, rngs=nnx.Rngs(3))
  video = jax.random.uniform(jax.random.key(0), (2, 9, 16, 16, 3), minval=-1, maxval=1)

  def recon(x):
    mean, _, _ = model.encode_chunk(x)
    return model.decode_chunk(mean)[0]

  images = jnp.stack([recon(video[:, t : t + 1])[:, 0] for t in range(9)], axis=1)
  before = recon(video)
  assert not np.allclose(before[:, -1], images[:, -1], atol=1e-3)  # Random earlier taps.
  V.inflate_image_weights(model)
  images_after = jnp.stack([recon(video[:, t : t + 1])[:, 0] for t in range(9)], axis=1)
  np.testing.assert_allclose(images_after, images, atol=1e-6)  # The last taps are kept.
  out = recon(video)
  np.testing.assert_allclose(out[:, 0], images[:, 0], atol=1e-5)
  np.testing.assert_allclose(out[:, -1], images[:, -1], atol=1e-5)
  static = jnp.repeat(video[:, 4:5], 9, axis=1)
  np.testing.assert_allclose(recon(static), jnp.repeat(images[:, 4:5], 9, axis=1), atol=1e-5)
