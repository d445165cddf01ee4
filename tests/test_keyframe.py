"""The keyframe condition of an image-to-video DiT (diffusion/keyframe.py): its mask and
placement, its errors, and parity with diffusers' WanImageToVideoPipeline.prepare_latents."""

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from auteur_jax.diffusion import keyframe as K


def test_frame_mask_first_and_last():
  np.testing.assert_array_equal(K.frame_mask(3, (0,)), [[1, 1, 1, 1], [0, 0, 0, 0], [0, 0, 0, 0]])
  np.testing.assert_array_equal(K.frame_mask(3, (8,)), [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1]])
  np.testing.assert_array_equal(K.frame_mask(2, (0, 4)), [[1, 1, 1, 1], [0, 0, 0, 1]])
  np.testing.assert_array_equal(K.frame_mask(1, (0,), temporal_factor=2), [[1, 1]])
  with pytest.raises(ValueError, match=r"pixel frames \[9\] outside \[0, 9\)"):
    K.frame_mask(3, (9,))


def test_keyframe_condition_places_the_latent_with_its_mask():
  rng = np.random.default_rng(0)
  key = jnp.asarray(rng.normal(size=(2, 4, 6, 3)), jnp.float32)
  shape = (2, 3, 4, 6, 3)
  last = K.keyframe_condition(key, shape)  # Default: the last latent frame.
  assert last.shape == (2, 3, 4, 6, 7)
  np.testing.assert_array_equal(last[:, -1, ..., 4:], key)
  np.testing.assert_array_equal(last[:, :-1, ..., 4:], 0.0)
  np.testing.assert_array_equal(last[0, :, 1, 2, :4], [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1]])
  first = K.keyframe_condition(key, shape, "first")
  np.testing.assert_array_equal(first[:, 0, ..., 4:], key)
  np.testing.assert_array_equal(first[1, :, 3, 5, :4], [[1, 1, 1, 1], [0, 0, 0, 0], [0, 0, 0, 0]])
  fill = jnp.ones(shape)
  filled = K.keyframe_condition(key, shape, "first", fill=fill)
  np.testing.assert_array_equal(filled[:, 1:, ..., 4:], 1.0)
  np.testing.assert_array_equal(filled[:, 0, ..., 4:], key)


def test_keyframe_condition_errors():
  key = jnp.zeros((2, 4, 6, 3))
  with pytest.raises(ValueError, match=r"keyframe latent: expected shape \(B, H, W, C\) = "):
    K.keyframe_condition(key[:, :2], (2, 3, 4, 6, 3))
  with pytest.raises(ValueError, match=r"= \(2, 4, 6, 3\) \(one latent frame of latents"):
    K.keyframe_condition(jnp.zeros((2, 3, 4, 6, 3)), (2, 3, 4, 6, 3))
  with pytest.raises(ValueError, match="keyframe position: expected one of"):
    K.keyframe_condition(key, (2, 3, 4, 6, 3), "middle")
  with pytest.raises(ValueError, match=r"keyframe fill: expected shape \(2, 3, 4, 6, 3\)"):
    K.keyframe_condition(key, (2, 3, 4, 6, 3), fill=jnp.zeros((2, 2, 4, 6, 3)))


# A tiny AutoencoderKLWan: temporal factor 4, spatial 8, 4 latent channels; non-trivial
# latent statistics so the pipeline's normalisation matters.
TINY_VAE = dict(
  base_dim=8,
  z_dim=4,
  dim_mult=[1, 2, 2, 2],
  num_res_blocks=1,
  temperal_downsample=[False, True, True],
  latents_mean=[0.1, -0.2, 0.3, 0.0],
  latents_std=[0.5, 1.5, 2.0, 1.0],
)


@pytest.mark.integration
def test_condition_matches_the_pipelines_prepare_latents(tmp_path):
  """Against diffusers' own WanImageToVideoPipeline.prepare_latents (the pipeline built
  with a tiny random AutoencoderKLWan, no text or image encoder), 9 frames of 16 x 16 ->
  3 latent frames. Our side encodes with our VAE (the same weights, convert/diffusers_vae)
  and normalises, then builds the condition: with the keyframe first, the pipeline's
  condition exactly (the keyframe encoded alone, `fill` = the latents of the keyframe
  padded with zero frames, as the pipeline encodes it). diffusers has no last-frame-only
  path (`last_image` comes with a first image): our "last" mask is the pipeline's mask
  with `last_image` minus its mask without, and our latents with `fill` = the latents of
  its [image, zeros, last_image] video are its condition latents."""
  from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanImageToVideoPipeline

  from auteur_jax.convert.diffusers_vae import load_diffusers_vae
  from auteur_jax.models import vae as V

  torch.manual_seed(0)
  ref = AutoencoderKLWan(**TINY_VAE).eval()
  with torch.no_grad():
    for name, p in ref.named_parameters():
      if name.endswith(("gamma", "bias")):
        p.add_(0.1 * torch.randn_like(p))
  ref.save_pretrained(tmp_path / "vae")
  ours = load_diffusers_vae(str(tmp_path / "vae"))
  pipe = WanImageToVideoPipeline(
    tokenizer=None, text_encoder=None, vae=ref, scheduler=FlowMatchEulerDiscreteScheduler()
  )
  g = torch.Generator().manual_seed(1)
  image, last_image = (torch.rand(1, 3, 16, 16, generator=g) * 2 - 1 for _ in range(2))
  b, frames, shape = 2, 9, (2, 3, 2, 2, 4)
  with torch.no_grad():
    args = (b, 4, 16, 16, frames, torch.float32, torch.device("cpu"), None, None)
    want_first = pipe.prepare_latents(image, *args)[1].numpy().transpose(0, 2, 3, 4, 1)
    want_both = pipe.prepare_latents(image, *args, last_image=last_image)[1]
  want_both = want_both.numpy().transpose(0, 2, 3, 4, 1)

  def latents(*frames_):  # [1, 3, 16, 16] torch frames -> normalised latents [B, T, h, w, C]
    video = jnp.asarray(torch.stack(frames_, 1).numpy().transpose(0, 1, 3, 4, 2))
    z = ours.normalize(V.encode(ours, video)[0])
    return jnp.broadcast_to(z, (b, *z.shape[1:]))

  zeros = torch.zeros_like(image)
  fill = latents(image, *[zeros] * (frames - 1))
  alone = latents(image)[:, 0]  # Causal VAE: the first latent frame sees the first frame only.
  got = K.keyframe_condition(alone, shape, "first", fill=fill)
  np.testing.assert_allclose(got, want_first, atol=1e-4, rtol=1e-4)  # 2e-7 here.

  fill = latents(image, *[zeros] * (frames - 2), last_image)
  got = K.keyframe_condition(fill[:, -1], shape, "last", fill=fill)
  np.testing.assert_array_equal(got[..., :4], want_both[..., :4] - want_first[..., :4])
  np.testing.assert_array_equal(got[:, -1, ..., :4], np.broadcast_to([0, 0, 0, 1], (b, 2, 2, 4)))
  np.testing.assert_allclose(got[..., 4:], want_both[..., 4:], atol=1e-4, rtol=1e-4)
