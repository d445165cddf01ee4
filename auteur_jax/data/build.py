"""Stories + videos -> TFRecord shards (clip records for the video models, story records
for the director), one folder per split:

  OUT/<split>/clips-00000-of-000NN.tfrecord     one tf.train.Example per clip
  OUT/<split>/stories-00000-of-000NN.tfrecord   one per story
  OUT/dataset.json                              counts, frame settings, shard lists,
                                                records per shard (data/inventory.py)

Videos are decoded in a process pool (one story per task, one decode pass per video);
the main process writes. Shards are written to temporary names and renamed at the end,
so a failed build leaves earlier outputs as they were.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import tqdm

from auteur_jax import paths
from auteur_jax.data import examples, inventory, tfrecord, video_io
from auteur_jax.data.schema import Story, read_stories


@dataclasses.dataclass(frozen=True)
class FrameSpec:
  """How clips are sampled: frames per second, size in pixels (a square side or (height,
  width)), JPEG quality."""

  fps: float = 8.0
  size: video_io.Size = 64
  jpeg_quality: int = 90


def resolve_video(story: Story, base_dir: str) -> str:
  """The story's video path (relative paths are relative to `base_dir`)."""
  if not story.video_path:
    raise video_io.VideoError(
      f"story {story.video_id!r} has no video_path; pass --video-dir "
      "to the importer or set it in the stories file"
    )
  return paths.join(base_dir, story.video_path)


def encode_story_clips(story: Story, video: str, spec: FrameSpec) -> list[bytes]:
  """Decodes the story's clips in one pass over its video; returns serialized clip records."""
  with paths.local_copy(video) as local:  # The decoder reads a local file.
    return _encode_story_clips(story, local, spec, video)


def _encode_story_clips(story: Story, video: str, spec: FrameSpec, name: str) -> list[bytes]:
  per_clip = [video_io.sample_times(c.start, c.end, spec.fps) for c in story.clips]
  info = video_io.probe(video)
  # Annotations may overshoot the last frame a little: drop times past the end.
  per_clip = [t[t < info.duration] for t in per_clip]
  for c, t in zip(story.clips, per_clip):
    if len(t) == 0:
      raise video_io.VideoError(
        f"{name}: clip {c.clip_id} [{c.start}, {c.end}) s has no "
        f"frame at {spec.fps} fps (video is {info.duration:.2f} s)"
      )
  frames = video_io.read_frames_at(video, np.concatenate(per_clip), spec.size)
  records, i = [], 0
  for c, t in zip(story.clips, per_clip):
    jpegs = [video_io.encode_jpeg(f, spec.jpeg_quality) for f in frames[i : i + len(t)]]
    i += len(t)
    records.append(examples.encode_clip(story.video_id, c, jpegs, spec.fps))
  return records


def _work(args: tuple[Story, str, FrameSpec]) -> tuple[list[bytes], bytes]:
  story, video, spec = args
  return encode_story_clips(story, video, spec), examples.encode_story(story)


def build(
  stories_path: str,
  out_dir: str,
  spec: FrameSpec = FrameSpec(),
  num_shards: int = 4,
  workers: int = 0,
  progress: bool = True,
) -> dict:
  """Builds the TFRecord shards of every split in `stories_path` (JSONL) into `out_dir`.

  Args:
    num_shards: clip and story shards per split (a JAX process reads whole shards, so
      use at least the number of processes that will read a split).
    workers: decoding processes; 0 means os.cpu_count().
  Returns:
    The summary that is also written to OUT/dataset.json.
  """
  stories = read_stories(stories_path)
  base = paths.dirname(paths.absolute(stories_path))
  tasks = [(s, resolve_video(s, base), spec) for s in stories]
  for _, video, _ in tasks:  # Fail before any work when a video is missing.
    if not paths.is_file(video):
      raise video_io.VideoError(f"{video}: video not found (from {stories_path})")
  splits = sorted({s.split for s in stories})
  writers = {}
  summary: dict[str, Any] = {
    "stories_file": paths.absolute(stories_path),
    "frames": dataclasses.asdict(spec),
    "schema_version": examples.SCHEMA_VERSION,
    "splits": {},
  }
  try:
    for split in splits:
      d = paths.join(out_dir, split)
      writers[split] = (
        tfrecord.ShardedWriter(d, "clips", num_shards),
        tfrecord.ShardedWriter(d, "stories", num_shards),
      )
    workers = workers or os.cpu_count() or 1
    ctx = multiprocessing.get_context("spawn")  # No fork after jax / grain threads.
    with ctx.Pool(workers) if workers > 1 else _InlinePool() as pool:
      results = pool.imap(_work, tasks, chunksize=1)
      for (story, _, _), (clip_records, story_record) in zip(
        tasks,
        tqdm.tqdm(results, total=len(tasks), desc="build", unit="video", disable=not progress),
      ):
        clips_w, stories_w = writers[story.split]
        for r in clip_records:
          clips_w.write(r)
        stories_w.write(story_record)
        entry = summary["splits"].setdefault(story.split, {"stories": 0, "clips": 0})
        entry["stories"] += 1
        entry["clips"] += len(clip_records)
  except BaseException:
    for w in writers.values():
      w[0].abort()
      w[1].abort()
    raise
  for split, (clips_w, stories_w) in writers.items():
    clips_w.close()
    stories_w.close()
    entry = summary["splits"][split]
    entry["clip_shards"] = [paths.relative(p, out_dir) for p in clips_w.paths]
    entry["story_shards"] = [paths.relative(p, out_dir) for p in stories_w.paths]
    entry["shard_records"] = inventory.shard_counts(out_dir, clips_w.paths + stories_w.paths)
  paths.write_atomic(paths.join(out_dir, "dataset.json"), json.dumps(summary, indent=1))
  return summary


class _InlinePool:
  """The Pool interface for workers=1: runs in this process (easier to debug)."""

  def imap(self, fn, items: Sequence, chunksize: int = 1):
    return map(fn, items)

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    return False
