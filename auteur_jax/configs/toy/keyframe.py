r"""Keyframe renderer on toy-kitchen stories, on this CPU machine (the language-centric
director's image model; paper Sec. 4, Table 4's rolling context).

Needs story and clip TFRecords of the same split with VAE latents in the clips (each
step's keyframe is its clip's last latent frame, data/keyframes.py) and a tokenizer:
  auteur data toy --videos 40 --out toy_data
  auteur data import-youcook2 --annotations toy_data/youcook2_annotations.json \
      --captions toy_data/captions.jsonl --out toy_data/stories.jsonl
  auteur data build --config toy/data --stories toy_data/stories.jsonl --config.data.fps=2
  auteur data tokenizer --stories toy_data/stories.jsonl --out toy_data/tokenizer
  auteur train --config toy/vae --workdir runs/vae
  auteur encode --config toy/vae --config.init.checkpoint=runs/vae  # -> toy_data/tfrecords_vae
  auteur train --config toy/keyframe --workdir runs/keyframe
(the shipped toy VAE can encode instead: --config.init.checkpoint=auteur_jax/assets/
checkpoints/toy/vae).
It prints the flow-matching loss per step and `references` (mean reference keyframes per
step after dropout). Frames at 2 per second (the demo's, demo/data.py) keep a whole toy
clip in the VAE's 9-frame window, so its last latent frame shows the state the step ends
in. The model is the toy DiT's size (4 blocks, width 128, 1.1M parameters plus the
2,048 x 64 token table) in image mode: 8 x 8 x 16 keyframe latents, (1, 2, 2) patches,
16 tokens per frame, max_references = 3 reference frames + the target = 64 tokens.
Sampling: sample/keyframes.py (KeyframeSampler.from_config with init.checkpoint set).
"""

import os

import ml_collections

from auteur_jax.config import load_module_config
from auteur_jax.config_sections import check_arg
from auteur_jax.parallel.distributed import distributed_defaults
from auteur_jax.parallel.mesh import mesh_config
from auteur_jax.train.evaluate import eval_defaults
from auteur_jax.train.optim import train_defaults

TEXT_DIM = 64  # Width of the token table's embeddings (the toy DiT's text_dim).
LATENT = (8, 8, 16)  # One keyframe latent: the toy VAE's 64 x 64 -> 8 x 8 x 16.


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  check_arg(__file__, arg)
  c = ml_collections.ConfigDict()
  c.task = "keyframe"

  # KeyframeRendererConfig (models/keyframe_renderer.py): DiTConfig's fields + 2 of its own.
  c.model = ml_collections.ConfigDict(
    dict(
      max_references=3,  # The paper's rolling context: 1-3 previous keyframes.
      vocab_size=2048,  # Token table for action and caption ids.
      patch_size=(1, 2, 2),
      in_channels=16 + 4 + 16,  # Noisy latent, reference mask, reference latent.
      out_channels=16,
      num_heads=4,
      head_dim=32,
      ffn_dim=384,
      num_layers=4,
      text_dim=TEXT_DIM,
      freq_dim=64,
      visual_dim=0,
      visual_pos_len=0,
      eps=1e-6,
      cross_attn_norm=True,
      rope_theta=10000.0,
      rope_max_len=1024,
      timestep_scale=1000.0,
      dtype="float32",
      param_dtype="float32",
      scan_layers=True,
      remat="none",
      attention="full",  # 64 tokens: one score matrix is cheapest.
      attention_block=512,
      context_parallel="xla",  # Across a `context` mesh axis: xla | ring | all_to_all.
      visual_condition="keyframe",  # The references go in the keyframe input channels.
    )
  )

  # Story batches of toy/data with each step's keyframe latent (clip shards of the split).
  here = os.path.dirname(os.path.abspath(__file__))
  c.data = load_module_config(os.path.join(here, "data.py:stories")).data
  c.data.dir = "toy_data/tfrecords_vae"  # `auteur encode --config toy/vae` writes latents here.
  c.data.keyframe_shape = LATENT
  c.data.batch_size = 8  # Stories: up to 8 steps each, every real step one keyframe.
  c.data.max_steps = 8
  c.data.max_action_tokens = 16  # Toy actions are <= 14 tokens, captions <= 67 (the demo's BPE).
  c.data.max_caption_tokens = 80
  c.data.tokenizer = "toy_data/tokenizer"

  t = c.train = train_defaults()
  t.steps = 2000
  t.b1, t.b2, t.eps = 0.9, 0.95, 1e-8
  t.lr = 3e-4  # Paper (FLUX.1 Fill fine-tune): 5e-4 at batch 16; the toy starts from scratch.
  t.warmup_steps = 100  # Paper: constant after 500 warm-up steps, 5,000 steps.
  t.schedule = "constant"
  t.log_every = 20
  t.checkpoint_every = 500
  # Flow matching (diffusion/flow.py). The renderer's visual condition is its references:
  # drop_visual drops all of an example's references at once (reference dropout; the
  # paper's masking probability 0.25), drop_text its action and caption.
  t.flow = ml_collections.ConfigDict(
    dict(
      time_sampling="logit_normal",
      logit_mean=0.0,
      logit_std=1.0,
      shift=1.0,
      drop_text=0.1,
      drop_visual=0.25,
    )
  )
  c.eval = eval_defaults()  # Evaluation during training (train/evaluate.py), off here.
  c.distributed = distributed_defaults()

  c.mesh = mesh_config({"data": -1, "fsdp": 1, "tensor": 1})

  c.init = ml_collections.ConfigDict()
  c.init.checkpoint = ""  # An orbax checkpoint to start from (and the one sampling restores).

  # sample/keyframes.py: solver and guidance; visual_scale guides on the references.
  s = c.sample = ml_collections.ConfigDict()
  s.solver = "euler"
  s.num_steps = 30
  s.shift = 3.0
  s.text_scale = 3.0  # Not given by the paper.
  s.visual_scale = 1.0  # 1: the references as they are (no extra push).
  return c
