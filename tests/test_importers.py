"""Importers on the fixtures in data/: YouCook2 and HowTo100M / HowToCaption."""

import json
import os

import pytest

from auteur_jax.data.importers import (
  AnnotationError,
  import_howto,
  import_youcook2,
  read_task_names,
)

DATA = os.path.join(os.path.dirname(__file__), "..", "data")
YC = os.path.join(DATA, "youcook2_sample.json")
YC_CAPS = os.path.join(DATA, "youcook2_captions.jsonl")


def test_youcook2_with_captions():
  names = read_task_names(os.path.join(DATA, "youcook2_recipes.csv"))
  stories, report = import_youcook2(YC, YC_CAPS, recipe_names=names)
  assert [s.video_id for s in stories] == ["yc_vid_001", "yc_vid_002"]
  s1, s2 = stories
  assert (s1.split, s1.task, s1.duration) == ("train", "spaghetti with tomato sauce", 120.5)
  assert (s2.split, s2.task) == ("val", "omelette")
  # The wiping clip (96-99 s) matches no action and is dropped.
  assert [c.action for c in s1.clips] == [
    "cut the tomatoes into thin slices",
    "chop the onion and the garlic finely",
    "fry the onion and garlic in olive oil",
    "add the tomatoes and simmer the sauce",
    "pour the sauce over the pasta",
  ]
  assert s1.clips[2].start == 47 and s1.clips[2].caption.startswith("A pan with olive oil")
  assert report.clips_in == 10 and report.clips_matched == 9
  assert report.dropped_videos == [("yc_vid_003", "no clip matched an action")]
  assert s1.video_path is None  # Remote URL, no video_dir.


def test_youcook2_segments_only_and_video_dir(tmp_path):
  (tmp_path / "training" / "101").mkdir(parents=True)
  (tmp_path / "training" / "101" / "yc_vid_003.mkv").write_bytes(b"x")
  stories, report = import_youcook2(YC, video_dir=str(tmp_path))
  assert len(stories) == 3 and report.clips_matched == 11
  s3 = stories[2]
  assert [c.caption for c in s3.clips] == [c.action for c in s3.clips]
  assert s3.video_path == str(tmp_path / "training" / "101" / "yc_vid_003.mkv")


def test_howto():
  stories, report = import_howto(
    os.path.join(DATA, "howto_asr_sample.json"),
    os.path.join(DATA, "howto_captions.jsonl"),
    tasks={"ht_vid_002": "buttered bread"},
  )
  assert [s.video_id for s in stories] == ["ht_vid_001", "ht_vid_002"]
  assert [c.action for c in stories[0].clips] == [
    "wash the potatoes under cold water",
    "peel the potatoes and cut them into cubes",
    "put the cubes into boiling salted water",
    "mash the potatoes with butter and milk",
  ]
  assert stories[1].task == "buttered bread" and stories[0].task == "cooking"
  assert len(stories[1].clips) == 1 and report.clips_matched == 5
  assert stories[0].duration == 57.0


def test_malformed_inputs_name_file_and_key(tmp_path):
  bad = tmp_path / "yc.json"
  bad.write_text(
    json.dumps({"database": {"v": {"duration": 10, "subset": "training", "annotations": []}}})
  )
  with pytest.raises(AnnotationError, match=r"yc.json: database\['v'\]: missing key 'recipe_type'"):
    import_youcook2(str(bad))
  bad.write_text("{not json")
  with pytest.raises(AnnotationError, match="yc.json: not valid JSON"):
    import_youcook2(str(bad))
  caps = tmp_path / "c.jsonl"
  caps.write_text('{"video_id": "v", "start": 3, "end": 1, "caption": "x"}\n')
  with pytest.raises(AnnotationError, match=r"c.jsonl:1: start \(3.0\) must be < end"):
    import_youcook2(YC, str(caps))
  asr = tmp_path / "asr.json"
  asr.write_text(json.dumps({"v": {"start": [0], "end": [1, 2], "text": ["a"]}}))
  caps.write_text('{"video_id": "v", "start": 0, "end": 1, "caption": "x"}\n')
  with pytest.raises(AnnotationError, match="lengths differ"):
    import_howto(str(asr), str(caps))
