"""The data build (data/build.py) as an Apache Beam pipeline: the same records, shard files
and dataset.json as the process-pool build, on any Beam runner (local FnApi, Dataflow,
Flink, Spark).

  stories file (read by the driver; each story with its index in the file)
    -> plan: per story its split's story index and first clip index (known up front: a
       story gives one clip record per clip), so every record's shard and position are
       those ShardedWriter's round robin gives (record k of a split and kind goes to shard
       k % n at position k // n)
    -> Reshuffle -> EncodeStory (DoFn: decode, cut, resize, JPEG one story; build.py's
       encode_story_clips and examples.encode_story)
    -> GroupByKey on (split, kind, shard) (an empty shard still gets its key)
    -> WriteShard (DoFn: records sorted by position, checked against the plan, written to
       a temporary file and renamed onto the pool build's file name; our CRCs)
    -> one summary step writes OUT/dataset.json (the pool build's content; no field
       differs).

Idempotent: a shard written twice (a retried bundle) is one complete file, each record
once (positions are checked: a duplicate with equal bytes is dropped, with other bytes an
error). The records of one shard are held in the memory of the worker that writes it:
choose num_shards so that a shard fits. dataset.json is written last, after every shard.

Paths (stories, videos, OUT) may be URIs (gs://, as Dataflow users keep them): every file
access goes through auteur_jax/paths.py, as in the pool build; a worker reads a remote
video through a local copy and writes a shard to a temporary object renamed into place.

Beam is imported inside the functions here only: the package imports without the `beam`
extra.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from auteur_jax import paths
from auteur_jax.data import examples, inventory, tfrecord, video_io
from auteur_jax.data.build import FrameSpec, encode_story_clips, resolve_video
from auteur_jax.data.schema import Story, read_stories

RUNNERS = ("pool", "direct", "prism", "dataflow", "flink", "spark")
_BEAM_RUNNERS = {"dataflow": "DataflowRunner", "flink": "FlinkRunner", "spark": "SparkRunner"}
KINDS = ("clips", "stories")

ShardKey = tuple[str, str, int]  # (split, kind: "clips" | "stories", shard index)


class RunnerError(ValueError):
  """A runner that cannot run here (prism offline) or bad --pipeline-option values."""


@dataclasses.dataclass(frozen=True)
class StoryTask:
  """One story's work: where its records go.

  index: the story's index in the stories file (0-based).
  video: the resolved video path.
  story_index: the story's index among its split's stories (its story record's number).
  first_clip: the number of its first clip record among its split's clip records.
  """

  index: int
  story: Story
  video: str
  story_index: int
  first_clip: int


def shard_of(record_index: int, num_shards: int) -> tuple[int, int]:
  """(shard, position in the shard) of a split's record `record_index` of one kind: the
  round robin of tfrecord.ShardedWriter."""
  return record_index % num_shards, record_index // num_shards


def plan(stories: Sequence[Story], base_dir: str) -> list[StoryTask]:
  """Each story's task, in stories-file order (videos resolved against `base_dir`, a
  folder or a URI)."""
  stories_seen: dict[str, int] = {}
  clips_seen: dict[str, int] = {}
  tasks = []
  for i, s in enumerate(stories):
    tasks.append(
      StoryTask(
        i,
        s,
        resolve_video(s, base_dir),
        stories_seen.get(s.split, 0),
        clips_seen.get(s.split, 0),
      )
    )
    stories_seen[s.split] = stories_seen.get(s.split, 0) + 1
    clips_seen[s.split] = clips_seen.get(s.split, 0) + len(s.clips)
  return tasks


def split_totals(tasks: Sequence[StoryTask]) -> dict[str, dict[str, int]]:
  """{split: {"stories": n, "clips": n}} in order of the splits' first story (the order of
  the pool build's dataset.json)."""
  totals: dict[str, dict[str, int]] = {}
  for t in tasks:
    entry = totals.setdefault(t.story.split, {"stories": 0, "clips": 0})
    entry["stories"] += 1
    entry["clips"] += len(t.story.clips)
  return totals


def shard_path(split: str, kind: str, shard: int, num_shards: int) -> str:
  """A shard's path relative to the data set: SPLIT/KIND-i-of-n.tfrecord (the pool's)."""
  return os.path.join(split, tfrecord.shard_name(kind, shard, num_shards))


def expected_counts(totals: dict[str, dict[str, int]], num_shards: int) -> dict[ShardKey, int]:
  """Records each shard must hold: {(split, kind, shard): records}."""
  counts = {}
  for split, entry in totals.items():
    for kind in KINDS:
      n = entry[kind]
      for shard in range(num_shards):
        counts[(split, kind, shard)] = n // num_shards + (1 if shard < n % num_shards else 0)
  return counts


def encode_task(
  task: StoryTask, spec: FrameSpec, num_shards: int
) -> Iterator[tuple[ShardKey, tuple[int, bytes]]]:
  """Decodes, cuts, resizes and JPEGs one story: yields ((split, kind, shard), (position,
  serialized record)) for each of its clip records and its story record."""
  story = task.story
  clip_records = encode_story_clips(story, task.video, spec)
  if len(clip_records) != len(story.clips):  # The plan counts one record per clip.
    raise video_io.VideoError(
      f"{task.video}: {len(clip_records)} clip records for {len(story.clips)} clips"
    )
  for j, record in enumerate(clip_records):
    shard, pos = shard_of(task.first_clip + j, num_shards)
    yield (story.split, "clips", shard), (pos, record)
  shard, pos = shard_of(task.story_index, num_shards)
  yield (story.split, "stories", shard), (pos, examples.encode_story(story))


def write_shard(
  out_dir: str,
  key: ShardKey,
  items: Iterable[tuple[int, bytes] | None],
  num_shards: int,
  expected: int,
) -> tuple[str, int]:
  """Writes one shard file atomically (temporary file + rename) from its (position,
  record) items (None items mark that the shard exists); returns (path relative to
  out_dir, records). Writing the same shard again gives the same file.

  Raises ValueError if the positions are not exactly 0 .. expected - 1 (a duplicate
  position with equal bytes, as a retried bundle gives, is dropped).
  """
  split, kind, shard = key
  by_pos: dict[int, bytes] = {}
  for item in items:
    if item is None:
      continue
    pos, record = item
    if pos in by_pos and by_pos[pos] != record:
      raise ValueError(f"{split}/{kind} shard {shard}: two different records at {pos}")
    by_pos[pos] = record
  rel = shard_path(split, kind, shard, num_shards)
  if sorted(by_pos) != list(range(expected)):
    raise ValueError(
      f"{rel}: got records at positions {sorted(by_pos)[:10]}..., expected 0..{expected - 1}"
    )
  path = paths.join(out_dir, rel)
  paths.makedirs(paths.dirname(path))
  with tfrecord.TFRecordWriter(path) as w:  # Temporary file / object, renamed.
    for pos in range(expected):
      w.write(by_pos[pos])
  return rel, expected


def write_summary(
  out_dir: str,
  stories_path: str,
  spec: FrameSpec,
  totals: dict[str, dict[str, int]],
  num_shards: int,
  written: Iterable[tuple[str, int]],
) -> dict:
  """Writes OUT/dataset.json atomically, as the pool build does (the same bytes), after
  checking that every shard was written with its records (`written`: (relative path,
  records) per shard).

  Returns the summary.
  """
  reported = dict(written)
  summary: dict[str, Any] = {
    "stories_file": paths.absolute(stories_path),
    "frames": dataclasses.asdict(spec),
    "schema_version": examples.SCHEMA_VERSION,
    "splits": {},
  }
  for split, entry in totals.items():
    clips = [shard_path(split, "clips", i, num_shards) for i in range(num_shards)]
    stories = [shard_path(split, "stories", i, num_shards) for i in range(num_shards)]
    missing = [p for p in clips + stories if p not in reported]
    if missing:
      raise ValueError(f"{out_dir}: shards not written: {missing}")
    counts = inventory.shard_counts(out_dir, [paths.join(out_dir, p) for p in clips + stories])
    bad = {p: (n, reported[p]) for p, n in counts.items() if n != reported[p]}
    if bad:
      raise ValueError(f"{out_dir}: shards hold other record counts than written: {bad}")
    summary["splits"][split] = {
      **entry,
      "clip_shards": clips,
      "story_shards": stories,
      "shard_records": counts,
    }
  paths.write_atomic(paths.join(out_dir, "dataset.json"), json.dumps(summary, indent=1))
  return summary


def pipeline_flags(options: Sequence[str]) -> list[str]:
  """`--pipeline-option K=V` values -> Beam's command-line flags `--K=V`."""
  flags = []
  for o in options:
    k, sep, v = o.partition("=")
    k = k.strip().lstrip("-")
    if not sep or not k:
      raise RunnerError(f"--pipeline-option {o!r}: expected KEY=VALUE")
    flags.append(f"--{k}={v}")
  return flags


def make_runner(runner: str) -> Any:
  """The Beam runner for a --runner name (direct: the local FnApi runner)."""
  if runner == "prism":
    raise RunnerError(
      "--runner prism downloads the Prism binary at start, which cannot work offline; "
      "use --runner direct (the local FnApi runner)"
    )
  if runner == "direct":
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    return FnApiRunner()
  if runner in _BEAM_RUNNERS:
    return _BEAM_RUNNERS[runner]
  raise RunnerError(f"--runner {runner!r}: expected one of {', '.join(RUNNERS)}")


def build(
  stories_path: str,
  out_dir: str,
  spec: FrameSpec | None = None,
  num_shards: int = 4,
  runner: str = "direct",
  pipeline_options: Sequence[str] = (),
) -> dict:
  """Builds the TFRecord shards of every split in `stories_path` (JSONL) into `out_dir`
  with a Beam pipeline on `runner` (direct, dataflow, flink, spark); the same files as
  data.build.build. Both paths, and the videos, may be URIs (gs://...): the workers
  must reach them (the direct runner's in-process workers see what this process sees).

  Args:
    spec: frame settings (None: FrameSpec()).
    num_shards: clip and story shards per split.
    pipeline_options: KEY=VALUE Beam pipeline options (e.g. direct_num_workers=2,
      direct_running_mode=multi_processing, project=..., temp_location=...).
  Returns:
    The summary that is also written to OUT/dataset.json.
  """
  if not isinstance(num_shards, int) or num_shards < 1:
    raise ValueError(f"num_shards must be an int >= 1, got {num_shards!r}")
  spec = spec or FrameSpec()
  beam_runner = make_runner(runner)  # Refuses prism before any work.
  flags = pipeline_flags(pipeline_options)
  try:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
  except ImportError as e:
    raise RunnerError(
      f"--runner {runner} needs Apache Beam: pip install 'auteur_jax[beam]' ({e})"
    ) from e

  stories = read_stories(stories_path)
  stories_file = paths.absolute(stories_path)
  tasks = plan(stories, paths.dirname(stories_file))
  for t in tasks:  # Fail before any work when a video is missing.
    if not paths.is_file(t.video):
      raise video_io.VideoError(f"{t.video}: video not found (from {stories_path})")
  totals = split_totals(tasks)
  expected = expected_counts(totals, num_shards)
  out_dir = paths.absolute(out_dir)
  paths.makedirs(out_dir)
  with beam.Pipeline(runner=beam_runner, options=PipelineOptions(flags)) as p:
    records = (
      p
      | "Stories" >> beam.Create(tasks)
      | "Spread" >> beam.Reshuffle()  # Stories to workers one by one, not one bundle.
      | "Encode" >> beam.FlatMap(encode_task, spec, num_shards)
    )
    every_shard = p | "EveryShard" >> beam.Create([(k, None) for k in expected])
    _ = (
      (records, every_shard)
      | "Merge" >> beam.Flatten()
      | "ByShard" >> beam.GroupByKey()
      | "Write" >> beam.Map(_write_group, out_dir, num_shards, expected)
      | "All" >> beam.combiners.ToList()
      | "Summary" >> beam.Map(_write_summary, out_dir, stories_file, spec, totals, num_shards)
    )
  meta = inventory.read_meta(out_dir)
  if meta is None:
    raise RuntimeError(f"{out_dir}/dataset.json: not written by the pipeline")
  return meta


def _write_group(
  element: tuple[ShardKey, Iterable[tuple[int, bytes] | None]],
  out_dir: str,
  num_shards: int,
  expected: dict[ShardKey, int],
) -> tuple[str, int]:
  """The Write stage: one GroupByKey output -> write_shard."""
  key, items = element
  return write_shard(out_dir, key, items, num_shards, expected[key])


def _write_summary(
  written: list[tuple[str, int]],
  out_dir: str,
  stories_path: str,
  spec: FrameSpec,
  totals: dict[str, dict[str, int]],
  num_shards: int,
) -> dict:
  """The Summary stage: every shard's (path, records) -> write_summary."""
  return write_summary(out_dir, stories_path, spec, totals, num_shards, written)
