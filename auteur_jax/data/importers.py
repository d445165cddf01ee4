"""Raw annotations -> stories: YouCook2 JSON and HowTo100M / HowToCaption ASR JSON.

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
import json
import os
from typing import Any

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
  actions: list[tuple[float, float, str]],
  rule: MatchRule,
  report: ImportReport,
) -> list[Clip]:
  """Clips of one video paired with their matched action; unmatched clips dropped."""
  idx = match_clips_to_actions(
    [(s, e) for s, e, _ in captions], [(s, e) for s, e, _ in actions], rule
  )
  clips = []
  for i, ((s, e, cap), j) in enumerate(zip(captions, idx)):
    if j is not None and cap and actions[j][2].strip():
      clips.append(
        Clip(clip_id=f"{vid}_{i:03d}", start=s, end=e, action=actions[j][2].strip(), caption=cap)
      )
  report.clips_in += len(captions)
  report.clips_matched += len(clips)
  return clips


def _finish(stories: list[Story], story: Story, report: ImportReport, where: str) -> None:
  if not story.clips:
    report.dropped_videos.append((story.video_id, "no clip matched an action"))
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
      actions.append((float(seg[0]), float(seg[1]), _get(a, "sentence", aw, str)))
    actions.sort()
    if caps is None:
      report.clips_in += len(actions)
      report.clips_matched += len(actions)
      clips = [Clip(f"{vid}_{i:03d}", s, e, text, text) for i, (s, e, text) in enumerate(actions)]
    else:
      clips = _matched_clips(vid, caps.get(vid, []), actions, rule, report)
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
    )
  return stories, report


def import_howto(
  asr: str,
  captions: str,
  video_dir: str | None = None,
  rule: MatchRule = MatchRule(),
  split: str = "train",
  tasks: dict[str, str] | None = None,
  default_task: str = "cooking",
) -> tuple[list[Story], ImportReport]:
  """HowTo100M / HowToCaption ASR JSON + clip-caption JSONL -> stories.

  Args:
    asr: `{video_id: {"start": [s...], "end": [s...], "text": [str...]}}`; each ASR
      segment (refined by HowToCaption) is an action candidate.
    captions: clip-caption JSONL; its clips become the story's steps.
    video_dir: where `<video_id>.<ext>` lie (optional; without it, no video_path).
    split: the split all imported stories get.
    tasks: video_id -> task name (e.g. from HowTo100M's task ids); others get default_task.
  The duration is the latest end time seen (ASR JSON has no duration).
  """
  data = _load_json(asr)
  if not isinstance(data, dict):
    raise AnnotationError(f"{asr}: expected a JSON object {{video_id: {{start, end, text}}}}")
  caps = read_clip_captions(captions)
  stories: list[Story] = []
  report = ImportReport()
  for vid, v in data.items():
    where = f"{asr}: [{vid!r}]"
    report.videos_in += 1
    starts = _get(v, "start", where, list)
    ends = _get(v, "end", where, list)
    texts = _get(v, "text", where, list)
    if not len(starts) == len(ends) == len(texts):
      raise AnnotationError(
        f"{where}: start/end/text lengths differ ({len(starts)}, {len(ends)}, {len(texts)})"
      )
    actions = sorted((float(s), float(e), str(t)) for s, e, t in zip(starts, ends, texts))
    clip_caps = caps.get(vid, [])
    clips = _matched_clips(vid, clip_caps, actions, rule, report)
    duration = max([e for _, e, _ in actions] + [e for _, e, _ in clip_caps] + [0.0])
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
      where,
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
