"""Clips/s of the data build: the Apache Beam pipeline (direct runner) vs the process pool.

  .venv-beam/bin/python benchmarks/data_build.py [--videos 300] [--workers 2]

Run it in the Beam venv (`python3 -m venv .venv-beam && .venv-beam/bin/pip install -e
".[beam]"`: apache-beam 2.77 caps pillow / pyarrow / protobuf below the main venv's). It
writes a toy-kitchen set of `--videos` videos (data/toy_kitchen.py) and its stories once,
then builds it with data/build.py (`--workers` decoding processes) and with
data/beam_build.py on the FnApi runner in multi-processing mode with as many workers,
one run each (the build is minutes, not milliseconds), and checks that both wrote the
same records. The last line is the ratio; the target is Beam at least 0.7x the pool's
clips/s (the Beam path may cost a little locally, not more). Beam's start-up (its worker
processes, ~1.5 s here) is fixed, so small sets understate it: 24 videos 0.50, 80 videos
0.61, 300 videos 0.70 (AMD EPYC, 2 cores).
"""

from __future__ import annotations

import argparse
import glob
import os
import tempfile
import time

from auteur_jax.data import beam_build, tfrecord
from auteur_jax.data import build as pool_build
from auteur_jax.demo import data as demo_data


def _records(out: str) -> list[bytes]:
  shards = sorted(glob.glob(os.path.join(out, "*", "*.tfrecord")))
  return [r for p in shards for r in tfrecord.iter_records(p)]


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--videos", type=int, default=300)
  ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
  args = ap.parse_args()
  with tempfile.TemporaryDirectory() as tmp:
    paths = demo_data.prepare(os.path.join(tmp, "work"), args.videos, 0, progress=False)
    stories = paths["stories"]
    spec = pool_build.FrameSpec(demo_data.DEMO_FPS, demo_data.SIZE, 90)  # The demo's.
    t0 = time.perf_counter()
    meta = pool_build.build(
      stories, os.path.join(tmp, "pool"), spec, workers=args.workers, progress=False
    )
    pool_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    beam_build.build(
      stories,
      os.path.join(tmp, "beam"),
      spec,
      pipeline_options=[
        "direct_running_mode=multi_processing",
        f"direct_num_workers={args.workers}",
      ],
    )
    beam_s = time.perf_counter() - t0
    same = _records(os.path.join(tmp, "pool")) == _records(os.path.join(tmp, "beam"))
  clips = sum(s["clips"] for s in meta["splits"].values())
  print(
    f"cpu: {os.cpu_count()} cores; {args.videos} toy videos, {clips} clips, {args.workers} workers"
  )
  print(f"pool  {pool_s:7.1f} s  {clips / pool_s:7.1f} clips/s")
  print(
    f"beam  {beam_s:7.1f} s  {clips / beam_s:7.1f} clips/s (direct runner); same records: {same}"
  )
  print(f"ratio beam / pool clips/s, higher is better: {pool_s / beam_s:.2f} (target >= 0.7)")


if __name__ == "__main__":
  main()
