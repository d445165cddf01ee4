r"""Narrative director at the paper's scale: Llama-2-7B shapes, K = 64 tokens of D = 4096.

VideoAuteur initialises from SEED-X (a multimodal Llama-2-7B); import a Llama-2-7B-family
safetensors folder with this config and the vocabulary is padded from 32,000 to 32,128
rows (the six markup tokens take ids 32000-32005 when the Llama-2 tokenizer is wrapped
by `data.tokenizer.Tokenizer`; the padding keeps the vocab divisible by the tensor
axis). Training follows Table 10: batch 512, bf16, AdamW (0.9, 0.98, 1e-6), peak LR
2e-4, 200 warm-up steps, cosine decay, clip 1.0, 2,500 steps.
  auteur convert import --family llama --src /path/to/llama-2-7b --dst ckpts/llama \
      --config paper/director_7b
  auteur train --config paper/director_7b --workdir gs://.../director \
      --config.init.checkpoint=ckpts/llama --config.data.dir=gs://.../cookgen
Per step it logs the loss parts (text_ce, text_acc, visual_cos, visual_mse).
`paper/director_7b:caption_visual` (or `:action_visual`) picks an ablation chain.
"""

import os

import ml_collections

from auteur_jax.config import load_module_config
from auteur_jax.config_sections import check_arg
from auteur_jax.models.director import CHAINS
from auteur_jax.parallel.distributed import distributed_defaults
from auteur_jax.parallel.mesh import mesh_config
from auteur_jax.train.optim import train_defaults

K, D = 64, 4096


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.task = "director"

  m = c.model = ml_collections.ConfigDict()
  m.llm = ml_collections.ConfigDict(
    dict(
      vocab_size=32128,
      width=4096,
      num_layers=32,
      num_heads=32,
      num_kv_heads=32,
      head_dim=128,
      mlp_dim=11008,
      rope_theta=10000.0,
      rope_scaling=None,
      qkv_bias=False,
      tie_embeddings=False,
      norm_eps=1e-5,
      init_std=0.02,
      dtype="bfloat16",
      param_dtype="float32",
      remat="full",
      scan_unroll=1,
    )
  )
  m.markup = ml_collections.ConfigDict(
    dict(
      action=32000,
      action_end=32001,
      caption=32002,
      caption_end=32003,
      img=32004,
      img_end=32005,
      bos=1,
    )
  )
  m.num_queries, m.visual_dim = K, D
  m.chain = check_arg(__file__, arg, tuple(CHAINS)) or "action_caption_visual"
  m.alpha = 1.0
  m.beta = 1.0
  m.text_weight = 1.0

  here = os.path.dirname(os.path.abspath(__file__))
  c.data = load_module_config(os.path.join(here, "..", "toy", "data.py:stories")).data
  c.data.dir = ""  # CookGen story TFRecords with visual embeddings.
  c.data.tokenizer = ""  # The Llama-2 tokenizer folder.
  c.data.embedding_shape = (K, D)
  c.data.batch_size = 512
  c.data.max_steps = 8  # 2-8 context steps in training, 8 at inference.
  c.data.max_action_tokens = 48  # Actions: 10-25 words.
  c.data.max_caption_tokens = 128  # Captions: up to 120 tokens.
  c.data.num_workers = 8

  t = c.train = train_defaults()
  t.steps = 2500
  t.b1, t.b2, t.eps = 0.9, 0.98, 1e-6
  t.weight_decay = 0.0
  t.lr = 2e-4
  t.warmup_steps = 200
  t.schedule = "cosine"
  t.grad_clip = 1.0
  t.log_every = 10
  t.checkpoint_every = 250
  t.seed = 0

  c.distributed = distributed_defaults()

  c.mesh = mesh_config({"data": 1, "fsdp": -1, "tensor": 1})

  c.init = ml_collections.ConfigDict()
  c.init.checkpoint = ""  # The imported Llama (auteur convert import), or a run.

  s = c.sample = ml_collections.ConfigDict()
  s.num_steps = 8
  s.temperature = 0.0
  s.top_p = 1.0
  s.max_action_tokens = 48
  s.max_caption_tokens = 128
  return c
