"""Story schema: JSONL round trip and validation errors that name file and line."""

import dataclasses
import json
import re

import pytest

from auteur_jax.data.schema import Clip, SchemaError, Story, read_stories, write_stories


def _story(**kw) -> Story:
  clips = (
    Clip("a", 0.0, 5.0, "chop the onion", "an onion is chopped on a board"),
    Clip("b", 5.0, 9.0, "fry the onion", "the onion fries in a pan", keyframe_time=8.0),
  )
  base = dict(
    video_id="v1",
    source="toy_kitchen",
    split="train",
    task="onion soup",
    duration=10.0,
    fps=8.0,
    video_path="videos/v1.mp4",
    clips=clips,
  )
  base.update(kw)
  return Story(**base)


def test_round_trip(tmp_path):
  p = tmp_path / "s.jsonl"
  stories = [_story(), _story(video_id="v2", fps=None, video_path=None)]
  assert write_stories(p, stories) == 2
  assert read_stories(p) == stories
  assert stories[0].clips[0].keyframe == 2.5 and stories[0].clips[1].keyframe == 8.0


@pytest.mark.parametrize(
  "change, message",
  [
    (lambda d: d["clips"][0].update(start=6.0), "start (6.0) must be < end"),
    (lambda d: d["clips"][1].update(end=12.0), "outside the video"),
    (lambda d: d["clips"].reverse(), "sorted"),
    (lambda d: d["clips"][1].update(caption="  "), "empty caption"),
    (lambda d: d["clips"][1].update(action=""), "empty action"),
    (lambda d: d["clips"][1].update(clip_id="a"), "duplicate clip_id"),
    (lambda d: d.update(split="dev"), "split must be one of"),
    (lambda d: d.pop("task"), "missing keys ['task']"),
    (lambda d: d.update(extra=1), "unknown keys ['extra']"),
    (lambda d: d.update(duration="long"), "'duration' must be a number"),
    (lambda d: d.update(clips=[]), "at least one clip"),
  ],
)
def test_validation_names_file_and_line(tmp_path, change, message):
  good = json.dumps(_story().to_json())
  bad = _story().to_json()
  change(bad)
  p = tmp_path / "bad.jsonl"
  p.write_text(good + "\n" + json.dumps(bad) + "\n")
  with pytest.raises(SchemaError, match=re.escape(message)) as e:
    read_stories(p)
  assert f"{p}:2" in str(e.value)


def test_bad_json_and_duplicate_video(tmp_path):
  p = tmp_path / "s.jsonl"
  p.write_text('{"video_id": \n')
  with pytest.raises(SchemaError, match=f"{p}:1: not valid JSON"):
    read_stories(p)
  line = json.dumps(_story().to_json())
  p.write_text(line + "\n\n" + line + "\n")
  with pytest.raises(SchemaError, match="line 1"):
    read_stories(p)


def test_write_refuses_invalid_and_keeps_old_file(tmp_path):
  p = tmp_path / "s.jsonl"
  write_stories(p, [_story()])
  before = p.read_text()
  bad = dataclasses.replace(_story(), duration=-1.0)
  with pytest.raises(SchemaError, match="duration"):
    write_stories(p, [_story(video_id="x"), bad])
  assert p.read_text() == before
