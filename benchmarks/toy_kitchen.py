"""Toy-kitchen generation speed (videos/s) and the state reader's accuracy.

Generates N videos of 8 steps (64 x 64, 8 fps, mp4 included) into a temporary folder
with the real entry point (`generate_dataset`, a worker pool), then reads back the
world state of frames at rest from the first --eval-videos videos: clean (re-rendered),
JPEG quality 90 and the written mp4 decoded with video_io.read_frames. Frames in motion
are reported too (best effort; not part of the reader's guarantee). The budget is
1,000 videos in 120 s on this 2-core machine.

  python benchmarks/toy_kitchen.py [--videos 1000] [--workers 0] [--eval-videos 40]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np

from auteur_jax.data import toy_kitchen as tk
from auteur_jax.data import toy_recipes as trc
from auteur_jax.data import toy_render as tr
from auteur_jax.data import toy_world as tw
from auteur_jax.data import video_io
from auteur_jax.eval import toy_state as ts

BUDGET_S = 120.0


def reader_accuracy(
  out: str, n: int, seed: int, size: int, fps: float, steps: int
) -> dict[str, tuple[float, float, int]]:
  """{condition: (per-object accuracy, ingredient-only accuracy, frames)}."""
  preds: dict[str, list] = {"clean": [], "jpeg q90": [], "mp4": [], "clean, in motion": []}
  trues: dict[str, list] = {k: [] for k in preds}
  for i in range(n):
    vid = f"toy_{i:06d}"
    truth = json.load(open(os.path.join(out, "states", f"{vid}.json")))
    recipe, _ = trc.video_recipe(seed, i, 0.2, steps, steps)
    frames, tl = tr.render_story(recipe, size, fps)
    decoded = video_io.read_frames(
      os.path.join(out, "videos", f"{vid}.mp4"), 0.0, truth["duration"], fps
    )
    states = [tw.State.from_json(s) for s in truth["states"]]
    assert np.array_equal(truth["frames"]["state"], tl.state_index), vid
    for t, (k, moving) in enumerate(zip(truth["frames"]["state"], truth["frames"]["moving"])):
      views = (
        {"clean, in motion": frames[t]}
        if moving
        else {
          "clean": frames[t],
          "mp4": decoded[t],
          "jpeg q90": video_io.decode_jpeg(video_io.encode_jpeg(frames[t], 90)),
        }
      )
      for name, img in views.items():
        preds[name].append(ts.read_state(img))
        trues[name].append(states[k])
  return {
    k: (
      ts.state_accuracy(preds[k], trues[k]),
      ts.state_accuracy(preds[k], trues[k], "ingredients"),
      len(preds[k]),
    )
    for k in preds
  }


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--videos", type=int, default=1000)
  ap.add_argument("--workers", type=int, default=0, help="0: one per CPU")
  ap.add_argument("--steps", type=int, default=8)
  ap.add_argument("--size", type=int, default=64)
  ap.add_argument("--fps", type=float, default=8.0)
  ap.add_argument("--eval-videos", type=int, default=40)
  ap.add_argument("--seed", type=int, default=0)
  args = ap.parse_args()
  with tempfile.TemporaryDirectory() as out:
    start = time.perf_counter()
    summary = tk.generate_dataset(
      out,
      args.videos,
      seed=args.seed,
      size=args.size,
      fps=args.fps,
      noise=0.2,
      workers=args.workers,
      progress=False,
      min_steps=args.steps,
      max_steps=args.steps,
    )
    seconds = time.perf_counter() - start
    mb = (
      sum(
        os.path.getsize(os.path.join(out, "videos", f))
        for f in os.listdir(os.path.join(out, "videos"))
      )
      / 2**20
    )
    print(
      f"generated {args.videos} videos x {args.steps} steps at {args.size}x{args.size}, "
      f"{args.fps:g} fps ({summary['frames']} frames, {mb:.1f} MiB of mp4; "
      f"{summary['training']} training / {summary['validation']} validation), "
      f"{os.cpu_count()} CPUs, workers={args.workers or os.cpu_count()}"
    )
    print(
      f"time: {seconds:.1f} s total, {args.videos / seconds:.1f} videos/s, "
      f"{summary['frames'] / seconds:.0f} frames/s"
    )
    per_1000 = seconds * 1000 / args.videos
    print(f"extrapolated time for 1000 videos: {per_1000:.1f} s (budget {BUDGET_S:.0f} s)")
    n_eval = min(args.eval_videos, args.videos)
    acc = reader_accuracy(out, n_eval, args.seed, args.size, args.fps, args.steps)
  if n_eval:
    print(f"state reader on {n_eval} videos (frames at rest unless noted):")
  for name, (all_acc, ing_acc, frames) in acc.items() if n_eval else ():
    print(
      f"  {name:17s} {frames:6d} frames  per object {all_acc:.4f}  ingredients only {ing_acc:.4f}"
    )
  print(
    f"ratio time for 1000 videos / {BUDGET_S:.0f} s budget, lower is better: "
    f"{per_1000 / BUDGET_S:.3f} (target <= 1.0)"
  )


if __name__ == "__main__":
  main()
