"""Data sets, workdirs, checkpoints and outputs on cloud storage: `gs://` end to end on an
offline Cloud Storage (tests/fake_gcs.py: orbax's arrays through tensorstore's gcs driver,
everything else through etils.epath -> fsspec, one in-memory bucket).

Each test runs in an empty working folder: code that used `open` / `os.path` on a URI
would leave a local `gs:` folder there (checked) and nothing in the bucket.
"""

import json
import os
import types

import fake_gcs
import numpy as np
import pytest

from auteur_jax import cli, paths
from auteur_jax.config import CONFIG_DIR
from auteur_jax.data import schema, tfrecord, video_io
from auteur_jax.data.schema import Clip, Story, write_stories

BUCKET = f"gs://{fake_gcs.BUCKET}"
DATA_CONFIG = os.path.join(CONFIG_DIR, "toy", "data.py")


@pytest.fixture
def gcs(monkeypatch, tmp_path):
  """The offline bucket (its FakeGCSFileSystem); the test runs in tmp_path/cwd."""
  from orbax.checkpoint._src.path import gcs_utils

  # orbax asks the bucket (google-cloud-storage) whether it has a hierarchical namespace.
  monkeypatch.setattr(
    gcs_utils,
    "get_bucket",
    lambda name: types.SimpleNamespace(hierarchical_namespace_enabled=False),
  )
  yield from fake_gcs.serve(monkeypatch, tmp_path)


def _upload(local: str, uri: str) -> None:
  with open(local, "rb") as src, paths.open_file(uri, "wb") as dst:
    dst.write(src.read())


def _stories(root, upload_to: str | None = None) -> str:
  """4 stories of 3 clips (3 train, 1 val) with their videos under `root`; with
  `upload_to`, the same files copied there (relative video paths); returns the stories file."""
  os.makedirs(root / "videos", exist_ok=True)
  stories = []
  for i, split in enumerate(["train", "train", "train", "val"]):
    t = np.arange(48)
    frames = np.zeros((48, 32, 48, 3), np.uint8)
    frames[..., 0] = (t * 9 % 256)[:, None, None]
    frames[..., 2] = i * 40
    video_io.write_video(str(root / "videos" / f"v{i}.mp4"), frames, 8)
    clips = tuple(
      Clip(f"v{i}_{j}", 2.0 * j, 2.0 * j + 1.5, f"step {j} of {i}", f"caption {j}")
      for j in range(3)
    )
    stories.append(
      Story(f"v{i}", "toy_kitchen", split, "soup", 6.0, 8.0, f"videos/v{i}.mp4", clips)
    )
  write_stories(root / "stories.jsonl", stories)
  if upload_to is None:
    return str(root / "stories.jsonl")
  for i in range(4):
    _upload(str(root / "videos" / f"v{i}.mp4"), f"{upload_to}/videos/v{i}.mp4")
  write_stories(f"{upload_to}/stories.jsonl", stories)  # Through epath, not a copy.
  return f"{upload_to}/stories.jsonl"


def _build(stories: str, out: str) -> None:
  over = [f"--config.data.dir={out}", "--config.data.size=32", "--config.data.num_shards=2"]
  cli.main(
    ["data", "build", "--config", DATA_CONFIG, "--stories", stories, *over]
    + ["--config.data.build_workers=1"]  # Spawned workers would not see the fake bucket.
  )


def test_data_build_on_gcs_equals_local_build(gcs, tmp_path, capsys):
  """`auteur data build` (pool runner) from gs:// stories + videos to a gs:// data set:
  the same records, byte for byte, and the same dataset.json as a local build."""
  local_stories = _stories(tmp_path / "local")
  remote_stories = _stories(tmp_path / "staging", upload_to=f"{BUCKET}/raw")
  _build(local_stories, str(tmp_path / "tfr"))
  _build(remote_stories, f"{BUCKET}/tfr")
  local = tfrecord.list_shards(str(tmp_path / "tfr"))
  remote = tfrecord.list_shards(f"{BUCKET}/tfr")
  assert [os.path.relpath(p, tmp_path / "tfr") for p in local] == [
    paths.relative(p, f"{BUCKET}/tfr") for p in remote
  ]
  assert len(remote) == 8
  for a, b in zip(local, remote):
    assert list(tfrecord.iter_records(a)) == list(tfrecord.iter_records(b))
  assert not [o for o in gcs.objects() if o.endswith(".tmp")]  # Temporary shards renamed.
  want = json.load(open(tmp_path / "tfr" / "dataset.json"))
  with paths.open_file(f"{BUCKET}/tfr/dataset.json") as f:
    got = json.load(f)
  assert got.pop("stories_file") == remote_stories
  want.pop("stories_file")
  assert got == want
  capsys.readouterr()
  cli.main(["data", "verify", f"{BUCKET}/tfr"])
  cli.main(["data", "inspect", f"{BUCKET}/tfr", "--split", "val"])
  text = capsys.readouterr().out
  assert "16 records verified, 0 bad files or data-set mismatches" in text
  assert "sample story v3 (val): soup, 3 steps" in text


def test_missing_remote_files_are_named(gcs):
  with pytest.raises(FileNotFoundError, match="auteur-test/nothing.jsonl"):
    schema.read_stories(f"{BUCKET}/nothing.jsonl")
  with pytest.raises(FileNotFoundError, match="auteur-test/none"):
    tfrecord.list_shards(f"{BUCKET}/none")
  with pytest.raises(FileNotFoundError, match="auteur-test/x.tfrecord"):
    list(tfrecord.iter_records(f"{BUCKET}/x.tfrecord"))


def test_fake_bucket_keeps_generations_like_gcs(gcs):
  """tensorstore's conditional writes (OCDBT's manifest) see Cloud Storage's contract: a
  read reports the generation the write made (not 0, which made a later conditional write
  fail with "Malformed StorageGeneration"), a stale condition loses, empty objects exist."""
  import tensorstore as ts

  kv = ts.KvStore.open({"driver": "gcs", "bucket": fake_gcs.BUCKET}).result()
  first = kv.write("m", b"one").result().generation
  read = kv.read("m").result()
  assert read.stamp.generation == first
  second = kv.write("m", b"two", if_equal=read.stamp.generation).result().generation
  assert second not in (first, b"")
  assert kv.write("m", b"three", if_equal=first).result().generation == b""  # Lost the race.
  assert kv.read("m", if_not_equal=second).result().state == "unspecified"  # 304.
  assert bytes(kv.read("m").result().value) == b"two"
  paths.write_atomic(f"{BUCKET}/empty", b"")
  assert paths.exists(f"{BUCKET}/empty") and paths.size(f"{BUCKET}/empty") == 0
  assert gcs.objects() == ["empty", "m"]


def _local_files(root) -> dict[str, bytes]:
  return {
    os.path.relpath(os.path.join(d, n), root): open(os.path.join(d, n), "rb").read()
    for d, _, names in os.walk(root)
    for n in names
  }


def _remote_files(fs, prefix: str) -> dict[str, bytes]:
  return {
    k[len(prefix) + 1 :]: fs._read(f"{fake_gcs.BUCKET}/{k}")
    for k in fs.objects()
    if k.startswith(prefix + "/")
  }


def test_batch_sampling_job_on_gcs(gcs, tmp_path):
  """`auteur sample`'s batch job with gs:// prompts and outputs: the same files as a local
  job; an item cut off while uploading (no story.json) is redone; a rerun skips all."""
  from test_sample_batch import CONFIG, _Renderer

  from auteur_jax.config import load_module_config
  from auteur_jax.sample import batch

  config = load_module_config(CONFIG)
  config.sample.crf = 0
  lines = "".join(json.dumps(dict(id=i, task=f"make {i}", num_steps=2)) + "\n" for i in "abc")
  (tmp_path / "prompts.jsonl").write_text(lines)
  paths.write_atomic(f"{BUCKET}/prompts.jsonl", lines)
  run = lambda prompts, out: batch.run_batch(  # noqa: E731
    config, prompts, out, progress=False, sampler=_Renderer()
  )
  run(str(tmp_path / "prompts.jsonl"), str(tmp_path / "out"))
  r = run(f"{BUCKET}/prompts.jsonl", f"{BUCKET}/out")
  assert r["rendered"] == ["a", "b", "c"]
  want = _local_files(tmp_path / "out")
  assert _remote_files(gcs, "out") == want
  gcs.rm_file(f"{BUCKET}/out/b/story.json")  # As if killed before b's last upload.
  assert run(f"{BUCKET}/prompts.jsonl", f"{BUCKET}/out")["rendered"] == ["b"]
  got = _remote_files(gcs, "out")
  assert got.pop("manifest.jsonl").count(b'"id": "b"') == 2  # b's entry again, last wins.
  assert got == {k: v for k, v in want.items() if k != "manifest.jsonl"}
  r = run(f"{BUCKET}/prompts.jsonl", f"{BUCKET}/out")
  assert (r["rendered"], r["skipped"]) == ([], 3)
  assert sorted(batch.read_manifest(f"{BUCKET}/out")) == ["a", "b", "c"]
  with pytest.raises(FileNotFoundError, match="--prompts: gs://auteur-test/none.jsonl"):
    run(f"{BUCKET}/none.jsonl", f"{BUCKET}/out")


@pytest.mark.integration
def test_training_run_on_gcs_resumes_like_a_local_one(gcs, tmp_path):
  """A training run with a gs:// workdir: orbax checkpoints (arrays through tensorstore's
  gcs driver), metrics.jsonl and TensorBoard events in the bucket; stopped at step 3 and
  resumed from its gs:// checkpoint, it ends where a local straight run ends, bitwise."""
  import jax
  from test_trainer import RegressionTask, _config, _Mlp, _params

  from auteur_jax.checkpoint.layout import step_dir_of
  from auteur_jax.models import registry
  from auteur_jax.parallel.mesh import make_mesh
  from auteur_jax.train import tasks, trainer
  from auteur_jax.train.checkpoint import Checkpoints
  from auteur_jax.train.metrics import read_metrics

  registry.register("regression", lambda config, rngs: _Mlp(config.model.width, rngs))
  tasks.register("regression", RegressionTask())
  mesh = make_mesh({"data": -1})
  local, remote = str(tmp_path / "run"), f"{BUCKET}/run"
  trainer.train(_config(), local, progress=False, mesh=mesh)
  trainer.train(_config(), remote, progress=False, mesh=mesh, max_steps=3)
  assert Checkpoints(remote, _config().train).latest_step() == 3
  trainer.train(_config(), remote, progress=False, mesh=mesh)
  assert [r["loss"] for r in read_metrics(remote)] == [r["loss"] for r in read_metrics(local)]
  for x, y in zip(_params(local, _config(), mesh), _params(remote, _config(), mesh)):
    np.testing.assert_array_equal(x, y)
  assert step_dir_of(remote) == f"{remote}/checkpoints/6"
  objects = gcs.objects()
  assert "run/checkpoints/6/state/manifest.ocdbt" in objects
  assert "run/checkpoints/6/config/metadata" in objects
  assert any(o.startswith("run/tensorboard/events.out.tfevents") for o in objects)
  assert jax.process_count() == 1


@pytest.mark.integration
def test_encode_on_gcs_equals_local(gcs, tmp_path):
  """`auteur encode` from a gs:// data set to a gs:// output (a visual-embedding pass:
  clip shards with the array, story shards with each step's, read back by offset from the
  bucket): the same files as a local run; a rerun skips every shard."""
  from test_encode import _config

  from auteur_jax.sample.encode import encode_dataset

  _build(_stories(tmp_path / "raw"), str(tmp_path / "tfr"))
  paths.upload_tree(tmp_path / "tfr", f"{BUCKET}/tfr")
  local = encode_dataset(
    _config("clip", str(tmp_path / "tfr"), str(tmp_path / "enc")), progress=False
  )
  remote = encode_dataset(_config("clip", f"{BUCKET}/tfr", f"{BUCKET}/enc"), progress=False)
  assert remote["complete"] and remote["encoded_shards"] == local["encoded_shards"] == 4
  want, got = _local_files(tmp_path / "enc"), _remote_files(gcs, "enc")
  meta = json.loads(got.pop("dataset.json"))
  assert meta.pop("source_dir") == f"{BUCKET}/tfr"
  want_meta = json.loads(want.pop("dataset.json"))
  want_meta.pop("source_dir")
  assert got == want and meta == want_meta  # Every shard byte for byte.
  again = encode_dataset(_config("clip", f"{BUCKET}/tfr", f"{BUCKET}/enc"), progress=False)
  assert (again["encoded_shards"], again["skipped_shards"]) == (0, 4)
