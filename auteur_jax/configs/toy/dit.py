"""Visual-conditioned video DiT on toy-kitchen latents, on this CPU machine.

Clips need VAE latents and the director's visual embeddings stored with them (written
by `auteur encode`); captions are tokenized and embedded by the frozen text encoder.
  auteur data build --config toy/data --stories toy_data/stories.jsonl \
      --config.data.dir=toy_data/tfrecords --config.data.num_frames=9
  auteur encode ...                      # adds latents [3, 8, 8, 16], visual_embedding [16, 64]
  auteur train --config toy/dit --workdir runs/dit
It prints the flow-matching loss per step (and the time-bucketed losses). The model is a
4-block, width-128 Wan-style DiT (~1.2M parameters): 9 frames of 64 x 64 -> latents
3 x 8 x 8 x 16 -> 48 tokens with (1, 2, 2) patches; 16 visual tokens of width 64.
`toy/dit:text_only` drops the visual conditioning (the paper's baseline).

Image-to-video (Wan 2.1 I2V's way, the paper's Table 3 keyframe conditioning): with
`toy/dit:keyframe` the clip's last latent frame (its keyframe) and a frame mask are
concatenated to the noisy latents (in_channels 16 + 4 + 16 = 36) and the keyframe's
image tokens (the stored visual_embedding, unregularised) go through the visual
attention; `toy/dit:both` adds the keyframe to the embedding-conditioned model (the
regularised tokens). Both start from the shipped toy DiT (auteur_jax/assets/checkpoints/
toy/dit) with the new input channels' weights zero (config.init.widen_inputs):
  auteur train --config toy/dit:keyframe --workdir runs/dit_keyframe
"""

import os

import ml_collections

from auteur_jax.config import load_module_config
from auteur_jax.config_sections import check_arg
from auteur_jax.parallel.distributed import distributed_defaults
from auteur_jax.parallel.mesh import mesh_config
from auteur_jax.train.evaluate import eval_defaults
from auteur_jax.train.optim import train_defaults

K, D = 16, 64  # Visual tokens per clip x width: the toy director's visual state.
TEXT_DIM = 64  # Width of the toy text encoder's token embeddings.


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.task = "dit"
  arg = check_arg(__file__, arg, ("text_only", "keyframe", "both"))
  visual = arg != "text_only"
  keyframe = arg in ("keyframe", "both")

  # DiTConfig fields (models/dit.py); names follow diffusers' WanTransformer3DModel.
  c.model = ml_collections.ConfigDict(
    dict(
      patch_size=(1, 2, 2),
      in_channels=16 + 4 + 16 if keyframe else 16,  # Noisy latents, mask, keyframe latents.
      out_channels=16,
      num_heads=4,
      head_dim=32,
      ffn_dim=384,
      num_layers=4,
      text_dim=TEXT_DIM,
      freq_dim=64,
      visual_dim=D if visual else 0,
      visual_pos_len=0,
      eps=1e-6,
      cross_attn_norm=True,
      rope_theta=10000.0,
      rope_max_len=1024,
      timestep_scale=1000.0,
      dtype="float32",
      param_dtype="float32",
      scan_layers=True,
      remat="names",
      attention="full",
      attention_block=512,
      context_parallel="xla",  # Across a `context` mesh axis: xla | ring | all_to_all.
      visual_condition=arg if keyframe else "embedding",
    )
  )  # 48 tokens: one score matrix is cheapest.

  # Clip batches of toy/data with the stored latents and visual embeddings.
  here = os.path.dirname(os.path.abspath(__file__))
  c.data = load_module_config(os.path.join(here, "data.py:clips")).data
  c.data.arrays = ("latents", "visual_embedding") if visual else ("latents",)
  if visual:  # Its shape, for the FLOP count (train/costs.py: auteur plan, MFU).
    c.data.embedding_shape = (K, D)
  c.data.num_frames = 9  # The Wan VAE takes 1 + 4k frames.
  c.data.batch_size = 8
  c.data.tokenizer = "toy_data/tokenizer"  # Caption ids for the text encoder.
  c.data.max_text_len = 64

  t = c.train = train_defaults()
  t.steps = 2000
  t.b1, t.b2, t.eps = 0.9, 0.95, 1e-8  # Paper, Table 12.
  t.lr = 1e-4  # Paper: 1e-5 at batch 64 for a pretrained model; the toy starts from scratch.
  t.warmup_steps = 100
  t.schedule = "constant"  # After warm-up (paper).
  t.log_every = 20
  t.checkpoint_every = 500
  # Flow matching (diffusion/flow.py): training times and condition dropout for CFG.
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
  # z' = Shuffle(Mask(z + eps)) (diffusion/conditioning.py, paper Sec. 4.2); a negative
  # embedding_std is estimated from std_samples training embeddings at start.
  t.visual_reg = ml_collections.ConfigDict(
    dict(mask_prob=0.25, shuffle_prob=0.25, noise_scale=0.5, embedding_std=-1.0, std_samples=2000)
  )

  # The caption condition: "ids" embeds caption_ids with a table trained with the DiT
  # (no pretrained text encoder in the toy world); "embedding" reads the stored
  # text_embedding [L, text_dim] of a frozen umT5 (`auteur encode`).
  c.text = ml_collections.ConfigDict(dict(source="ids", vocab_size=2048))
  # Evaluation during training (train/evaluate.py): validation losses every 500 steps, 4
  # validation clips sampled every 2,000 (and at the end), decoded by the shipped toy VAE
  # and read by the toy state reader (toy-kitchen data). Off: --config.eval.every=0
  # --config.eval.video_every=0 (the demo and `auteur ablate` evaluate on their own).
  shipped_vae = os.path.normpath(os.path.join(here, "../../assets/checkpoints/toy/vae"))
  c.eval = eval_defaults(
    every=500, video_every=2000, videos=4, batches=4, vae=shipped_vae, toy_states=True
  )
  c.distributed = distributed_defaults()

  c.mesh = mesh_config({"data": -1, "fsdp": 1, "tensor": 1})

  if arg == "keyframe":  # Exact image tokens of the keyframe: nothing to be robust to.
    t.visual_reg.update(mask_prob=0.0, shuffle_prob=0.0, noise_scale=0.0)

  c.init = ml_collections.ConfigDict()
  c.init.checkpoint = ""  # An orbax checkpoint to start from (diffusers weights: auteur convert).
  # True: the checkpoint's DiT has no keyframe channels; their patch weights start at zero.
  c.init.widen_inputs = False
  if keyframe:
    c.init.checkpoint = os.path.normpath(os.path.join(here, "../../assets/checkpoints/toy/dit"))
    c.init.widen_inputs = True

  s = c.sample = ml_collections.ConfigDict()
  s.solver = "euler"  # "euler" | "heun" (diffusion/flow.py).
  s.num_steps = 30
  s.shift = 3.0
  s.text_scale = 5.0
  s.visual_scale = 3.0  # Not given by the paper.
  return c
