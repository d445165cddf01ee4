"""The demo's data: a toy-kitchen data set through the real import -> build path.

`prepare(work, videos, seed)` writes, under `work/`:
  toy/            the raw toy kitchen (videos, YouCook2-style annotations, captions, states)
  stories.jsonl   the imported stories, each clip's keyframe set to its last sampled frame
  tfrecords/      clip and story shards (frames at DEMO_FPS, 64 px)
  tokenizer/      the BPE tokenizer with the director's special tokens

Two choices differ from the README's chain, both so that a clip's visual state is the
state its step ends in (what the director must predict and the DiT must show):
  * frames are sampled at DEMO_FPS = 2 per second: toy clips last 2-4 s, so a clip has
    4-8 frames and the 9-frame window the VAE and DiT see holds the whole clip (its last
    frame repeated), ending at rest on the step's result;
  * each clip's keyframe (where `auteur encode` takes z_t) is its last sampled frame, at
    rest after the motion, not the middle of the clip (mid-motion in the toy kitchen).
Stories have 4-8 steps (MAX_STEPS), so the director sees whole stories.

The director trains on a larger set made the same way (`tokenizer=` the demo's): the
first N videos of the same seed, a superset of the demo's (video i depends only on the
seed and i), with the same validation stories. It needs only CLIP embeddings, so more
stories cost seconds, and with 96 training stories the director memorised them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

from auteur_jax.data import importers, toy_kitchen, video_io
from auteur_jax.data.build import FrameSpec, build
from auteur_jax.data.schema import Story, read_stories, write_stories
from auteur_jax.data.tokenizer import train_bpe

DEMO_FPS = 2.0
SIZE = 64
MIN_STEPS, MAX_STEPS = 4, 8
VOCAB = 2048  # The toy configs' vocabulary (the BPE may learn fewer tokens).


def end_keyframes(story: Story, fps: float) -> Story:
  """The story with each clip's keyframe at its last frame sampled at `fps`."""
  clips = []
  for c in story.clips:
    times = video_io.sample_times(c.start, c.end, fps)
    kt = float(times[-1]) if len(times) else c.keyframe
    clips.append(dataclasses.replace(c, keyframe_time=kt))
  return dataclasses.replace(story, clips=tuple(clips))


def prepare(
  work: str,
  videos: int,
  seed: int = 0,
  noise: float = 0.2,
  progress: bool = True,
  tokenizer: str | None = None,
) -> dict:
  """Writes the demo data set under `work` (see the module docstring); returns paths.

  tokenizer: an existing tokenizer folder to use instead of training one here (the
  director's larger data set shares the demo's tokenizer). Kept when
  `work/prepared.json` says it was made with the same arguments.
  """
  raw = os.path.join(work, "toy")
  args = {
    "videos": videos,
    "seed": seed,
    "noise": noise,
    "fps": DEMO_FPS,
    "steps": [MIN_STEPS, MAX_STEPS],
    **({"tokenizer": tokenizer} if tokenizer else {}),
  }
  paths = {
    "raw": raw,
    "stories": os.path.join(work, "stories.jsonl"),
    "tfrecords": os.path.join(work, "tfrecords"),
    "tokenizer": tokenizer or os.path.join(work, "tokenizer"),
    "states": os.path.join(raw, "states"),
  }
  marker = os.path.join(work, "prepared.json")
  if os.path.isfile(marker):
    with open(marker) as f:
      if json.load(f) == args:
        return paths
  shutil.rmtree(work, ignore_errors=True)
  toy_kitchen.generate_dataset(
    raw,
    videos,
    seed=seed,
    size=SIZE,
    fps=8.0,
    noise=noise,
    workers=1 if videos <= 16 else 0,
    progress=progress,
    min_steps=MIN_STEPS,
    max_steps=MAX_STEPS,
  )
  stories, report = importers.import_youcook2(
    os.path.join(raw, "youcook2_annotations.json"), os.path.join(raw, "captions.jsonl")
  )
  if not any(s.split == "val" for s in stories):
    raise ValueError(
      f"{raw}: no validation story among {len(stories)} ({report.summary()}); make more videos"
    )
  stories_path = paths["stories"]
  write_stories(stories_path, [end_keyframes(s, DEMO_FPS) for s in stories])
  tfrecords = paths["tfrecords"]
  build(
    stories_path,
    tfrecords,
    FrameSpec(DEMO_FPS, SIZE, 90),
    num_shards=2,
    workers=1 if videos <= 16 else 0,
    progress=progress,
  )
  if tokenizer is None:
    texts = [
      t
      for s in read_stories(stories_path)
      for t in [s.task] + [x for c in s.clips for x in (c.action, c.caption)]
    ]
    train_bpe(texts, VOCAB, out_dir=paths["tokenizer"])
  with open(marker, "w") as f:
    json.dump(args, f)
  return paths
