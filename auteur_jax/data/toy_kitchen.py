"""The toy kitchen: a procedural cooking world, its recipes and the raw data set it writes.

The world (ingredients, actions, preconditions, split) is in `toy_world.py`, random
recipes in `toy_recipes.py`, their text in `toy_text.py`, the look of a frame in
`toy_draw.py` and the animation in `toy_render.py`; this module writes the data set.

Output of `generate_dataset` (in out_dir): videos/<id>.mp4, youcook2_annotations.json,
captions.jsonl, states/<id>.json and optionally preview.png; see `generate_dataset`.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from tqdm import tqdm

from auteur_jax.data import toy_render, video_io
from auteur_jax.data.toy_recipes import video_recipe
from auteur_jax.data.toy_text import caption


def noisy_segments(
  clips: Sequence[tuple[float, float]], duration: float, noise: float, rng: np.random.Generator
) -> list[tuple[float, float]]:
  """ASR-like action times: each clip's [start, end] shifted, extended or shrunk.

  Each boundary moves by at most `noise` x the clip's length: a common shift of up to
  half that plus an independent jitter of up to half. Clamped to [0, duration]; a
  segment keeps at least 20 % of its clip's length. Times in seconds, 3 decimals.
  """
  out = []
  for start, end in clips:
    length = end - start
    shift, ds, de = rng.uniform(-0.5, 0.5, 3) * noise * length
    s = min(max(start + shift + ds, 0.0), duration)
    e = min(max(end + shift + de, s + 0.2 * length), duration)
    s = min(s, e - 0.2 * length)
    out.append((round(s, 3), round(e, 3)))
  return out


@dataclasses.dataclass(frozen=True)
class _Job:
  out_dir: str
  index: int
  seed: int
  size: int
  fps: float
  noise: float
  val_fraction: float
  min_steps: int
  max_steps: int


def _write_json(path: str, obj: Any) -> None:
  """JSON written atomically: a temporary file in the same folder, then a rename."""
  tmp = f"{path}.tmp-{os.getpid()}"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(obj, f, separators=(",", ":"))
  os.replace(tmp, path)


def _make_video(job: _Job) -> dict[str, Any]:
  """Renders, encodes and describes one video; writes its mp4 and states JSON."""
  vid = f"toy_{job.index:06d}"
  recipe, rng = video_recipe(job.seed, job.index, job.val_fraction, job.min_steps, job.max_steps)
  frames, tl = toy_render.render_story(recipe, job.size, job.fps)
  video_io.write_video(os.path.join(job.out_dir, "videos", f"{vid}.mp4"), frames, job.fps)
  duration = len(frames) / job.fps
  clips = [(f0 / job.fps, f1 / job.fps) for f0, f1 in tl.clips]
  segments = noisy_segments(clips, duration, job.noise, rng) if job.noise > 0 else clips
  steps = []
  for i, (step, (f0, f1), (a, b)) in enumerate(zip(recipe.steps, tl.clips, tl.motion)):
    steps.append(
      {
        "index": i,
        "action": step.action,
        "ingredient": step.ingredient,
        "text": step.text,
        "start": clips[i][0],
        "end": clips[i][1],
        "frames": [f0, f1],
        "motion": [a, b],
        "state": i + 1,
      }
    )
  _write_json(
    os.path.join(job.out_dir, "states", f"{vid}.json"),
    {
      "video_id": vid,
      "dish": recipe.dish,
      "split": recipe.split,
      "fps": job.fps,
      "size": job.size,
      "num_frames": len(frames),
      "duration": duration,
      "ingredients": list(recipe.ingredients),
      "routes": list(recipe.routes),
      "states": [s.to_json() for s in tl.states],
      "steps": steps,
      "frames": {"state": tl.state_index.tolist(), "moving": tl.moving.astype(int).tolist()},
    },
  )
  annotation = {
    "duration": duration,
    "subset": recipe.split,
    "recipe_type": recipe.dish,
    "annotations": [
      {"segment": [s, e], "id": i, "sentence": step.text}
      for i, ((s, e), step) in enumerate(zip(segments, recipe.steps))
    ],
    "video_url": f"videos/{vid}.mp4",
  }
  captions = [
    {
      "video_id": vid,
      "start": s,
      "end": e,
      "caption": caption(tl.states[i], tl.states[i + 1], recipe.steps[i]),
    }
    for i, (s, e) in enumerate(clips)
  ]
  return {
    "video_id": vid,
    "annotation": annotation,
    "captions": captions,
    "split": recipe.split,
    "steps": len(recipe.steps),
    "frames": len(frames),
  }


def generate_dataset(
  out_dir: str,
  num_videos: int,
  seed: int = 0,
  size: int = 64,
  fps: float = 8.0,
  noise: float = 0.0,
  val_fraction: float = 0.2,
  workers: int = 0,
  preview: bool = False,
  progress: bool = True,
  min_steps: int = 4,
  max_steps: int = 12,
) -> dict[str, Any]:
  """Writes the raw toy-kitchen data set into `out_dir`.

  Files:
    videos/<video_id>.mp4: one story per video (H.264, size x size, `fps`).
    youcook2_annotations.json: {"database": {video_id: {"duration": s, "subset":
      "training" | "validation", "recipe_type": dish, "annotations": [{"segment":
      [start, end], "id": i, "sentence": action}], "video_url": "videos/<id>.mp4"}}};
      segments are the true clip times, jittered when noise > 0 (`noisy_segments`).
    captions.jsonl: per clip {"video_id", "start", "end", "caption"}, true times.
    states/<video_id>.json: dish, split, fps, size, num_frames, duration, ingredients,
      routes, "states" ([N + 1] State.to_json; [0] is the initial state), "steps" (per
      step: index, action, ingredient, text, start, end, frames [f0, f1), motion [a, b),
      state = index into "states" after the step) and "frames" ({"state": [T] index
      into "states", "moving": [T] 0/1}).
    preview.png (preview=True): contact sheet of video 0.

  Video i uses the seed (seed, i) and is validation every 1/val_fraction-th index, so
  a video does not depend on num_videos or workers. workers: 0 = one process per CPU,
  1 = in this process. Returns a summary (counts per split, paths, seconds).
  """
  if num_videos < 1:
    raise ValueError(f"num_videos must be >= 1, got {num_videos}")
  if size % 16 or not 16 <= size <= 256:
    raise ValueError(f"size must be a multiple of 16 in [16, 256], got {size}")
  if not 4 <= min_steps <= max_steps <= 12:
    raise ValueError(f"steps must satisfy 4 <= min <= max <= 12, got {min_steps}..{max_steps}")
  if not fps > 0 or not 0 <= noise <= 1 or not 0 <= val_fraction < 1:
    raise ValueError(
      f"need fps > 0, 0 <= noise <= 1, 0 <= val_fraction < 1; got fps={fps}, "
      f"noise={noise}, val_fraction={val_fraction}"
    )
  t0 = time.perf_counter()
  for sub in ("videos", "states"):
    os.makedirs(os.path.join(out_dir, sub), exist_ok=True)
  jobs = [
    _Job(out_dir, i, seed, size, fps, noise, val_fraction, min_steps, max_steps)
    for i in range(num_videos)
  ]
  workers = min(workers or os.cpu_count() or 1, num_videos)
  bar = tqdm(total=num_videos, desc="toy kitchen", unit="video", disable=not progress)
  results = []
  if workers == 1:
    for job in jobs:
      results.append(_make_video(job))
      bar.update()
  else:  # spawn: safe even when the caller has started threads (JAX, grain).
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
      chunk = max(1, min(16, num_videos // (4 * workers)))
      for r in pool.imap(_make_video, jobs, chunksize=chunk):  # In order: deterministic.
        results.append(r)
        bar.update()
  bar.close()
  ann_path = os.path.join(out_dir, "youcook2_annotations.json")
  _write_json(ann_path, {"database": {r["video_id"]: r["annotation"] for r in results}})
  cap_path = os.path.join(out_dir, "captions.jsonl")
  tmp = f"{cap_path}.tmp-{os.getpid()}"
  with open(tmp, "w", encoding="utf-8") as f:
    for r in results:
      for c in r["captions"]:
        f.write(json.dumps(c) + "\n")
  os.replace(tmp, cap_path)
  preview_path = None
  if preview:
    recipe, _ = video_recipe(seed, 0, val_fraction, min_steps, max_steps)
    frames, tl = toy_render.render_story(recipe, size, fps)
    preview_path = os.path.join(out_dir, "preview.png")
    toy_render.contact_sheet(
      frames, tl, [s.text for s in recipe.steps], f"{results[0]['video_id']}: {recipe.dish}"
    ).save(preview_path)
  return {
    "out_dir": out_dir,
    "videos": num_videos,
    "training": sum(r["split"] == "training" for r in results),
    "validation": sum(r["split"] == "validation" for r in results),
    "steps": sum(r["steps"] for r in results),
    "frames": sum(r["frames"] for r in results),
    "annotations": ann_path,
    "captions": cap_path,
    "videos_dir": os.path.join(out_dir, "videos"),
    "states_dir": os.path.join(out_dir, "states"),
    "preview": preview_path,
    "seconds": time.perf_counter() - t0,
  }
