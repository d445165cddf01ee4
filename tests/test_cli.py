"""The `auteur data` commands end to end on a small generated data set."""

import json
import os

import numpy as np
import pytest

from auteur_jax import cli
from auteur_jax.config import CONFIG_DIR
from auteur_jax.data import examples, tfrecord, video_io
from auteur_jax.data.schema import Clip, Story, write_stories

CONFIG = os.path.join(CONFIG_DIR, "toy", "data.py")


def _video(path: str, seconds: float, fps: int = 8, seed: int = 0) -> None:
  t = np.arange(int(seconds * fps))
  frames = np.zeros((len(t), 32, 48, 3), np.uint8)
  frames[..., 0] = (t * 9 % 256)[:, None, None]  # Red encodes the frame index.
  frames[..., 2] = seed * 40
  video_io.write_video(path, frames, fps)


@pytest.fixture
def stories_file(tmp_path):
  os.makedirs(tmp_path / "videos")
  stories = []
  for i, split in enumerate(["train", "train", "train", "val"]):
    _video(str(tmp_path / "videos" / f"v{i}.mp4"), 6.0, seed=i)
    clips = tuple(
      Clip(
        f"v{i}_{j}", 2.0 * j, 2.0 * j + 1.5, f"step {j} of video {i}", f"the caption of step {j}"
      )
      for j in range(3)
    )
    stories.append(
      Story(f"v{i}", "toy_kitchen", split, "soup", 6.0, 8.0, f"videos/v{i}.mp4", clips)
    )
  path = tmp_path / "stories.jsonl"
  write_stories(path, stories)
  return str(path)


def test_build_verify_inspect_batches(tmp_path, stories_file, capsys):
  out = str(tmp_path / "tfr")
  over = [
    f"--config.data.dir={out}",
    "--config.data.size=32",
    "--config.data.num_shards=2",
    "--config.data.build_workers=1",
  ]
  cli.main(["data", "build", "--config", CONFIG, "--stories", stories_file, *over])
  meta = json.load(open(os.path.join(out, "dataset.json")))
  assert meta["splits"]["train"]["clips"] == 9 and meta["splits"]["val"]["stories"] == 1
  assert sorted(os.listdir(os.path.join(out, "train"))) == [
    "clips-00000-of-00002.tfrecord",
    "clips-00001-of-00002.tfrecord",
    "stories-00000-of-00002.tfrecord",
    "stories-00001-of-00002.tfrecord",
  ]
  # 1.5 s clips at 8 fps: 12 frames at 32 x 32, the right ones (red = 9 * index).
  recs = [
    examples.decode_clip(r)
    for p in tfrecord.list_shards(os.path.join(out, "train"))
    if "clips" in p
    for r in tfrecord.iter_records(p)
  ]
  c = next(r for r in recs if r["clip_id"] == "v0_1")
  frames = np.stack([video_io.decode_jpeg(b) for b in c["frames"]])
  assert frames.shape == (12, 32, 32, 3)
  expected = (np.arange(16, 28) * 9 % 256).astype(float)
  assert np.abs(frames[:, 16, 16, 0].astype(float) - expected).max() < 12
  cli.main(["data", "verify", out])
  cli.main(["data", "inspect", out, "--split", "val"])
  text = capsys.readouterr().out
  assert "16 records verified, 0 bad files or data-set mismatches" in text
  assert "sample story v3 (val): soup, 3 steps" in text
  cli.main(
    [
      "data",
      "batches",
      "--config",
      CONFIG,
      "--num",
      "2",
      f"--config.data.dir={out}",
      "--config.data.batch_size=4",
      "--config.data.num_frames=6",
      "--config.data.num_workers=0",
      "--config.data.tokenizer=",
    ]
  )
  assert "frames: (4, 6, 32, 32, 3) uint8" in capsys.readouterr().out


def _build(stories_file: str, out: str, shards: int) -> None:
  """`auteur data build` of the stories into `out` in `shards` shards per split."""
  flags = [f"--config.data.dir={out}", f"--config.data.num_shards={shards}"]
  cli.main(
    [
      "data",
      "build",
      "--config",
      CONFIG,
      "--stories",
      stories_file,
      *flags,
      "--config.data.build_workers=1",
    ]
  )


def test_verify_reports_corrupt_file(tmp_path, stories_file, capsys):
  out = str(tmp_path / "tfr")
  _build(stories_file, out, shards=1)
  path = os.path.join(out, "train", "clips-00000-of-00001.tfrecord")
  data = bytearray(open(path, "rb").read())
  data[len(data) // 2] ^= 0xFF
  open(path, "wb").write(bytes(data))
  with pytest.raises(SystemExit) as e:
    cli.main(["data", "verify", os.path.join(out, "train")])
  assert e.value.code == 1
  assert f"BAD  {path}: record at byte offset" in capsys.readouterr().out


def test_verify_finds_a_deleted_or_cut_shard(tmp_path, stories_file, capsys):
  """Shards deleted or truncated exactly at a record boundary pass their CRCs; the lists
  and counts of dataset.json catch them."""
  from auteur_jax.data import inventory

  out = str(tmp_path / "tfr")
  _build(stories_file, out, shards=2)
  cut = os.path.join(out, "train", "clips-00000-of-00002.tfrecord")
  offsets = tfrecord.index_records(cut)
  with open(cut, "r+b") as f:  # Keep the first record only: a clean boundary.
    f.truncate(int(offsets[1][0]) - tfrecord.HEADER_BYTES)
  os.remove(os.path.join(out, "val", "stories-00001-of-00002.tfrecord"))
  with pytest.raises(SystemExit) as e:
    cli.main(["data", "verify", out])
  text = capsys.readouterr().out
  assert e.value.code == 1
  assert "shard train/clips-00000-of-00002.tfrecord holds 1 records" in text
  assert "shard val/stories-00001-of-00002.tfrecord is missing" in text
  with pytest.raises(inventory.DataSetError, match="clips-00000-of-00002.tfrecord holds 1"):
    inventory.check_split(out, "train", "clips")
  assert len(inventory.check_split(out, "train", "clips", allow_partial=True)) == 2


def test_build_missing_video_names_it(tmp_path, stories_file):
  os.remove(tmp_path / "videos" / "v2.mp4")
  with pytest.raises(SystemExit, match="VideoError: .*v2.mp4: video not found"):
    cli.main(
      [
        "data",
        "build",
        "--config",
        CONFIG,
        "--stories",
        stories_file,
        f"--config.data.dir={tmp_path / 'o'}",
      ]
    )
  assert not os.path.exists(tmp_path / "o" / "train" / "clips-00000-of-00004.tfrecord")


def test_import_commands(tmp_path, capsys):
  data = os.path.join(os.path.dirname(__file__), "..", "data")
  out = str(tmp_path / "yc.jsonl")
  cli.main(
    [
      "data",
      "import-youcook2",
      "--annotations",
      f"{data}/youcook2_sample.json",
      "--captions",
      f"{data}/youcook2_captions.jsonl",
      "--out",
      out,
      "--recipes",
      f"{data}/youcook2_recipes.csv",
    ]
  )
  assert "2/3 videos -> stories, 9/10 clips matched" in capsys.readouterr().out
  cli.main(
    [
      "data",
      "import-howto",
      "--asr",
      f"{data}/howto_asr_sample.json",
      "--captions",
      f"{data}/howto_captions.jsonl",
      "--out",
      str(tmp_path / "ht.jsonl"),
      "--loose-iou",
      "0.2",
    ]
  )
  assert "2/2 videos -> stories" in capsys.readouterr().out
  cli.main(
    ["data", "tokenizer", "--stories", out, "--vocab-size", "300", "--out", str(tmp_path / "tok")]
  )
  assert os.path.isfile(tmp_path / "tok" / "tokenizer.json")


def test_bad_override_is_named(capsys):
  with pytest.raises(SystemExit, match="unknown key 'sise' in data"):
    cli.main(["data", "batches", "--config", CONFIG, "--config.data.sise=3"])


def test_toy_command_feeds_the_importer(tmp_path, capsys):
  out = str(tmp_path / "toy")
  cli.main(["data", "toy", "--videos", "3", "--out", out, "--noise", "0.2", "--workers", "1"])
  capsys.readouterr()
  cli.main(
    [
      "data",
      "import-youcook2",
      "--annotations",
      f"{out}/youcook2_annotations.json",
      "--captions",
      f"{out}/captions.jsonl",
      "--out",
      f"{out}/stories.jsonl",
    ]
  )
  assert "3/3 videos -> stories" in capsys.readouterr().out


def test_inspect_any_tfrecord_file(tmp_path, capsys):
  """`auteur data inspect FILE`: feature names, kinds, value counts and bytes of any
  tf.train.Example TFRecord (here one that is not ours), and one line for a file that is
  not Examples."""
  from tensorflow_datasets.proto import tf_example_pb2

  path = str(tmp_path / "other.tfrecord")
  with tfrecord.TFRecordWriter(path) as w:
    for i in range(3):
      ex = tf_example_pb2.Example()
      ex.features.feature["label"].int64_list.value.append(i)
      ex.features.feature["image"].bytes_list.value.append(b"x" * (10 + i))
      ex.features.feature["score"].float_list.value.extend([0.5, 1.5])
      w.write(ex.SerializeToString())
  cli.main(["data", "inspect", path, "--records", "1"])
  text = capsys.readouterr().out
  assert "record 1:" in text and "record 2:" not in text
  assert "image" in text and "bytes" in text and "10 bytes" in text
  assert f"{path}: 3 records; features image (bytes), label (int64), score (float)" in text
  bad = str(tmp_path / "bad.tfrecord")
  with tfrecord.TFRecordWriter(bad) as w:
    w.write(b"\xff\xff not a proto")
  with pytest.raises(SystemExit, match="not a tf.train.Example"):
    cli.main(["data", "inspect", bad])
