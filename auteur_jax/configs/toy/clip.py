"""Toy-kitchen CLIP: a small ViT + text tower trained contrastively on keyframes and
captions, giving the language-aligned space the director regresses (K = 16 tokens of
D = 64 per keyframe: the 8 x 8 patch grid average-pooled to 4 x 4, then projected).

  auteur train --config toy/clip --workdir runs/clip
  auteur encode --config toy/clip --config.init.checkpoint=runs/clip \
      --config.encode.in_dir=toy_data/tfrecords_vae
The encode job adds `visual_embedding` [16, 64] to every clip and [steps, 16, 64] to every
story, then prints `encoded N clip shards (0 skipped) -> toy_data/tfrecords_enc:
visual_embedding (16, 64) float32`.

Training (train/task_clip.py) pairs each clip's middle frame with its caption and logs
the contrastive loss, in-batch retrieval accuracy (i2t_acc, t2i_acc) and temperature
every 50 steps to runs/clip/metrics.jsonl and TensorBoard, shows a progress bar
`train clip`, and ends with `runs/clip: stopped at step 3000, loss X`.
"""

import os

import ml_collections

from auteur_jax.config import load_module_config
from auteur_jax.config_sections import check_arg
from auteur_jax.parallel.distributed import distributed_defaults
from auteur_jax.parallel.mesh import mesh_config
from auteur_jax.train.evaluate import eval_defaults
from auteur_jax.train.optim import train_defaults

K, D = 16, 64  # Must match toy/director.


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  check_arg(__file__, arg)
  c = ml_collections.ConfigDict()
  c.task = "clip"

  m = c.model = ml_collections.ConfigDict()
  m.vision = ml_collections.ConfigDict(
    dict(  # models/vision.py VisionConfig.
      family="clip",
      image_size=64,
      patch_size=8,
      width=128,
      depth=4,
      num_heads=4,
      mlp_dim=512,
      act="quick_gelu",
      eps=1e-5,
      projection_dim=D,
      feature_layer=-1,
      resampler="avgpool",
      num_tokens=K,
      project_tokens=True,
      remat=False,
      dtype="float32",
      param_dtype="float32",
    )
  )
  m.text = ml_collections.ConfigDict(
    dict(  # models/clip_text.py TextConfig.
      vocab_size=2048,
      width=128,
      depth=4,
      num_heads=4,
      mlp_dim=512,
      max_len=128,
      projection_dim=D,
      act="quick_gelu",
      eps=1e-5,
      eos_token_id=2,
      pool_argmax=False,
      remat=False,
      dtype="float32",
      param_dtype="float32",
    )
  )  # eos 2: the toy BPE's.
  m.loss = "softmax"  # CLIP's; "sigmoid" for SigLIP's.

  here = os.path.dirname(os.path.abspath(__file__))
  c.data = load_module_config(os.path.join(here, "data.py:clips")).data
  c.data.num_frames = 1  # Training pairs: a frame of the clip and its caption.
  c.data.batch_size = 64  # Contrastive losses want large batches.
  c.data.max_text_len = 128

  t = c.train = train_defaults()
  t.steps = 3000
  t.b1, t.b2, t.eps = 0.9, 0.98, 1e-6
  t.weight_decay = 0.1  # Matrices only (optim.py): not norms, biases or logit_scale.
  t.lr = 5e-4
  t.warmup_steps = 200
  t.schedule = "cosine"
  t.grad_clip = 1.0
  t.log_every = 50
  t.checkpoint_every = 500
  t.keep_last = 3
  c.eval = eval_defaults()  # Evaluation during training (train/evaluate.py), off here.
  c.distributed = distributed_defaults()

  c.mesh = mesh_config({"data": -1, "fsdp": 1, "tensor": 1})

  c.init = ml_collections.ConfigDict()
  c.init.checkpoint = ""  # A training run of this config.
  c.init.hf_vision = ""  # Or an HF CLIP / SigLIP folder (vision tower only).

  e = c.encode = ml_collections.ConfigDict()
  e.in_dir = "toy_data/tfrecords"
  e.out_dir = "toy_data/tfrecords_enc"
  e.splits = ()
  e.batch_size = 16
  e.num_frames = 1  # Unused: the vision tower sees the keyframe.
  e.dtype = "float32"
  e.seed = 0
  return c
