"""Wan 2.1 video VAE (diffusers AutoencoderKLWan layout): 127M parameters, 16 latent
channels, 8x spatial / 4x temporal compression. CookGen clips at 448 x 448: 33 frames
-> latents [9, 56, 56, 16], normalised with Wan's per-channel statistics.

Users bring the weights (the `vae` folder of a Wan 2.1 diffusers checkpoint):
  auteur encode --config paper/vae_wan \
      --config.init.diffusers_vae=/ckpt/Wan2.1-T2V-1.3B-Diffusers/vae \
      --config.encode.in_dir=gs://.../cookgen --config.encode.out_dir=gs://.../cookgen_vae
It prints a progress bar per split, then
`encoded N clip shards (0 skipped) -> ...: latents (9, 56, 56, 16) bfloat16`.
Each process encodes its own shards (every process_count-th) on its local devices.
"""

import ml_collections

from auteur_jax.config_sections import check_arg
from auteur_jax.models.vae import WAN21_LATENTS_MEAN, WAN21_LATENTS_STD
from auteur_jax.parallel.mesh import mesh_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  check_arg(__file__, arg)
  c = ml_collections.ConfigDict()
  c.task = "vae"
  c.model = ml_collections.ConfigDict(
    dict(
      base_dim=96,
      decoder_base_dim=0,
      z_dim=16,
      dim_mult=(1, 2, 4, 4),
      num_res_blocks=2,
      temporal_downsample=(False, True, True),
      in_channels=3,
      out_channels=3,
      latents_mean=WAN21_LATENTS_MEAN,
      latents_std=WAN21_LATENTS_STD,
      conv_impl="auto",
      dtype="float32",
      param_dtype="float32",
    )
  )

  c.mesh = mesh_config({"data": -1, "fsdp": 1, "tensor": 1})

  c.init = ml_collections.ConfigDict()
  c.init.checkpoint = ""
  c.init.diffusers_vae = ""  # Required: the Wan 2.1 `vae` folder.

  e = c.encode = ml_collections.ConfigDict()
  e.in_dir = ""
  e.out_dir = ""
  e.splits = ()
  e.batch_size = 8  # Per process; a multiple of its local devices.
  e.num_frames = 33
  e.dtype = "bfloat16"  # Halves the storage; the DiT trains in bf16.
  e.seed = 0
  return c
