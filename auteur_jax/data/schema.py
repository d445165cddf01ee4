"""Story / Clip records: the unit of CookGen data, with JSONL in and out.

A *story* is the ordered clips of one video. Each clip has a time range (seconds), the
matched action (a short instruction) and a dense caption of what the clip shows. One
story is one JSON object per line of a `.jsonl` file; `data/README.md` documents the
fields. Validation errors name the file and line.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Iterator
from typing import Any

from auteur_jax import paths

SPLITS = ("train", "val", "test")


class SchemaError(ValueError):
  """A story record is malformed; the message names where (file:line) and why."""


@dataclasses.dataclass(frozen=True)
class Clip:
  """One step of a story.

  Attributes:
    clip_id: unique within its story.
    start, end: time range in seconds from the start of the video, start < end.
    action: the step's instruction (a_t in the paper).
    caption: dense description of the clip (c_t).
    keyframe_time: seconds; the frame the visual state z_t is taken from. None means
      the middle of the clip.
    alternatives: other phrasings of the action (e.g. HowToCaption's further captions of
      the same segment), kept for reference; the models read `action` only. Written to
      the stories file only when not empty.
  """

  clip_id: str
  start: float
  end: float
  action: str
  caption: str
  keyframe_time: float | None = None
  alternatives: tuple[str, ...] = ()

  @property
  def keyframe(self) -> float:
    """The keyframe time in seconds (the clip's middle unless set)."""
    return 0.5 * (self.start + self.end) if self.keyframe_time is None else self.keyframe_time


@dataclasses.dataclass(frozen=True)
class Story:
  """The ordered clips of one video.

  Attributes:
    video_id: unique within a data set.
    source: where it came from (`youcook2`, `howto100m`, `toy_kitchen`, ...).
    split: one of SPLITS.
    task: the recipe / dish name (the director's prompt).
    duration: video length in seconds.
    fps: frames per second of the source video, if known.
    video_path: path of the video file, relative to the stories file's folder or absolute.
    clips: ordered by start time, inside [0, duration].
  """

  video_id: str
  source: str
  split: str
  task: str
  duration: float
  fps: float | None
  video_path: str | None
  clips: tuple[Clip, ...]

  def to_json(self) -> dict[str, Any]:
    d = dataclasses.asdict(self)
    d["clips"] = [_clip_json(c) for c in self.clips]
    return d


def _clip_json(c: Clip) -> dict[str, Any]:
  """A clip's JSON object; `alternatives` only when there are some (a list of strings)."""
  d = dataclasses.asdict(c)
  if c.alternatives:
    d["alternatives"] = list(c.alternatives)
  else:
    del d["alternatives"]
  return d


_STORY_KEYS = {f.name for f in dataclasses.fields(Story)}
_CLIP_KEYS = {f.name for f in dataclasses.fields(Clip)}
_OPTIONAL = {"fps", "video_path", "keyframe_time", "alternatives"}


def _require(d: dict, keys: set[str], what: str, where: str) -> None:
  if not isinstance(d, dict):
    raise SchemaError(f"{where}: {what} must be a JSON object, got {type(d).__name__}")
  missing = sorted(k for k in keys - _OPTIONAL if k not in d)
  if missing:
    raise SchemaError(f"{where}: {what} is missing keys {missing}")
  unknown = sorted(set(d) - keys)
  if unknown:
    raise SchemaError(f"{where}: {what} has unknown keys {unknown}; expected {sorted(keys)}")


def _num(v: Any, key: str, where: str) -> float:
  if isinstance(v, bool) or not isinstance(v, (int, float)):
    raise SchemaError(f"{where}: '{key}' must be a number, got {v!r}")
  return float(v)


def _strings(v: Any, key: str, where: str) -> tuple[str, ...]:
  if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
    raise SchemaError(f"{where}: '{key}' must be a list of strings, got {v!r}")
  return tuple(v)


def story_from_json(d: dict[str, Any], where: str = "<story>") -> Story:
  """Builds and validates a Story from its JSON object; errors name `where`."""
  _require(d, _STORY_KEYS, "story", where)
  clips = []
  for i, c in enumerate(d["clips"] if isinstance(d["clips"], list) else [None]):
    cw = f"{where}: clips[{i}]"
    _require(c, _CLIP_KEYS, "clip", cw)
    kt = c.get("keyframe_time")
    clips.append(
      Clip(
        clip_id=str(c["clip_id"]),
        start=_num(c["start"], "start", cw),
        end=_num(c["end"], "end", cw),
        action=c["action"],
        caption=c["caption"],
        keyframe_time=None if kt is None else _num(kt, "keyframe_time", cw),
        alternatives=_strings(c.get("alternatives", []), "alternatives", cw),
      )
    )
  fps = d.get("fps")
  story = Story(
    video_id=str(d["video_id"]),
    source=str(d["source"]),
    split=d["split"],
    task=d["task"],
    duration=_num(d["duration"], "duration", where),
    fps=None if fps is None else _num(fps, "fps", where),
    video_path=d.get("video_path"),
    clips=tuple(clips),
  )
  validate(story, where)
  return story


def validate(story: Story, where: str = "<story>") -> None:
  """Checks a story's invariants; raises SchemaError naming `where` and the clip."""
  w = f"{where} (video {story.video_id!r})"
  if not story.video_id:
    raise SchemaError(f"{where}: empty video_id")
  if story.split not in SPLITS:
    raise SchemaError(f"{w}: split must be one of {SPLITS}, got {story.split!r}")
  if not isinstance(story.task, str) or not story.task.strip():
    raise SchemaError(f"{w}: empty task")
  if not story.duration > 0:
    raise SchemaError(f"{w}: duration must be > 0, got {story.duration}")
  if story.fps is not None and not story.fps > 0:
    raise SchemaError(f"{w}: fps must be > 0, got {story.fps}")
  if not story.clips:
    raise SchemaError(f"{w}: a story needs at least one clip")
  seen: set[str] = set()
  prev_start = -1.0
  for i, c in enumerate(story.clips):
    cw = f"{w} clip {i} ({c.clip_id!r})"
    if c.clip_id in seen:
      raise SchemaError(f"{cw}: duplicate clip_id")
    seen.add(c.clip_id)
    if not c.start < c.end:
      raise SchemaError(f"{cw}: start ({c.start}) must be < end ({c.end})")
    if c.start < 0 or c.end > story.duration + 1e-6:
      raise SchemaError(f"{cw}: [{c.start}, {c.end}] is outside the video [0, {story.duration}]")
    if c.start < prev_start:
      raise SchemaError(f"{cw}: clips must be sorted by start; {c.start} < {prev_start}")
    prev_start = c.start
    for key in ("action", "caption"):
      v = getattr(c, key)
      if not isinstance(v, str) or not v.strip():
        raise SchemaError(f"{cw}: empty {key}")
    if any(not isinstance(a, str) or not a.strip() for a in c.alternatives):
      raise SchemaError(f"{cw}: alternatives must be non-empty strings, got {c.alternatives!r}")
    if c.keyframe_time is not None and not c.start <= c.keyframe_time <= c.end:
      raise SchemaError(f"{cw}: keyframe_time {c.keyframe_time} is outside [{c.start}, {c.end}]")


def iter_stories(path: str | os.PathLike) -> Iterator[Story]:
  """Yields the stories of a JSONL file, validating each; errors name file:line."""
  seen: dict[str, int] = {}
  with paths.open_file(path) as f:
    for lineno, line in enumerate(f, 1):
      if not line.strip():
        continue
      where = f"{os.fspath(path)}:{lineno}"
      try:
        d = json.loads(line)
      except json.JSONDecodeError as e:
        raise SchemaError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
      story = story_from_json(d, where)
      if story.video_id in seen:
        raise SchemaError(
          f"{where}: video_id {story.video_id!r} already used on line {seen[story.video_id]}"
        )
      seen[story.video_id] = lineno
      yield story


def read_stories(path: str | os.PathLike) -> list[Story]:
  """All stories of a JSONL file (see iter_stories)."""
  return list(iter_stories(path))


def write_stories(path: str | os.PathLike, stories: Iterable[Story]) -> int:
  """Writes stories as JSONL atomically (temporary file, then rename); returns the count."""
  path = os.fspath(path)
  if paths.is_uri(path):  # One upload of the whole file, after every story validated.
    lines = []
    for n, s in enumerate(stories):
      validate(s, f"{path}: story {n}")
      lines.append(json.dumps(s.to_json(), ensure_ascii=False) + "\n")
    paths.write_atomic(path, "".join(lines))
    return len(lines)
  tmp = f"{path}.tmp-{os.getpid()}"
  n = 0
  with open(tmp, "w", encoding="utf-8") as f:
    for s in stories:
      validate(s, f"{path}: story {n}")
      f.write(json.dumps(s.to_json(), ensure_ascii=False) + "\n")
      n += 1
  os.replace(tmp, path)
  return n
