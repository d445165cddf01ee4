"""`auteur encode`: arrays added with the right dtype / shape, resume by shard, chaining."""

import json
import os

import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from auteur_jax import cli
from auteur_jax.data import examples, pipeline, tfrecord, video_io
from auteur_jax.data.schema import Clip, Story
from auteur_jax.models import vae as V
from auteur_jax.parallel.mesh import mesh_config
from auteur_jax.sample.encode import encode_dataset, keyframe_index

SIZE, FPS = 16, 4.0


def _frames(n: int, seed: int) -> list[bytes]:
  rng = np.random.default_rng(seed)
  return [
    video_io.encode_jpeg(rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8), 95)
    for _ in range(n)
  ]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
  """3 stories x 3 clips (5-11 frames) in 3 clip shards + 2 story shards, like `data build`."""
  out = tmp_path_factory.mktemp("built")
  d = out / "train"
  clips_w = tfrecord.ShardedWriter(d, "clips", 3)
  stories_w = tfrecord.ShardedWriter(d, "stories", 2)
  for v in range(3):
    clips = []
    for i in range(3):
      n = 5 + 3 * i  # Shorter and longer than the VAE's 9-frame window.
      clip = Clip(f"c{i}", 10.0 * i, 10.0 * i + n / FPS, f"act {v}.{i}", f"cap {v}.{i}")
      clips.append(clip)
      clips_w.write(examples.encode_clip(f"vid{v}", clip, _frames(n, 10 * v + i), FPS))
    story = Story(f"vid{v}", "toy_kitchen", "train", f"dish {v}", 40.0, FPS, None, tuple(clips))
    stories_w.write(examples.encode_story(story))
  clips_w.close()
  stories_w.close()
  meta = {"splits": {"train": {"stories": 3, "clips": 9}}, "schema_version": 1}
  (out / "dataset.json").write_text(json.dumps(meta))
  return str(out)


def _config(task: str, in_dir: str, out_dir: str) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.task = task
  if task == "vae":
    c.model = ml_collections.ConfigDict(
      dict(
        base_dim=4,
        z_dim=4,
        dim_mult=(1, 1, 1, 1),
        num_res_blocks=1,
        latents_mean=(),
        latents_std=(),
      )
    )
    c.init = ml_collections.ConfigDict(dict(checkpoint="", diffusers_vae=""))
  else:
    c.model = ml_collections.ConfigDict()
    c.model.vision = ml_collections.ConfigDict(
      dict(
        family="clip",
        image_size=32,
        patch_size=8,
        width=16,
        depth=1,
        num_heads=2,
        mlp_dim=32,
        projection_dim=8,
        feature_layer=-1,
        num_tokens=4,
        project_tokens=True,
      )
    )
    c.init = ml_collections.ConfigDict(dict(checkpoint="", hf_vision=""))
  c.encode = ml_collections.ConfigDict(
    dict(
      in_dir=in_dir,
      out_dir=out_dir,
      splits=(),
      batch_size=8,
      num_frames=9,
      dtype="float32" if task == "vae" else "float16",
      seed=0,
    )
  )
  c.mesh = mesh_config({"data": -1, "fsdp": 1, "tensor": 1})
  return c


def _records(path: str) -> list[dict]:
  return [examples.decode_clip(r, path) for r in tfrecord.iter_records(path)]


def _train_run(config: ml_collections.ConfigDict, workdir: str) -> V.VideoVAE:
  """A fake training run: WORKDIR/checkpoints/7/state with {model, opt} like the trainer's."""
  with nnx.use_eager_sharding(False):
    model = V.VideoVAE(V.VAEConfig.from_dict(config.model), rngs=nnx.Rngs(7))
  state = nnx.State({"model": nnx.state(model), "opt": {"mu": nnx.state(model)}})
  manager = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"), item_names=("state",))
  manager.save(7, args=ocp.args.Composite(state=ocp.args.StandardSave(state)))
  manager.wait_until_finished()
  return model


@pytest.mark.integration
def test_vae_pass_resumes_by_shard(dataset, tmp_path):
  out = str(tmp_path / "vae")
  config = _config("vae", dataset, out)
  model = _train_run(config, str(tmp_path / "run"))  # Weights differ from encode.seed's.
  config.init.checkpoint = str(tmp_path / "run")
  first = encode_dataset(config, progress=False, max_shards=1)
  assert first["encoded_shards"] == 1 and not first["complete"]
  assert not os.path.exists(os.path.join(out, "dataset.json"))  # Written when complete.
  shard0 = os.path.join(out, "train", "clips-00000-of-00003.tfrecord")
  stamp = os.stat(shard0).st_mtime_ns
  rest = encode_dataset(config, progress=False)
  assert rest["encoded_shards"] == 2 and rest["skipped_shards"] == 1 and rest["complete"]
  assert os.stat(shard0).st_mtime_ns == stamp  # The finished shard was not rewritten.
  assert (rest["shape"], rest["dtype"]) == ((3, 2, 2, 4), "float32")
  again = encode_dataset(config, progress=False)
  assert again["encoded_shards"] == 0 and again["skipped_shards"] == 3

  src = pipeline.split_files(dataset, "train", "clips")
  dst = pipeline.split_files(out, "train", "clips")
  assert [os.path.basename(p) for p in src] == [os.path.basename(p) for p in dst]
  ids = []
  for s, d in zip(src, dst):
    before, after = _records(s), _records(d)
    assert [(r["video_id"], r["clip_id"]) for r in after] == [
      (r["video_id"], r["clip_id"]) for r in before
    ]
    for b, a in zip(before, after):
      assert a["frames"] == b["frames"] and a["caption"] == b["caption"]
      assert a["latents"].shape == (3, 2, 2, 4) and a["latents"].dtype == np.float32
    ids += [(r["video_id"], r["clip_id"]) for r in after]
  assert len(ids) == len(set(ids)) == 9  # Every clip exactly once.

  # The stored latents are the checkpoint's posterior means of the 9-frame window.
  record = next(tfrecord.iter_records(dst[0]))
  frames = pipeline.ClipDecoder(9)(record)["frames"]
  mean, _ = V.encode(model, jnp.asarray(frames[None], jnp.float32) / 127.5 - 1.0)
  np.testing.assert_allclose(
    examples.decode_clip(record)["latents"], np.asarray(mean)[0], atol=1e-5
  )
  meta = json.load(open(os.path.join(out, "dataset.json")))
  assert meta["encoded"]["latents"]["z_dim"] == 4
  assert len(pipeline.split_files(out, "train", "stories")) == 2  # Stories copied.


@pytest.mark.integration
def test_clip_pass_chains_and_fills_stories(dataset, tmp_path):
  vae_out, enc_out = str(tmp_path / "vae"), str(tmp_path / "enc")
  encode_dataset(_config("vae", dataset, vae_out), progress=False)
  config_file = tmp_path / "clip_config.py"  # Through the CLI, as a user runs it.
  config_file.write_text(
    "import ml_collections\n"
    f"def get_config():\n  return ml_collections.ConfigDict("
    f"{_config('clip', vae_out, '').to_dict()!r})\n"
  )
  cli.main(["encode", "--config", str(config_file), f"--config.encode.out_dir={enc_out}"])
  by_clip = {}
  for path in pipeline.split_files(enc_out, "train", "clips"):
    for r in _records(path):
      assert r["visual_embedding"].shape == (4, 8)
      assert r["visual_embedding"].dtype == np.float16
      assert r["latents"].shape == (3, 2, 2, 4)  # Kept from the VAE pass.
      by_clip[(r["video_id"], r["start"])] = r["visual_embedding"]
  assert len(by_clip) == 9
  stories = [
    examples.decode_story(r)
    for p in pipeline.split_files(enc_out, "train", "stories")
    for r in tfrecord.iter_records(p)
  ]
  assert sorted(s["video_id"] for s in stories) == ["vid0", "vid1", "vid2"]
  for s in stories:
    emb = s["visual_embedding"]
    assert emb.shape == (3, 4, 8) and emb.dtype == np.float16
    for t, start in enumerate(s["start"]):
      np.testing.assert_array_equal(emb[t], by_clip[(s["video_id"], start)])
  meta = json.load(open(os.path.join(enc_out, "dataset.json")))
  assert set(meta["encoded"]) == {"latents", "visual_embedding"}


def test_keyframe_and_errors(dataset, tmp_path):
  ex = {"keyframe_time": 12.0, "start": 10.0, "fps": 4.0, "frames": [b""] * 6}
  assert keyframe_index(ex) == 5  # 2 s in at 4 fps = frame 8, clipped to the last.
  assert keyframe_index(dict(ex, keyframe_time=10.6)) == 2
  config = _config("vae", dataset, str(tmp_path / "x"))
  config.encode.batch_size = 3
  with pytest.raises(Exception, match="must be a multiple of 8 .the mesh.s batch axes"):
    encode_dataset(config, progress=False)
  config = _config("vae", str(tmp_path / "missing"), str(tmp_path / "x"))
  with pytest.raises(FileNotFoundError, match="dataset.json: not found"):
    encode_dataset(config, progress=False)
  config = _config("clip", dataset, str(tmp_path / "x"))
  config.init.hf_vision = str(tmp_path)
  with pytest.raises(FileNotFoundError, match="init.hf_vision: .* has no config.json"):
    encode_dataset(config, progress=False)
  config.init.checkpoint = str(tmp_path)
  with pytest.raises(Exception, match="set checkpoint or hf_vision, not both"):
    encode_dataset(config, progress=False)
  config = _config("director", dataset, str(tmp_path / "x"))
  with pytest.raises(Exception, match="runs \\['clip', 'vae'\\]"):
    encode_dataset(config, progress=False)


@pytest.mark.integration
def test_two_processes_encode_the_same_records_as_one(dataset, tmp_path):
  """2 processes x 2 devices (jax.distributed, each its own shards) write the records of a
  1-process run; a rerun finishes dataset.json if the last process to finish was not 0."""
  import subprocess
  import sys

  import portpicker

  one, two = str(tmp_path / "one"), str(tmp_path / "two")
  config = _config("vae", dataset, one)
  _train_run(config, str(tmp_path / "run"))
  config.init.checkpoint = str(tmp_path / "run")
  encode_dataset(config, progress=False)
  worker = os.path.join(os.path.dirname(__file__), "encode_worker.py")
  port = str(portpicker.pick_unused_port())
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  procs = [
    subprocess.Popen(
      [
        "timeout",
        "180",
        sys.executable,
        worker,
        "--process-id",
        str(i),
        "--num-processes",
        "2",
        "--port",
        port,
        "--in-dir",
        dataset,
        "--out-dir",
        two,
        "--checkpoint",
        str(tmp_path / "run"),
      ],
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
      env=env,
    )  # fmt: skip
    for i in range(2)
  ]
  outs = [p.communicate(timeout=200) for p in procs]
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  reports = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
  assert sorted(r["encoded"] for r in reports) == [1, 2]  # Shards 0, 2 and 1: split.
  if not os.path.exists(os.path.join(two, "dataset.json")):
    config.encode.out_dir = two
    assert encode_dataset(config, progress=False)["encoded_shards"] == 0
  for a, b in zip(
    pipeline.split_files(one, "train", "clips"), pipeline.split_files(two, "train", "clips")
  ):
    ra, rb = _records(a), _records(b)
    assert [(r["video_id"], r["clip_id"]) for r in ra] == [
      (r["video_id"], r["clip_id"]) for r in rb
    ]
    for x, y in zip(ra, rb):
      assert x["frames"] == y["frames"]
      np.testing.assert_allclose(x["latents"], y["latents"], atol=1e-5)
  assert (
    json.load(open(os.path.join(one, "dataset.json")))["encoded"]
    == json.load(open(os.path.join(two, "dataset.json")))["encoded"]
  )
