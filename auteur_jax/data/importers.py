"""Raw annotations -> stories: YouCook2 JSON, HowTo100M ASR JSON and HowToCaption.

The HowTo importer reads its actions from any of these layouts (`read_howto_actions`):
  - HowTo100M ASR JSON `{video_id: {"start": [s...], "end": [s...], "text": [...]}}`,
    each text a string or a list of strings;
  - HowToCaption as published: parquet (a file, or a folder of `*.parquet` shards) with
    columns `video_id` and `description`, a list of `{start, end, text: [str...]}`; the
    same rows as a JSON array or JSON Lines (`.jsonl`), or `{video_id: description}`.
Where a text is a list, its first string is the action and the rest are kept as the
clip's `alternatives` in the stories file. A value of another type is an AnnotationError
naming the file, the video and the key.

Both importers pair *clips* (time ranges with a dense caption, from a clip-caption JSONL
`{"video_id", "start", "end", "caption"}` per line) with *actions* (annotated steps or
refined ASR sentences) by the time rule in `matching.py`. Clips without a matching
action are dropped and counted in the ImportReport; so are videos left with no clip.

YouCook2 without a caption file uses its segments as the clips and each sentence as both
action and caption (YouCook2 has no dense captions of its own).
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import json
import math
import os
from typing import Any, NamedTuple

from auteur_jax.data.matching import MatchRule, match_clips_to_actions
from auteur_jax.data.schema import Clip, SchemaError, Story, validate

YOUCOOK2_SUBSETS = {"training": "train", "validation": "val", "testing": "test"}
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".mov", ".avi")


class AnnotationError(ValueError):
  """Raw annotations are malformed; the message names the file and the key."""


@dataclasses.dataclass
class ImportReport:
  """What an import kept and dropped (counts; dropped videos with the reason)."""

  videos_in: int = 0
  stories_out: int = 0
  clips_in: int = 0
  clips_matched: int = 0
  dropped_videos: list[tuple[str, str]] = dataclasses.field(default_factory=list)

  def summary(self) -> str:
    return (
      f"{self.stories_out}/{self.videos_in} videos -> stories, "
      f"{self.clips_matched}/{self.clips_in} clips matched, "
      f"{len(self.dropped_videos)} videos dropped"
    )


class Action(NamedTuple):
  """An annotated or ASR step: times in seconds, its text and other phrasings of it."""

  start: float
  end: float
  text: str
  alternatives: tuple[str, ...] = ()


def _short(v: Any, limit: int = 60) -> str:
  """`repr(v)` cut to `limit` characters (error messages stay one readable line)."""
  r = repr(v)
  return r if len(r) <= limit else r[: limit - 3] + "..."


def _bad(where: str, key: str, wanted: str, v: Any) -> AnnotationError:
  return AnnotationError(f"{where}: {key} must be {wanted}, got {type(v).__name__} {_short(v)}")


def _number(v: Any, where: str, key: str) -> float:
  """A finite time in seconds; bools, strings, None and NaN are refused."""
  if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
    raise _bad(where, key, "a finite number (seconds)", v)
  return float(v)


def _text(v: Any, where: str, key: str) -> tuple[str, tuple[str, ...]]:
  """An action text -> (action, alternatives).

  `v` is a string, or a non-empty list of strings whose first is the action and whose
  others (blank ones dropped) are its alternatives.
  """
  if isinstance(v, str):
    return v.strip(), ()
  if isinstance(v, list) and v and all(isinstance(x, str) for x in v):
    return v[0].strip(), tuple(x.strip() for x in v[1:] if x.strip())
  raise _bad(where, key, "a string or a non-empty list of strings", v)


def _load_json(path: str) -> Any:
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except FileNotFoundError:
    raise AnnotationError(f"annotation file not found: {path}") from None
  except json.JSONDecodeError as e:
    raise AnnotationError(f"{path}: not valid JSON ({e.msg}, line {e.lineno})") from None


def _get(d: Any, key: str, where: str, types: type | tuple[type, ...]) -> Any:
  if not isinstance(d, dict) or key not in d:
    raise AnnotationError(f"{where}: missing key {key!r}")
  v = d[key]
  if not isinstance(v, types) or isinstance(v, bool):
    raise AnnotationError(f"{where}: {key!r} must be {types}, got {v!r}")
  return v


def read_clip_captions(path: str) -> dict[str, list[tuple[float, float, str]]]:
  """Clip-caption JSONL -> {video_id: [(start, end, caption)] sorted by start}."""
  out: dict[str, list[tuple[float, float, str]]] = collections.defaultdict(list)
  try:
    f = open(path, encoding="utf-8")
  except FileNotFoundError:
    raise AnnotationError(f"caption file not found: {path}") from None
  with f:
    for lineno, line in enumerate(f, 1):
      if not line.strip():
        continue
      where = f"{path}:{lineno}"
      try:
        d = json.loads(line)
      except json.JSONDecodeError as e:
        raise AnnotationError(f"{where}: not valid JSON ({e.msg})") from None
      vid = str(_get(d, "video_id", where, (str, int)))
      start = float(_get(d, "start", where, (int, float)))
      end = float(_get(d, "end", where, (int, float)))
      caption = _get(d, "caption", where, str)
      if not start < end:
        raise AnnotationError(f"{where}: start ({start}) must be < end ({end})")
      out[vid].append((start, end, caption.strip()))
  return {k: sorted(v) for k, v in out.items()}


def find_video(video_dir: str | None, video_id: str, *hints: str) -> str | None:
  """The path of `video_id`'s video under `video_dir` (also in sub-folders `hints`)."""
  if video_dir is None:
    return None
  for sub in ("", *hints):
    for ext in VIDEO_EXTENSIONS:
      p = os.path.join(video_dir, sub, video_id + ext)
      if os.path.isfile(p):
        return p
  return None


def _matched_clips(
  vid: str,
  captions: list[tuple[float, float, str]],
  actions: list[Action],
  rule: MatchRule,
  report: ImportReport,
) -> list[Clip]:
  """Clips of one video paired with their matched action; unmatched clips dropped."""
  idx = match_clips_to_actions(
    [(s, e) for s, e, _ in captions], [(a.start, a.end) for a in actions], rule
  )
  clips = []
  for i, ((s, e, cap), j) in enumerate(zip(captions, idx)):
    if j is not None and cap and actions[j].text.strip():
      a = actions[j]
      clips.append(
        Clip(
          clip_id=f"{vid}_{i:03d}",
          start=s,
          end=e,
          action=a.text.strip(),
          caption=cap,
          alternatives=a.alternatives,
        )
      )
  report.clips_in += len(captions)
  report.clips_matched += len(clips)
  return clips


def _no_captions(captions: str) -> str:
  """The drop reason of a video that the clip-caption file has no line for."""
  return f"no entry in the captions file {captions}"


def _finish(
  stories: list[Story],
  story: Story,
  report: ImportReport,
  where: str,
  no_clips: str = "no clip matched an action",
) -> None:
  """Keeps a valid story; else records its video as dropped (`no_clips`: why, if clipless)."""
  if not story.clips:
    report.dropped_videos.append((story.video_id, no_clips))
    return
  try:
    validate(story, where)
  except SchemaError as e:
    report.dropped_videos.append((story.video_id, str(e)))
    return
  stories.append(story)
  report.stories_out += 1


def import_youcook2(
  annotations: str,
  captions: str | None = None,
  video_dir: str | None = None,
  rule: MatchRule = MatchRule(),
  recipe_names: dict[str, str] | None = None,
) -> tuple[list[Story], ImportReport]:
  """YouCook2 `youcookii_annotations_trainval.json` (+ optional clip captions) -> stories.

  Args:
    annotations: `{"database": {video_id: {duration, subset, recipe_type,
      annotations: [{segment: [start, end], id, sentence}], video_url}}}`.
    captions: clip-caption JSONL; None uses the segments as clips.
    video_dir: where videos lie (`<id>.<ext>`, also `<subset>/<recipe_type>/<id>.<ext>`);
      None resolves `video_url` relative to the annotation file when it is a local path.
    recipe_names: recipe_type -> dish name (YouCook2 stores numeric codes).
  """
  db = _get(_load_json(annotations), "database", annotations, dict)
  caps = read_clip_captions(captions) if captions else None
  base = os.path.dirname(os.path.abspath(annotations))
  stories: list[Story] = []
  report = ImportReport()
  for vid, v in db.items():
    where = f"{annotations}: database[{vid!r}]"
    report.videos_in += 1
    duration = float(_get(v, "duration", where, (int, float)))
    subset = _get(v, "subset", where, str)
    if subset not in YOUCOOK2_SUBSETS:
      raise AnnotationError(
        f"{where}: subset must be one of {sorted(YOUCOOK2_SUBSETS)}, got {subset!r}"
      )
    recipe = str(_get(v, "recipe_type", where, (str, int)))
    actions = []
    for k, a in enumerate(v.get("annotations", [])):
      aw = f"{where}.annotations[{k}]"
      seg = _get(a, "segment", aw, list)
      if len(seg) != 2:
        raise AnnotationError(f"{aw}: segment must be [start, end], got {seg!r}")
      actions.append(Action(float(seg[0]), float(seg[1]), _get(a, "sentence", aw, str)))
    actions.sort()
    no_clips = "no clip matched an action"
    if caps is None:
      report.clips_in += len(actions)
      report.clips_matched += len(actions)
      clips = [
        Clip(f"{vid}_{i:03d}", a.start, a.end, a.text, a.text) for i, a in enumerate(actions)
      ]
    else:
      clips = _matched_clips(vid, caps.get(vid, []), actions, rule, report)
      if vid not in caps:
        no_clips = _no_captions(str(captions))
    split = YOUCOOK2_SUBSETS[subset]
    path = find_video(video_dir, vid, os.path.join(subset, recipe))
    url = v.get("video_url")
    if path is None and video_dir is None and isinstance(url, str) and "://" not in url:
      path = os.path.normpath(os.path.join(base, url))
    _finish(
      stories,
      Story(
        video_id=vid,
        source="youcook2",
        split=split,
        task=(recipe_names or {}).get(recipe, recipe),
        duration=duration,
        fps=None,
        video_path=path,
        clips=tuple(clips),
      ),
      report,
      where,
      no_clips,
    )
  return stories, report


def _asr_actions(v: Any, where: str) -> list[Action]:
  """One video of the ASR layout `{"start": [...], "end": [...], "text": [...]}` -> actions."""
  starts = _get(v, "start", where, list)
  ends = _get(v, "end", where, list)
  texts = _get(v, "text", where, list)
  if not len(starts) == len(ends) == len(texts):
    raise AnnotationError(
      f"{where}: start/end/text lengths differ ({len(starts)}, {len(ends)}, {len(texts)})"
    )
  out = []
  for k, (s, e, t) in enumerate(zip(starts, ends, texts)):
    text, alternatives = _text(t, where, f"text[{k}]")
    out.append(
      Action(_number(s, where, f"start[{k}]"), _number(e, where, f"end[{k}]"), text, alternatives)
    )
  return out


def _description_actions(description: Any, where: str) -> list[Action]:
  """One video's HowToCaption `description` (a list of {start, end, text}) -> actions."""
  if not isinstance(description, list):
    raise _bad(where, "description", "a list of {start, end, text}", description)
  out = []
  for k, seg in enumerate(description):
    key = f"description[{k}]"
    if not isinstance(seg, dict):
      raise _bad(where, key, "an object {start, end, text}", seg)
    for name in ("start", "end", "text"):
      if name not in seg:
        raise AnnotationError(f"{where}: {key} is missing key {name!r}")
    text, alternatives = _text(seg["text"], where, f"{key}.text")
    start = _number(seg["start"], where, f"{key}.start")
    out.append(Action(start, _number(seg["end"], where, f"{key}.end"), text, alternatives))
  return out


def _add_rows(out: dict[str, list[Action]], rows: Any, path: str) -> dict[str, list[Action]]:
  """Adds HowToCaption rows `[{video_id, description}]` to `out`; a repeated video is an error."""
  if not isinstance(rows, list):
    raise AnnotationError(f"{path}: expected a list of {{video_id, description}} rows")
  for i, row in enumerate(rows):
    rw = f"{path}: row {i}"
    if not isinstance(row, dict):
      raise _bad(rw, "the row", "an object {video_id, description}", row)
    vid = _get(row, "video_id", rw, (str, int))
    where = f"{path}: video {str(vid)!r}"
    if "description" not in row:
      raise AnnotationError(f"{where}: missing key 'description'")
    _add_video(out, str(vid), _description_actions(row["description"], where), where)
  return out


def _add_video(out: dict[str, list[Action]], vid: str, actions: list[Action], where: str) -> None:
  """Stores one video's actions sorted by start; a video given twice is an error."""
  if vid in out:
    raise AnnotationError(f"{where}: the video appears more than once")
  out[vid] = sorted(actions)


def _read_parquet(path: str) -> dict[str, list[Action]]:
  """HowToCaption parquet (a file or a folder of `*.parquet` shards) -> {video_id: actions}."""
  import pyarrow.parquet as pq

  files = sorted(glob.glob(os.path.join(path, "*.parquet"))) if os.path.isdir(path) else [path]
  if not files:
    raise AnnotationError(f"{path}: a folder with no *.parquet file")
  out: dict[str, list[Action]] = {}
  for f in files:
    try:
      pf = pq.ParquetFile(f)
    except FileNotFoundError:
      raise AnnotationError(f"annotation file not found: {f}") from None
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError.
      raise AnnotationError(f"{f}: not a readable parquet file ({e})") from None
    names = pf.schema_arrow.names
    for col in ("video_id", "description"):
      if col not in names:
        raise AnnotationError(f"{f}: missing column {col!r} (columns: {names})")
    for batch in pf.iter_batches(columns=["video_id", "description"]):
      _add_rows(out, batch.to_pylist(), f)
  return out


def read_howto_actions(path: str) -> dict[str, list[Action]]:
  """A HowTo actions file in any layout of the module docstring -> {video_id: actions}.

  Actions are sorted by start time (seconds). Errors name the file, the video and the key.
  """
  if path.endswith((".parquet", ".pq")) or os.path.isdir(path):
    return _read_parquet(path)
  out: dict[str, list[Action]] = {}
  try:
    if path.endswith(".jsonl"):
      rows = []
      with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
          if line.strip():
            try:
              rows.append(json.loads(line))
            except json.JSONDecodeError as e:
              raise AnnotationError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
      return _add_rows(out, rows, path)
    data = _load_json(path)
    if isinstance(data, list):
      return _add_rows(out, data, path)
    if not isinstance(data, dict):
      raise AnnotationError(
        f"{path}: expected {{video_id: {{start, end, text}}}}, {{video_id: description}} or "
        f"a list of {{video_id, description}} rows, got {type(data).__name__}"
      )
    for vid, v in data.items():
      where = f"{path}: video {vid!r}"
      if isinstance(v, dict):
        _add_video(out, vid, _asr_actions(v, where), where)
      elif isinstance(v, list):
        _add_video(out, vid, _description_actions(v, where), where)
      else:
        raise _bad(where, "the entry", "{start, end, text} or a description list", v)
  except FileNotFoundError:
    raise AnnotationError(f"annotation file not found: {path}") from None
  return out


def import_howto(
  asr: str,
  captions: str,
  video_dir: str | None = None,
  rule: MatchRule = MatchRule(),
  split: str = "train",
  tasks: dict[str, str] | None = None,
  default_task: str = "cooking",
) -> tuple[list[Story], ImportReport]:
  """HowTo100M ASR / HowToCaption actions + clip-caption JSONL -> stories.

  Args:
    asr: the actions, in any layout that `read_howto_actions` reads (HowTo100M ASR JSON,
      HowToCaption parquet or JSON); each segment is an action candidate.
    captions: clip-caption JSONL; its clips become the story's steps. A video of `asr`
      with no line here is dropped with the reason that it has no entry in this file.
    video_dir: where `<video_id>.<ext>` lie (optional; without it, no video_path).
    split: the split all imported stories get.
    tasks: video_id -> task name (e.g. from HowTo100M's task ids); others get default_task.
  The duration is the latest end time seen (these layouts have no duration).
  """
  actions_of = read_howto_actions(asr)
  caps = read_clip_captions(captions)
  stories: list[Story] = []
  report = ImportReport()
  for vid, actions in actions_of.items():
    report.videos_in += 1
    clip_caps = caps.get(vid, [])
    clips = _matched_clips(vid, clip_caps, actions, rule, report)
    duration = max([a.end for a in actions] + [e for _, e, _ in clip_caps] + [0.0])
    _finish(
      stories,
      Story(
        video_id=vid,
        source="howto100m",
        split=split,
        task=(tasks or {}).get(vid, default_task),
        duration=duration,
        fps=None,
        video_path=find_video(video_dir, vid),
        clips=tuple(clips),
      ),
      report,
      f"{asr}: video {vid!r}",
      "no clip matched an action" if vid in caps else _no_captions(captions),
    )
  return stories, report


def read_task_names(path: str) -> dict[str, str]:
  """A two-column CSV `key,name` (no header) -> {key: name}; e.g. YouCook2 recipe codes."""
  out = {}
  with open(path, encoding="utf-8") as f:
    for lineno, line in enumerate(f, 1):
      if line.strip():
        parts = line.rstrip("\n").split(",", 1)
        if len(parts) != 2:
          raise AnnotationError(f"{path}:{lineno}: expected 'key,name', got {line.strip()!r}")
        out[parts[0].strip()] = parts[1].strip()
  return out
