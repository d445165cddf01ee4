"""Toy-kitchen causal video VAE (Wan 2.1 layout, small widths), on this CPU machine.

8x spatial / 4x temporal compression: 9 frames of 64 x 64 -> latents [3, 8, 8, 16].
Train it, then write latents into the clip TFRecords for the DiT:
  auteur train --config toy/vae --workdir runs/vae
  auteur encode --config toy/vae --config.init.checkpoint=runs/vae
The encode job prints a progress bar per split and then
`encoded N clip shards (0 skipped) -> toy_data/tfrecords_vae: latents (3, 8, 8, 16) float32`.
With no init set it encodes with random weights (a smoke test of the plumbing).

Training (train/task_vae.py) logs loss = recon + loss.kl_weight * kl and its parts
(recon, kl, psnr in dB) every 50 steps to runs/vae/metrics.jsonl and TensorBoard, shows
a progress bar `train vae`, and ends with `runs/vae: stopped at step 3000, loss X`.
"""

import os

import ml_collections

from auteur_jax.config import load_module_config
from auteur_jax.config_sections import check_arg
from auteur_jax.parallel.distributed import distributed_defaults
from auteur_jax.parallel.mesh import mesh_config
from auteur_jax.train.evaluate import eval_defaults
from auteur_jax.train.optim import train_defaults


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  check_arg(__file__, arg)
  c = ml_collections.ConfigDict()
  c.task = "vae"

  # models/vae.py VAEConfig; channels 16-32-64-64 (Wan 2.1: 96-192-384-384).
  c.model = ml_collections.ConfigDict(
    dict(
      base_dim=16,
      decoder_base_dim=0,
      z_dim=16,
      dim_mult=(1, 2, 4, 4),
      num_res_blocks=1,
      temporal_downsample=(False, True, True),
      in_channels=3,
      out_channels=3,
      latents_mean=(),
      latents_std=(),  # Trained with a KL prior: no re-normalisation.
      conv_impl="auto",
      dtype="float32",
      param_dtype="float32",
    )
  )

  here = os.path.dirname(os.path.abspath(__file__))
  c.data = load_module_config(os.path.join(here, "data.py:clips")).data
  c.data.num_frames = 9  # 1 + 4k: latents [3, 8, 8, 16].
  c.data.tokenizer = ""  # The VAE needs no text.

  # Reconstruction ("l1" | "mse" | "l1+mse", per pixel element in [-1, 1], weighted by
  # 1 + detail_weight * local contrast) + kl_weight * the posterior's KL summed over the
  # latent per pixel element (LDM / Wan weighting). train_encoder False: decoder only.
  c.loss = ml_collections.ConfigDict(
    dict(recon="l1+mse", kl_weight=1e-6, detail_weight=0.0, train_encoder=True)
  )

  t = c.train = train_defaults()
  t.steps = 3000
  t.b1, t.b2, t.eps = 0.9, 0.99, 1e-8
  t.weight_decay = 0.0
  t.lr = 3e-4
  t.warmup_steps = 100
  t.schedule = "cosine"
  t.grad_clip = 1.0
  t.log_every = 50
  t.checkpoint_every = 500
  t.keep_last = 3
  c.eval = eval_defaults()  # Evaluation during training (train/evaluate.py), off here.
  c.distributed = distributed_defaults()

  c.mesh = mesh_config({"data": -1, "fsdp": 1, "tensor": 1})  # Small: data parallel.

  c.init = ml_collections.ConfigDict()
  c.init.checkpoint = ""  # A training run of this config (auteur train --workdir).
  # The checkpoint is an image-stage run (data.num_frames=1): zero its causal convs'
  # earlier-frame taps, temporal resamplers pass frames through (vae.inflate_image_weights).
  c.init.inflate = False
  c.init.diffusers_vae = ""  # Or a diffusers AutoencoderKLWan folder.

  e = c.encode = ml_collections.ConfigDict()
  e.in_dir = "toy_data/tfrecords"  # From `auteur data build`.
  e.out_dir = "toy_data/tfrecords_vae"
  e.splits = ()  # () = every split in in_dir/dataset.json.
  e.batch_size = 8  # Clips per batch (a multiple of the local device count).
  e.num_frames = 9  # The centred window encoded per clip (1 + 4k).
  e.dtype = "float32"  # Stored dtype of the latents.
  e.seed = 0  # Random weights when no init is set.
  return c
