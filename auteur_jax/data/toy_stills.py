"""Dense toy-kitchen stills: single frames crowded with pieces, for VAE image training.

A recipe's frame shows 1-4 small pieces on a large, fixed background, so a VAE trained
on the clips with a pixel loss draws the background long before the pieces (a small
fraction of the pixels). A still fills every slot of every surface (shelf, board, pot,
plate; 16 in all) with a piece of the slot's group with probability `fill`, in a form
allowed there, on random flags (liquid, burner, herbs). Stills are layouts, not world
states (an ingredient may show in several places at once); only the VAE trains on them,
as Wan's VAE trains on images before videos.

Written like `auteur data build` output: OUT/train/clips-*.tfrecord (one 1-frame clip
record per still, JPEG at the data set's quality) and OUT/dataset.json.
"""

from __future__ import annotations

import json
import os

import numpy as np
from tqdm import tqdm

from auteur_jax.data import examples, tfrecord, toy_draw, video_io
from auteur_jax.data.schema import Clip
from auteur_jax.data.toy_world import REST_FORMS


def render_still(size: int, rng: np.random.Generator, fill: float = 0.8) -> np.ndarray:
  """One dense still: uint8 [size, size, 3]."""
  img = toy_draw.surface(
    size, bool(rng.integers(2)), str(rng.choice(list(toy_draw.LIQUIDS))), bool(rng.integers(2))
  ).copy()
  for loc, centres in toy_draw.SLOTS.items():
    for group, (cy, cx) in enumerate(centres):
      if rng.random() >= fill:
        continue
      looks = [look for look in toy_draw.INGREDIENTS if look.group == group]
      look = looks[rng.integers(len(looks))]
      forms = REST_FORMS[loc]
      form = forms[rng.integers(len(forms))]
      toy_draw.draw_item(
        img,
        look,
        "whole" if form == "whole" else "chopped",
        toy_draw.form_rgb(look, form),
        cy,
        cx,
        toy_draw.HALF[loc],
      )
  return img


def write_stills(
  out_dir: str,
  num: int,
  seed: int = 0,
  size: int = 64,
  fill: float = 0.8,
  jpeg_quality: int = 90,
  num_shards: int = 4,
  progress: bool = True,
) -> dict:
  """Writes `num` stills as 1-frame clip records (split "train"); returns dataset.json."""
  if num < 1:
    raise ValueError(f"num must be >= 1 still, got {num}")
  if not 0.0 < fill <= 1.0:
    raise ValueError(f"fill must be in (0, 1], got {fill}")
  rng = np.random.default_rng(seed)
  writer = tfrecord.ShardedWriter(os.path.join(out_dir, "train"), "clips", num_shards)
  try:
    for i in tqdm(range(num), desc="stills", unit="frame", disable=not progress):
      jpeg = video_io.encode_jpeg(render_still(size, rng, fill), jpeg_quality)
      clip = Clip(clip_id="0", start=0.0, end=1.0, action="", caption="")
      writer.write(examples.encode_clip(f"still_{i:06d}", clip, [jpeg], fps=1.0))
  except BaseException:
    writer.abort()
    raise
  writer.close()
  summary = {
    "stills": {"num": num, "seed": seed, "fill": fill},
    "frames": {"fps": 1.0, "size": size, "jpeg_quality": jpeg_quality},
    "schema_version": examples.SCHEMA_VERSION,
    "splits": {
      "train": {"clips": num, "clip_shards": [os.path.relpath(p, out_dir) for p in writer.paths]}
    },
  }
  tmp = os.path.join(out_dir, f"dataset.json.tmp-{os.getpid()}")
  with open(tmp, "w") as f:
    json.dump(summary, f, indent=1)
  os.replace(tmp, os.path.join(out_dir, "dataset.json"))
  return summary
