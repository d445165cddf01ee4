"""Importers on the fixtures in data/ (YouCook2, HowTo100M ASR) and HowToCaption files made here."""

import json
import os
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from auteur_jax import cli
from auteur_jax.data.importers import (
  AnnotationError,
  import_howto,
  import_youcook2,
  read_task_names,
)
from auteur_jax.data.schema import read_stories

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
  # yc_vid_003 has no line in the clip-caption file: said so, with the file's name.
  assert report.dropped_videos == [("yc_vid_003", f"no entry in the captions file {YC_CAPS}")]
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


HT_CAPS = os.path.join(DATA, "howto_captions.jsonl")
# HowToCaption rows for the two videos of howto_captions.jsonl; times in whole seconds, as
# published. Each segment's first text is the action, the others its alternatives.
HTC_ROWS = [
  {
    "video_id": "ht_vid_001",
    "description": [
      {"start": 12, "end": 24, "text": ["peel the potatoes", "peel and dice the potatoes"]},
      {"start": 0, "end": 10, "text": ["wash the potatoes"]},
      {"start": 40, "end": 55, "text": ["mash the potatoes", "mash them with butter", ""]},
    ],
  },
  {"video_id": "ht_vid_002", "description": [{"start": 2, "end": 15, "text": ["slice bread"]}]},
]
HTC_ACTIONS = [
  ("wash the potatoes", ()),
  ("peel the potatoes", ("peel and dice the potatoes",)),
  ("mash the potatoes", ("mash them with butter",)),
]


def _write_parquet(path, rows, text_type=None):
  """HowToCaption's published schema: video_id string, description list<struct<...>>."""
  text_type = pa.list_(pa.string()) if text_type is None else text_type
  seg = pa.struct([("start", pa.int64()), ("end", pa.int64()), ("text", text_type)])
  schema = pa.schema([("video_id", pa.string()), ("description", pa.list_(seg))])
  pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)


def _actions(story):
  return [(c.action, c.alternatives) for c in story.clips]


def test_howtocaption_parquet_and_json(tmp_path):
  pq_path = str(tmp_path / "how_to_caption-00000-of-00001.parquet")
  _write_parquet(pq_path, HTC_ROWS)
  rows_json = tmp_path / "htc.json"
  rows_json.write_text(json.dumps(HTC_ROWS))
  by_video = tmp_path / "htc_by_video.json"
  by_video.write_text(json.dumps({r["video_id"]: r["description"] for r in HTC_ROWS}))
  rows_jsonl = tmp_path / "htc.jsonl"
  rows_jsonl.write_text("".join(json.dumps(r) + "\n" for r in HTC_ROWS))
  for path in (pq_path, str(tmp_path), str(rows_json), str(by_video), str(rows_jsonl)):
    stories, report = import_howto(path, HT_CAPS)
    assert [s.video_id for s in stories] == ["ht_vid_001", "ht_vid_002"], path
    # Clip 26-38 s matches no segment (the ASR fixture's 25.5-38 s step is not here).
    assert _actions(stories[0]) == HTC_ACTIONS, path
    assert _actions(stories[1]) == [("slice bread", ())], path
    assert report.clips_matched == 4 and report.dropped_videos == [], path


def test_howto_text_lists_are_not_written_as_reprs(tmp_path):
  """The issue's case: `text` entries that are lists of captions in the ASR layout."""
  asr = tmp_path / "asr.json"
  asr.write_text(
    json.dumps({"v": {"start": [0.0], "end": [10.0], "text": [["whisk eggs with salt"]]}})
  )
  caps = tmp_path / "c.jsonl"
  caps.write_text('{"video_id": "v", "start": 0, "end": 10, "caption": "A bowl of eggs."}\n')
  stories, _ = import_howto(str(asr), str(caps))
  assert _actions(stories[0]) == [("whisk eggs with salt", ())]


@pytest.mark.parametrize(
  "segment, key",
  [
    ({"start": 0, "end": 10, "text": 7}, r"description\[0\]\.text"),
    ({"start": 0, "end": 10, "text": [1, 2]}, r"description\[0\]\.text"),
    ({"start": 0, "end": 10, "text": []}, r"description\[0\]\.text"),
    ({"start": "0", "end": 10, "text": ["a"]}, r"description\[0\]\.start"),
    ({"start": 0, "end": None, "text": ["a"]}, r"description\[0\]\.end"),
    ({"start": 0, "text": ["a"]}, r"description\[0\] is missing key 'end'"),
  ],
)
def test_howtocaption_bad_types_name_file_video_and_key(tmp_path, segment, key):
  path = tmp_path / "htc.json"
  path.write_text(json.dumps([{"video_id": "vid_9", "description": [segment]}]))
  with pytest.raises(AnnotationError) as e:
    import_howto(str(path), HT_CAPS)
  msg = str(e.value)
  assert "\n" not in msg and msg.startswith(f"{path}: video 'vid_9': ")
  assert re.search(key, msg), msg


def test_howto_bad_types_in_parquet_and_asr_layout(tmp_path):
  path = str(tmp_path / "htc.parquet")
  rows = [{"video_id": "vid_9", "description": [{"start": 0, "end": 5, "text": [3, 4]}]}]
  _write_parquet(path, rows, text_type=pa.list_(pa.int64()))
  with pytest.raises(AnnotationError, match=r"htc.parquet: video 'vid_9': description\[0\]\.text"):
    import_howto(path, HT_CAPS)
  pq.write_table(pa.table({"video_id": ["vid_9"]}), path)
  with pytest.raises(AnnotationError, match=r"htc.parquet: missing column 'description'"):
    import_howto(path, HT_CAPS)
  asr = tmp_path / "asr.json"
  asr.write_text(json.dumps({"v": {"start": [0], "end": [1], "text": [5]}}))
  with pytest.raises(AnnotationError, match=r"asr.json: video 'v': text\[0\] must be"):
    import_howto(str(asr), HT_CAPS)
  asr.write_text(json.dumps({"v": {"start": [True], "end": [1], "text": ["a"]}}))
  with pytest.raises(AnnotationError, match=r"asr.json: video 'v': start\[0\] must be"):
    import_howto(str(asr), HT_CAPS)


def test_howto_video_absent_from_captions_file(tmp_path):
  path = tmp_path / "htc.json"
  rows = HTC_ROWS + [
    {"video_id": "not_captioned", "description": [{"start": 0, "end": 9, "text": ["x"]}]}
  ]
  path.write_text(json.dumps(rows))
  stories, report = import_howto(str(path), HT_CAPS)
  assert len(stories) == 2
  assert report.dropped_videos == [("not_captioned", f"no entry in the captions file {HT_CAPS}")]


def test_import_howto_command_writes_alternatives(tmp_path, capsys):
  pq_path = str(tmp_path / "htc.parquet")
  _write_parquet(pq_path, HTC_ROWS)
  out = tmp_path / "stories.jsonl"
  # main() returns (exit code 0) instead of sys.exit with a message.
  argv = ["data", "import-howto", "--asr", pq_path, "--captions", HT_CAPS, "--out", str(out)]
  assert cli.main(argv) is None
  assert "2/2 videos -> stories, 4/6 clips matched" in capsys.readouterr().out
  lines = [json.loads(line) for line in out.read_text().splitlines()]
  clips = lines[0]["clips"]
  assert [c["action"] for c in clips] == [a for a, _ in HTC_ACTIONS]
  assert clips[0].get("alternatives") is None  # Written only when there are some.
  assert clips[1]["alternatives"] == ["peel and dice the potatoes"]
  assert lines[1]["clips"][0]["action"] == "slice bread"
  assert _actions(read_stories(out)[0]) == HTC_ACTIONS  # And read back.


def test_import_howto_command_bad_type_is_one_line_and_writes_nothing(tmp_path):
  bad = tmp_path / "htc.json"
  bad.write_text(
    json.dumps([{"video_id": "vid_9", "description": [{"start": 0, "end": 1, "text": 7}]}])
  )
  out = tmp_path / "stories.jsonl"
  argv = ["data", "import-howto", "--asr", str(bad), "--captions", HT_CAPS, "--out", str(out)]
  with pytest.raises(SystemExit) as e:
    cli.main(argv)
  msg = str(e.value.code)
  assert "\n" not in msg and f"{bad}: video 'vid_9': description[0].text must be" in msg
  assert not out.exists() and os.listdir(tmp_path) == ["htc.json"]
