"""Visual-conditioned DiT at Wan 2.1 1.3B shapes (VideoAuteur's video generator).

Wan 2.1 T2V-1.3B: 30 blocks of width 1536 (12 heads x 128), MLP 8960, umT5-XXL text
(4096-d, 512 tokens). VideoAuteur conditions on the director's visual state, K = 64
tokens of D = 4096 (SEED-X CLIP space), through Wan's image-to-video mechanism (own
keys / values per block). Start from the diffusers text-to-video checkpoint, imported
with this config; the visual branch, which it lacks, keeps its initialisation
(in memory, `convert.diffusers_wan.load_diffusers_wan(..., add_visual_dim=4096)` adds it
with zero values instead, so that step 0 predicts what Wan does).
Training follows Table 12: 448 x 448 x T, AdamW (0.9, 0.95, 1e-8), LR 1e-5 constant
after 1,000 warm-up steps, 20,000 steps, batch 64, bf16.
  auteur convert import --family wan_dit --config paper/dit_wan_1_3b \
      --src /path/to/Wan2.1-T2V-1.3B-Diffusers/transformer --dst ckpts/wan_1_3b
  auteur train --config paper/dit_wan_1_3b --workdir gs://.../dit \
      --config.init.checkpoint=ckpts/wan_1_3b --config.data.dir=gs://.../cookgen
It logs the flow-matching loss per step. 81 frames of 448 x 448 -> latents 21 x 56 x 56
x 16 -> 16,464 tokens per clip.
"""

import os

import ml_collections

from auteur_jax.config import load_module_config
from auteur_jax.config_sections import check_arg
from auteur_jax.parallel.distributed import distributed_defaults
from auteur_jax.parallel.mesh import mesh_config
from auteur_jax.train.optim import train_defaults

K, D = 64, 4096  # Director's visual tokens per clip x width.


def wan_model(width_heads: int, ffn_dim: int, num_layers: int) -> ml_collections.ConfigDict:
  """DiTConfig fields of a Wan 2.1 transformer with VideoAuteur's visual branch."""
  return ml_collections.ConfigDict(
    dict(
      patch_size=(1, 2, 2),
      in_channels=16,
      out_channels=16,
      num_heads=width_heads,
      head_dim=128,
      ffn_dim=ffn_dim,
      num_layers=num_layers,
      text_dim=4096,
      freq_dim=256,
      visual_dim=D,
      visual_pos_len=0,
      eps=1e-6,
      cross_attn_norm=True,
      rope_theta=10000.0,
      rope_max_len=1024,
      timestep_scale=1000.0,
      dtype="bfloat16",
      param_dtype="float32",
      scan_layers=True,
      remat="full",
      # 16,464 tokens: full scores would be 1 GiB per head and clip in each layer.
      attention="blockwise",
      attention_block=512,
      context_parallel="xla",  # Across a `context` mesh axis: xla | ring | all_to_all.
    )
  )


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  check_arg(__file__, arg)
  c = ml_collections.ConfigDict()
  c.task = "dit"
  c.model = wan_model(width_heads=12, ffn_dim=8960, num_layers=30)

  here = os.path.dirname(os.path.abspath(__file__))
  c.data = load_module_config(os.path.join(here, "..", "toy", "data.py:clips")).data
  c.data.dir = ""  # CookGen clip TFRecords with latents and visual embeddings.
  c.data.arrays = ("latents", "visual_embedding", "text_embedding")  # umT5 [512, 4096].
  c.data.size = 448  # Paper: short side 448, centre crop.
  c.data.fps = 16.0
  c.data.num_frames = 81  # 1 + 4k for the VAE: 5 s at 16 fps.
  c.data.batch_size = 64
  c.data.max_text_len = 512
  c.data.embedding_shape = (K, D)  # Stored visual_embedding per clip.
  c.data.num_workers = 8

  t = c.train = train_defaults()
  t.steps = 20000
  t.b1, t.b2, t.eps = 0.9, 0.95, 1e-8
  t.weight_decay = 0.0
  t.lr = 1e-5
  t.warmup_steps = 1000
  t.schedule = "constant"
  t.grad_clip = 1.0
  t.log_every = 50
  t.checkpoint_every = 1000
  t.seed = 0
  t.flow = ml_collections.ConfigDict(
    dict(
      time_sampling="logit_normal",
      logit_mean=0.0,
      logit_std=1.0,
      shift=1.0,
      drop_text=0.1,
      drop_visual=0.1,
    )
  )
  t.visual_reg = ml_collections.ConfigDict(
    dict(  # Paper: 0.25 / 0.25 / 0.5 x std.
      mask_prob=0.25, shuffle_prob=0.25, noise_scale=0.5, embedding_std=-1.0, std_samples=2000
    )
  )

  # The caption condition: umT5-XXL embeddings stored by `auteur encode`.
  c.text = ml_collections.ConfigDict(dict(source="embedding", vocab_size=0))
  c.distributed = distributed_defaults()

  c.mesh = mesh_config({"data": 1, "fsdp": -1, "tensor": 1, "context": 1})

  c.init = ml_collections.ConfigDict()
  c.init.checkpoint = ""  # The imported Wan2.1-T2V-1.3B transformer, or a run.

  s = c.sample = ml_collections.ConfigDict()
  s.solver = "euler"
  s.num_steps = 50
  s.shift = 3.0  # Wan's 480p setting (448 x 448 here).
  s.text_scale = 5.0
  s.visual_scale = 3.0  # Not given by the paper.
  return c
