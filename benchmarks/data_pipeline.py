"""Clips/s of the grain clip pipeline vs a plain single-process loop.

All read the same TFRecord shards and decode each record with the same ClipDecoder
(JPEG frames -> uint8 arrays) into batches; only the loading machinery differs. The
records are generated here: smooth noisy frames, so JPEG decoding costs what real
frames cost. Two grain set-ups run: its read threads in this process (toy/data's
default: JPEG decoding releases the GIL, so threads decode in parallel without copying
batches through shared memory) and worker processes (for GIL-bound transforms).

  python benchmarks/data_pipeline.py [--clips 256] [--size 224] [--frames 8] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import numpy as np
from absl import flags

from auteur_jax.data import examples, pipeline, tfrecord, video_io
from auteur_jax.data.schema import Clip


def write_records(out_dir: str, clips: int, size: int, frames: int, shards: int) -> list[str]:
  rng = np.random.default_rng(0)
  yy, xx = np.mgrid[0:size, 0:size]
  with tfrecord.ShardedWriter(out_dir, "clips", shards) as w:
    for i in range(clips):
      jpegs = []
      for f in range(frames):
        base = (np.sin(xx / (7 + i % 5) + f * 0.3) + np.cos(yy / 11)) * 60 + 128
        img = base[..., None] + rng.normal(0, 12, (size, size, 3))
        jpegs.append(video_io.encode_jpeg(np.clip(img, 0, 255).astype(np.uint8)))
      clip = Clip(f"c{i}", 0.0, 1.0, "stir the pot", "a pot on the stove")
      w.write(examples.encode_clip(f"v{i}", clip, jpegs, 8.0))
  return w.paths


def plain_loop(paths: list[str], decoder, batch: int, n_batches: int) -> float:
  """Reads records in order, decodes, stacks batches; returns clips/s."""

  def records():
    while True:
      for p in paths:
        yield from tfrecord.iter_records(p)

  it = records()
  start = time.perf_counter()
  for _ in range(n_batches):
    items = [decoder(next(it)) for _ in range(batch)]
    _ = {k: np.stack([x[k] for x in items]) for k in items[0]}
  return n_batches * batch / (time.perf_counter() - start)


def grain_loop(
  paths: list[str], decoder, batch: int, n_batches: int, workers: int, threads: int
) -> float:
  """The real pipeline; the clock starts after the first batch (workers started)."""
  it = iter(
    pipeline.make_dataset(paths, decoder, batch, seed=0, num_workers=workers, num_threads=threads)
  )
  next(it)
  start = time.perf_counter()
  for _ in range(n_batches):
    next(it)
  rate = n_batches * batch / (time.perf_counter() - start)
  if workers:
    it.close()
  return rate


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__)
  ap.add_argument("--clips", type=int, default=256)
  ap.add_argument("--size", type=int, default=224)
  ap.add_argument("--frames", type=int, default=8)
  ap.add_argument("--batch", type=int, default=8)
  ap.add_argument("--batches", type=int, default=24, help="timed batches per repeat")
  ap.add_argument("--workers", type=int, default=2, help="grain threads / worker processes")
  ap.add_argument("--repeats", type=int, default=5)
  args = ap.parse_args()
  flags.FLAGS.mark_as_parsed()
  decoder = pipeline.ClipDecoder(num_frames=args.frames)
  with tempfile.TemporaryDirectory() as d:
    paths = write_records(d, args.clips, args.size, args.frames, shards=4)
    print(
      f"{args.clips} clips x {args.frames} JPEG frames {args.size}x{args.size}, "
      f"batch {args.batch}, {os.cpu_count()} cores"
    )
    plain_loop(paths, decoder, args.batch, 2)  # Warm-up (page cache, imports).
    n = args.workers
    runs = {
      "plain single-process loop": lambda: plain_loop(paths, decoder, args.batch, args.batches),
      f"grain, {n} read threads": lambda: grain_loop(
        paths, decoder, args.batch, args.batches, 0, n
      ),
      f"grain, {n} worker processes": lambda: grain_loop(
        paths, decoder, args.batch, args.batches, n, 1
      ),
    }
    rates: dict[str, list[float]] = {k: [] for k in runs}
    for r in range(args.repeats):  # Interleaved, so drift in machine load hits all.
      for name, fn in runs.items():
        rates[name].append(fn())
      print(f"  repeat {r}: " + ", ".join(f"{k} {v[-1]:.1f}" for k, v in rates.items()))
  med = {k: statistics.median(v) for k, v in rates.items()}
  for name, rate in med.items():
    print(f"{name}: {rate:.1f} clips/s (median of {args.repeats})")
  plain, threads, procs = med.values()
  print(
    f"ratio grain {n} worker processes / plain loop clips/s, higher is better: {procs / plain:.2f}"
  )
  print(
    f"ratio grain clips/s ({n} read threads, the config default) over plain loop "
    f"clips/s, higher is better: {threads / plain:.2f} (target >= 1.5)"
  )


if __name__ == "__main__":
  main()
