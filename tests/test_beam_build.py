"""The Beam data build (data/beam_build.py) against the pool build (data/build.py).

Needs the `beam` extra, which cannot share a venv with the test extra: .ci/run runs these
in .venv-beam (`python -m pytest -m beam tests/test_beam_build.py`); elsewhere they skip.
The gs:// test needs gcp-storage-emulator there too (tests/fake_gcs.py).
"""

import json
import os

import numpy as np
import pytest

pytest.importorskip("apache_beam")

from auteur_jax import cli  # noqa: E402
from auteur_jax.data import beam_build, build, tfrecord, video_io  # noqa: E402
from auteur_jax.data.schema import Clip, Story, write_stories  # noqa: E402

pytestmark = pytest.mark.beam

SPEC = build.FrameSpec(fps=4.0, size=16, jpeg_quality=80)


@pytest.fixture
def stories_file(tmp_path) -> str:
  """5 stories in 2 splits, 1 to 3 clips each (uneven shard fills), 2-4 s toy videos."""
  os.makedirs(tmp_path / "videos")
  stories = []
  for i, (split, n_clips) in enumerate([("train", 3), ("val", 1), ("train", 1), ("train", 2)]):
    t = np.arange(32)
    frames = np.zeros((len(t), 24, 32, 3), np.uint8)
    frames[..., 0] = (t * 7 % 256)[:, None, None]
    frames[..., 1] = i * 50
    video_io.write_video(str(tmp_path / "videos" / f"v{i}.mp4"), frames, 8)
    clips = tuple(
      Clip(f"v{i}_{j}", 1.0 * j, 1.0 * j + 0.9, f"step {j}", f"caption {j}") for j in range(n_clips)
    )
    stories.append(Story(f"v{i}", "toy", split, "soup", 4.0, 8.0, f"videos/v{i}.mp4", clips))
  path = tmp_path / "stories.jsonl"
  write_stories(path, stories)
  return str(path)


def _files(out: str) -> dict[str, list[bytes]]:
  """{shard path relative to out: its records} of every *.tfrecord under out."""
  return {
    os.path.relpath(p, out): list(tfrecord.iter_records(p)) for p in tfrecord.list_shards(out)
  }


def test_direct_build_equals_pool_build(tmp_path, stories_file):
  pool, direct = str(tmp_path / "pool"), str(tmp_path / "direct")
  want = build.build(stories_file, pool, SPEC, num_shards=3, workers=1, progress=False)
  got = beam_build.build(stories_file, direct, SPEC, num_shards=3, runner="direct")
  assert got == want  # No dataset.json field differs.
  with (
    open(os.path.join(pool, "dataset.json")) as f,
    open(os.path.join(direct, "dataset.json")) as g,
  ):
    assert f.read() == g.read()
  files = _files(pool)
  assert files == _files(direct)
  assert sorted(os.listdir(direct)) == sorted(os.listdir(pool))  # No temporary files left.
  for split in ("train", "val"):
    assert sorted(os.listdir(os.path.join(direct, split))) == sorted(
      os.listdir(os.path.join(pool, split))
    )
  assert sum(len(r) for r in files.values()) == 7 + 4  # clips + stories
  for p in tfrecord.list_shards(direct):  # Files byte for byte (our CRCs, same framing).
    with open(p, "rb") as f, open(os.path.join(pool, os.path.relpath(p, direct)), "rb") as g:
      assert f.read() == g.read()


@pytest.fixture
def gcs(monkeypatch, tmp_path):
  """The offline gs:// bucket in an empty working folder (tests/fake_gcs.serve)."""
  pytest.importorskip("gcp_storage_emulator")
  import fake_gcs

  yield from fake_gcs.serve(monkeypatch, tmp_path)


def test_direct_build_from_gcs_to_gcs_equals_pool_build(tmp_path, stories_file, gcs):
  """`auteur data build --runner direct` with stories, videos and the output on gs:// (as
  on Dataflow; the direct runner's workers run in this process, where the fake bucket is
  registered) writes the local pool build's files byte for byte, no temporary object."""
  from auteur_jax import paths

  bucket = "gs://auteur-test"
  for name in ["stories.jsonl"] + [f"videos/v{i}.mp4" for i in range(4)]:
    with open(tmp_path / name, "rb") as src, paths.open_file(f"{bucket}/raw/{name}", "wb") as f:
      f.write(src.read())
  config = os.path.join(os.path.dirname(cli.__file__), "configs", "toy", "data.py")
  pool, remote = str(tmp_path / "pool"), f"{bucket}/built"
  for stories, out, runner in [
    (stories_file, pool, ["--config.data.build_workers=1"]),
    (f"{bucket}/raw/stories.jsonl", remote, ["--runner", "direct"]),
  ]:
    over = [f"--config.data.dir={out}", "--config.data.size=16", "--config.data.num_shards=3"]
    cli.main(["data", "build", "--config", config, "--stories", stories, *over, *runner])
  local = {os.path.relpath(p, pool): open(p, "rb").read() for p in tfrecord.list_shards(pool)}
  built = sorted(o for o in gcs.objects() if o.startswith("built/"))
  assert built == sorted(["built/dataset.json"] + [f"built/{p}" for p in local])  # No tmp.
  for rel, data in local.items():
    assert gcs._read(f"auteur-test/built/{rel}") == data
  assert sum(len(list(tfrecord.iter_records(f"{remote}/{rel}"))) for rel in local) == 7 + 4
  with (
    open(os.path.join(pool, "dataset.json")) as f,
    paths.open_file(f"{remote}/dataset.json") as g,
  ):
    local_json, remote_json = f.read(), g.read()
  stories = (json.dumps(stories_file), json.dumps(f"{bucket}/raw/stories.jsonl"))
  assert remote_json == local_json.replace(*stories)  # Same bytes but the stories file.


def test_writing_a_shard_twice_leaves_one_copy(tmp_path, stories_file):
  """The Write stage run twice on the same group (a retried bundle) in a Beam pipeline,
  and a group holding a record twice: one complete file, each record once."""
  import apache_beam as beam
  from apache_beam.runners.portability.fn_api_runner import FnApiRunner

  out = str(tmp_path / "out")
  key = ("train", "clips", 1)
  items = [(1, b"second"), (0, b"first"), None, (2, b"third"), (0, b"first")]
  with beam.Pipeline(runner=FnApiRunner()) as p:
    group = p | beam.Create([(key, items)])
    _ = (
      (group, p | "Again" >> beam.Create([(key, items)]))
      | beam.Flatten()
      | beam.Map(beam_build._write_group, out, 4, {key: 3})
    )
  assert os.listdir(os.path.join(out, "train")) == ["clips-00001-of-00004.tfrecord"]
  assert list(
    tfrecord.iter_records(os.path.join(out, "train", "clips-00001-of-00004.tfrecord"))
  ) == [
    b"first",
    b"second",
    b"third",
  ]
  with pytest.raises(ValueError, match="two different records at 0"):
    beam_build.write_shard(out, key, [(0, b"a"), (0, b"b")], 4, 1)
  with pytest.raises(ValueError, match="expected 0..2"):
    beam_build.write_shard(out, key, [(0, b"a"), (1, b"b")], 4, 3)


def test_cli_runner_direct_and_prism(tmp_path, stories_file, capsys):
  config = os.path.join(os.path.dirname(cli.__file__), "configs", "toy", "data.py")
  out = str(tmp_path / "cli")
  over = [f"--config.data.dir={out}", "--config.data.size=16", "--config.data.num_shards=2"]
  args = ["data", "build", "--config", config, "--stories", stories_file, *over]
  cli.main([*args, "--runner", "direct", "--pipeline-option", "direct_num_workers=1"])
  meta = json.load(open(os.path.join(out, "dataset.json")))
  assert meta["splits"]["train"]["clips"] == 6 and meta["splits"]["val"]["stories"] == 1
  capsys.readouterr()
  with pytest.raises(SystemExit) as e:
    cli.main([*args, "--runner", "prism"])
  text = str(e.value.code)
  assert "prism" in text and "offline" in text and "\n" not in text
  with pytest.raises(SystemExit) as e:
    cli.main([*args, "--runner", "direct", "--pipeline-option", "nokey"])
  assert "KEY=VALUE" in str(e.value.code)
