r"""Narrative director on toy-kitchen stories, on this CPU machine.

Needs story TFRecords with per-step visual embeddings (K x D = 16 x 64 tokens of the toy
CLIP space, see toy/clip) and a BPE tokenizer; then:
  auteur data toy --videos 40 --out toy_data
  auteur data import-youcook2 --annotations toy_data/youcook2_annotations.json \
      --captions toy_data/captions.jsonl --out toy_data/stories.jsonl
  auteur data build --config toy/data --stories toy_data/stories.jsonl
  auteur data tokenizer --stories toy_data/stories.jsonl --out toy_data/tokenizer
  auteur train --config toy/clip --workdir runs/clip
  auteur encode --config toy/clip --config.init.checkpoint=runs/clip ...
  auteur train --config toy/director --workdir runs/director \
      --config.data.dir=toy_data/tfrecords_enc
Training logs the loss parts per step (text_ce, text_acc, visual_cos, visual_mse). The
model is a 4-layer, width-128 Llama-style decoder: 1.07M parameters with the tied
2,048-token table and the visual projections.
`toy/director:caption_visual` (or `:action_visual`) picks an ablation chain.
`toy/director:vae_latent` (the paper's Table 13 latent space) regresses each step's
keyframe VAE latent (its clip's last latent frame, 8 x 8 x 16 -> 64 tokens of 16) instead
of the CLIP tokens: data.dir must hold stories and clips with VAE latents
(`auteur encode --config toy/vae`), read as data/keyframes.py does for the renderer.
`model.markup` holds the ids that `train_bpe` gives the markup tokens (pad, bos, eos,
unk come first, then <action> </action> <caption> </caption> <img> </img>); check them
with `MarkupIds.from_tokenizer(tokenizer)` when another tokenizer is used.
"""

import os

import ml_collections

from auteur_jax.config import load_module_config
from auteur_jax.config_sections import check_arg
from auteur_jax.models.director import CHAINS
from auteur_jax.parallel.distributed import distributed_defaults
from auteur_jax.parallel.mesh import mesh_config
from auteur_jax.train.evaluate import eval_defaults
from auteur_jax.train.optim import train_defaults

K, D = 16, 64  # Visual tokens per step x their dimension: the toy CLIP resampler's output.
LATENT = (8, 8, 16)  # One keyframe's VAE latent (toy/vae: 64 x 64 -> 8 x 8 x 16).


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.task = "director"

  m = c.model = ml_collections.ConfigDict()
  m.llm = ml_collections.ConfigDict(
    dict(
      vocab_size=2048,
      width=128,
      num_layers=4,
      num_heads=4,
      num_kv_heads=2,
      head_dim=32,
      mlp_dim=384,
      rope_theta=10000.0,
      rope_scaling=None,
      qkv_bias=False,
      tie_embeddings=True,
      norm_eps=1e-6,
      init_std=0.02,
      dtype="float32",
      param_dtype="float32",
      remat="none",
      scan_unroll=4,  # All 4 layers unrolled: no stacked residuals to zero and fill (~10 % faster).
    )
  )
  m.markup = ml_collections.ConfigDict(
    dict(action=4, action_end=5, caption=6, caption_end=7, img=8, img_end=9, bos=1)
  )
  arg = check_arg(__file__, arg, (*CHAINS, "vae_latent"))
  latent = arg == "vae_latent"
  m.num_queries, m.visual_dim = (LATENT[0] * LATENT[1], LATENT[2]) if latent else (K, D)
  m.chain = "action_caption_visual" if arg in (None, "vae_latent") else arg
  m.alpha = 1.0  # (1 - cos) weight; the paper does not give alpha / beta.
  m.beta = 1.0  # MSE weight.
  m.text_weight = 1.0

  # The story pipeline of toy/data, with embeddings loaded per step.
  here = os.path.dirname(os.path.abspath(__file__))
  c.data = load_module_config(os.path.join(here, "data.py:stories")).data
  c.data.embedding_shape = () if latent else (K, D)
  if latent:  # Each step's keyframe latent (data/keyframes.py), the target (task_director).
    c.data.keyframe_shape = LATENT
  c.data.max_steps = 8
  c.data.max_action_tokens = 32
  c.data.max_caption_tokens = 128
  c.data.tokenizer = "toy_data/tokenizer"

  t = c.train = train_defaults()
  t.steps = 2000
  t.b1, t.b2, t.eps = 0.9, 0.98, 1e-6  # Paper, Table 10.
  t.lr = 1e-3
  t.warmup_steps = 100
  t.log_every = 20
  t.checkpoint_every = 500
  c.eval = eval_defaults()  # Evaluation during training (train/evaluate.py), off here.
  c.distributed = distributed_defaults()

  c.mesh = mesh_config({"data": -1, "fsdp": 1, "tensor": 1})

  c.init = ml_collections.ConfigDict()
  c.init.checkpoint = ""  # An orbax checkpoint to start from (HF weights: auteur convert).

  s = c.sample = ml_collections.ConfigDict()
  s.num_steps = 6
  s.temperature = 0.0
  s.top_p = 1.0
  s.max_action_tokens = 32
  s.max_caption_tokens = 128
  return c
