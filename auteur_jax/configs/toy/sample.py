"""Story sampling with the toy director, DiT and VAE: `auteur sample` and story.py.

  auteur sample --config toy/sample --prompts prompts.jsonl --out samples
Each prompts line is {"id": "v1", "task": "make a tomato salad", "num_steps": 4} or
gives the steps' text ({"id", "task", "actions": [...], "captions": [...]}) so that the
director only regresses the visual states. The job prints a progress bar (items/s, ETA)
and `samples: N rendered, M already done, E bad prompt lines (samples/errors.jsonl)`;
every item gets samples/<id>/clip_<t>.mp4, story.mp4, story.json and embeddings.npy.

The three models are the training configs toy/{director,dit,vae}, restored
from the runs in their init.checkpoint (runs/director, runs/dit, runs/vae by default;
`--config.dit.init.checkpoint=...` etc. point elsewhere). Settings: the director's
`director.sample` (temperature, top_p, max tokens, default num_steps), the DiT's
`dit.sample` (solver, num_steps, shift, text_scale, visual_scale) and `sample` below.

`sample.director` (`auteur sample --director`): "interleaved" (default) renders each clip
from the director's visual state z_t with `dit`; "language" (the paper's language-centric
director) keeps only the director's actions and captions, draws each step's keyframe with
the keyframe renderer `keyframe` (toy/keyframe, rolling context), and renders each clip
from its keyframe (the clip's last frame) and caption with `dit_keyframe`
(toy/dit:keyframe), whose image tokens come from the vision tower of `clip` (toy/clip).
Those three are loaded only for the language director.
"""

import os

import ml_collections

from auteur_jax.config import load_module_config
from auteur_jax.config_sections import check_arg
from auteur_jax.parallel.distributed import distributed_defaults
from auteur_jax.parallel.mesh import mesh_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  check_arg(__file__, arg)
  here = os.path.dirname(os.path.abspath(__file__))
  c = ml_collections.ConfigDict()
  c.task = "sample"
  models = (
    ("director", "director", "runs/director"),
    ("dit", "dit", "runs/dit"),
    ("vae", "vae", "runs/vae"),
    ("keyframe", "keyframe", "runs/keyframe"),
    ("dit_keyframe", "dit.py:keyframe", "runs/dit_keyframe"),
    ("clip", "clip", "runs/clip"),
  )
  for name, module, workdir in models:
    c[name] = load_module_config(os.path.join(here, module if ":" in module else f"{module}.py"))
    c[name].init.checkpoint = workdir
  c.dit_keyframe.init.widen_inputs = False  # A keyframe DiT's run has the channels already.
  c.tokenizer = "toy_data/tokenizer"  # The director's (and the DiT's caption) tokenizer.
  c.allow_random_init = False  # True: a model with no init.checkpoint gets random weights.

  s = c.sample = ml_collections.ConfigDict()
  s.seed = 0  # Mixed with each item's id into its seed (unless the prompt line gives one).
  s.batch_size = 8  # Items per job batch (written together; a restart redoes at most one).
  s.rows_per_device = 1  # Stories / clips per device per model call (fixed: determinism).
  s.max_steps = 16  # Longest story accepted.
  s.num_frames = 9  # Frames per clip (1 + 4k): what the DiT was trained on.
  s.size = 64  # Frame side in pixels.
  s.fps = 8.0  # Of the written videos (the toy data's frame rate).
  s.crf = 18  # x264 quality of the written mp4s: 0 lossless .. 51 worst.
  s.vae_chunk_frames = 1  # Latent frames per VAE decoding chunk (0 = the whole clip).
  s.director = "interleaved"  # "interleaved" | "language" (see above; `--director`).

  # Local devices of each process; items split over `data`. A DiT that does not fit one
  # device splits over fsdp / tensor (the model's logical rules); the batch stays on data.
  c.mesh = mesh_config({"data": -1, "fsdp": 1, "tensor": 1}, rules=(("batch", "data"),))
  c.distributed = distributed_defaults()
  return c
