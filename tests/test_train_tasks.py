"""The real tasks under the trainer: 1 device vs an 8-device mesh (2 data x 2 fsdp x 2
tensor) give the same losses and parameters after 3 steps (float32)."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from auteur_jax.config import CONFIG_DIR, load_config
from auteur_jax.data import examples, tfrecord
from auteur_jax.data.schema import Clip, Story
from auteur_jax.data.tokenizer import train_bpe
from auteur_jax.models import registry
from auteur_jax.parallel.mesh import make_mesh
from auteur_jax.train import tasks, trainer
from auteur_jax.train.checkpoint import Checkpoints
from auteur_jax.train.metrics import read_metrics

CONFIGS = os.path.join(CONFIG_DIR, "toy")
WORDS = "chop the onion boil water in the pot serve soup on a plate carrot pepper".split()


def _stories(tmp_path, k: int, d: int) -> tuple[str, str]:
  rng = np.random.default_rng(0)
  texts, stories = [], []
  for i in range(16):
    clips = []
    for j in range(2 + i % 3):
      a = " ".join(rng.choice(WORDS, 4))
      c = " ".join(rng.choice(WORDS, 9))
      texts += [a, c]
      clips.append(Clip(f"c{j}", j, j + 1.0, a, c))
    stories.append(Story(f"v{i}", "toy_kitchen", "train", "soup", 10.0, 8.0, None, tuple(clips)))
  tok_dir = str(tmp_path / "tok")
  train_bpe(texts * 3, vocab_size=300, out_dir=tok_dir)
  with tfrecord.ShardedWriter(tmp_path / "tfr" / "train", "stories", 4) as w:
    for s in stories:
      z = rng.normal(size=(len(s.clips), k, d)).astype(np.float32)
      w.write(examples.encode_story(s, z))
  return str(tmp_path / "tfr"), tok_dir


def _run(config, workdir, mesh):
  trainer.train(config, workdir, progress=False, mesh=mesh)
  losses = [r["loss"] for r in read_metrics(workdir) if "loss" in r]  # Not the eval rows.
  s = trainer.setup(config, tasks.get(config.task), mesh)
  ck = Checkpoints(workdir, config.train)
  state = ck.restore(ck.latest_step(), s.abstract, None)
  ck.close()
  return losses, [np.asarray(x) for x in jax.tree.leaves(state)]


def _compare(config, tmp_path):
  one = make_mesh({"data": 1}, devices=jax.devices()[:1])
  eight = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  l1, p1 = _run(config, str(tmp_path / "one"), one)
  l8, p8 = _run(config, str(tmp_path / "eight"), eight)
  assert len(l1) == 3
  np.testing.assert_allclose(l1, l8, rtol=2e-5)
  for a, b in zip(p1, p8):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.integration
def test_director_task_mesh_equivalence(tmp_path):
  base = load_config(os.path.join(CONFIGS, "director.py"))
  k, d = base.model.num_queries, base.model.visual_dim
  data_dir, tok_dir = _stories(tmp_path, k, d)
  config = load_config(
    os.path.join(CONFIGS, "director.py"),
    [
      f"--config.data.dir={data_dir}",
      f"--config.data.tokenizer={tok_dir}",
      "--config.data.batch_size=4",
      "--config.data.num_workers=0",
      "--config.data.max_steps=3",
      "--config.data.max_action_tokens=8",
      "--config.data.max_caption_tokens=16",
      "--config.model.llm.vocab_size=320",
      "--config.model.llm.num_layers=2",
      "--config.train.steps=3",
      "--config.train.log_every=1",
      "--config.train.warmup_steps=1",
      "--config.train.async_checkpoints=false",
    ],
  )
  _compare(config, tmp_path)


# -- vae and clip: clip shards of tiny JPEG frames (a coloured square drifting sideways)

COLORS = {
  "red": (220, 40, 40),
  "green": (40, 200, 60),
  "blue": (40, 60, 220),
  "yellow": (230, 220, 40),
}


def _clips(tmp_path, num_frames: int, size: int) -> tuple[str, str]:
  """16 clips in 4 shards (odd ones a frame short) + a BPE tokenizer of their captions."""
  from auteur_jax.data import video_io

  texts = []
  with tfrecord.ShardedWriter(tmp_path / "tfr" / "train", "clips", 4) as w:
    for i in range(16):
      color, side = list(COLORS)[i % 4], ("left", "right")[i // 4 % 2]
      caption = f"a {color} square on the {side}" + " moving" * (i // 8)
      texts.append(caption)
      n = num_frames - i % 2
      frames = []
      for j in range(n):
        img = np.full((size, size, 3), 96 + 8 * (i // 8), np.uint8)
        x0 = (0 if side == "left" else size // 2) + j % 3
        img[size // 4 : 3 * size // 4, x0 : x0 + size // 3] = COLORS[color]
        frames.append(video_io.encode_jpeg(img, 90))
      clip = Clip(f"c{i}", 0.0, n / 8.0, "cook", caption)
      w.write(examples.encode_clip(f"v{i}", clip, frames, 8.0))
  tok_dir = str(tmp_path / "tok")
  train_bpe(texts * 3, vocab_size=300, out_dir=tok_dir)
  return str(tmp_path / "tfr"), tok_dir


def _restore(config, workdir, mesh, step: int) -> list[np.ndarray]:
  s = trainer.setup(config, tasks.get(config.task), mesh)
  ck = Checkpoints(workdir, config.train)
  state = ck.restore(step, s.abstract, None)
  ck.close()
  return [np.asarray(x) for x in jax.tree.leaves(state)]


def _compare_and_learn(config, tmp_path, steps: int = 20) -> list[float]:
  """3 steps on the 8-device mesh == the first 3 of a `steps`-step run on 1 device
  (losses and step-3 parameters, _compare's tolerances); returns the 1-device losses.
  One run per mesh: each compiles its init and step once."""
  one = make_mesh({"data": 1}, devices=jax.devices()[:1])
  eight = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  config.train.steps, config.train.checkpoint_every, config.train.keep_last = steps, 3, steps
  w1, w8 = str(tmp_path / "one"), str(tmp_path / "eight")
  trainer.train(config, w1, progress=False, mesh=one)
  trainer.train(config, w8, progress=False, mesh=eight, max_steps=3)
  l1 = [r["loss"] for r in read_metrics(w1)]
  l8 = [r["loss"] for r in read_metrics(w8)]
  assert len(l1) == steps and len(l8) == 3
  np.testing.assert_allclose(l1[:3], l8, rtol=2e-5)
  for a, b in zip(_restore(config, w1, one, 3), _restore(config, w8, eight, 3)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  return l1


# Temporal and spatial factor 2 (3 frames); fold_in convs compile fastest at these sizes.
# Adam eps 1e-6: the attention's key bias has a zero gradient (softmax is shift-invariant),
# and eps 1e-8 would turn its summation-order noise into full-size, mesh-dependent steps.
VAE_TINY = [
  "--config.model.base_dim=4",
  "--config.model.z_dim=4",
  "--config.model.dim_mult=(1, 2)",
  "--config.model.temporal_downsample=(True,)",
  "--config.model.conv_impl=fold_in",
  "--config.data.num_frames=3",
  "--config.data.batch_size=4",
  "--config.data.num_workers=0",
  "--config.train.log_every=1",
  "--config.train.warmup_steps=1",
  "--config.train.schedule=constant",
  "--config.train.eps=1e-6",
  "--config.train.async_checkpoints=false",
]


@pytest.mark.integration
def test_vae_task_mesh_equivalence_and_learning(tmp_path):
  data_dir, _ = _clips(tmp_path, num_frames=3, size=16)
  config = load_config(
    os.path.join(CONFIGS, "vae.py"),
    [f"--config.data.dir={data_dir}", "--config.train.lr=3e-3", *VAE_TINY],
  )
  losses = _compare_and_learn(config, tmp_path)
  assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3]), losses


@pytest.mark.integration
def test_vae_video_run_starts_from_an_inflated_image_run(tmp_path):
  """config.init.inflate: a video run from an image-stage run (data.num_frames=1) starts
  with the image run's last temporal taps, zero earlier taps and pass-through temporal
  resampling (lr 0: one step later the params are still the start)."""
  data_dir, _ = _clips(tmp_path, num_frames=3, size=16)
  one = make_mesh({"data": 1}, devices=jax.devices()[:1])
  image = load_config(
    os.path.join(CONFIGS, "vae.py"),
    [
      f"--config.data.dir={data_dir}",
      *VAE_TINY,
      "--config.data.num_frames=1",
      "--config.train.steps=1",
    ],
  )
  trainer.train(image, str(tmp_path / "image"), progress=False, mesh=one)
  video = load_config(
    os.path.join(CONFIGS, "vae.py"),
    [
      f"--config.data.dir={data_dir}",
      *VAE_TINY,
      "--config.train.steps=1",
      "--config.train.lr=0.0",
      f"--config.init.checkpoint={tmp_path / 'image'}",
      "--config.init.inflate=True",
    ],
  )
  trainer.train(video, str(tmp_path / "video"), progress=False, mesh=one)

  def params(config, workdir):
    s = trainer.setup(config, tasks.get("vae"), one)
    ck = Checkpoints(workdir, config.train)
    state = ck.restore(1, s.abstract, None)
    ck.close()
    return {
      jax.tree_util.keystr(p): np.asarray(x)
      for p, x in jax.tree_util.tree_flatten_with_path(state["model"])[0]
    }

  before, after = params(image, str(tmp_path / "image")), params(video, str(tmp_path / "video"))
  kinds = set()
  for key, x in before.items():
    y = after[key]
    if "time_kernel" in key:  # [3, C, C] down / [3, C, 2C] up: the last tap passes through.
      c = x.shape[1]
      np.testing.assert_array_equal(y[:-1], 0)
      np.testing.assert_array_equal(y[-1], np.tile(np.eye(c), (1, x.shape[2] // c)))
      kinds.add("down" if x.shape[2] == c else "up")
    elif "time_bias" in key:
      np.testing.assert_array_equal(y, 0)
    elif "kernel" in key and x.ndim == 5:  # Causal conv [kt, kh, kw, Ci, Co].
      np.testing.assert_array_equal(y[:-1], 0)
      np.testing.assert_array_equal(y[-1], x[-1])
      assert np.abs(x[:-1]).sum() > 0
      kinds.add("conv")
    else:
      np.testing.assert_array_equal(y, x, err_msg=key)
  assert kinds == {"down", "up", "conv"}


@pytest.mark.integration
def test_vae_loss_detail_weight_and_frozen_encoder():
  from flax import nnx

  from auteur_jax.train.task_vae import local_contrast

  flat = jnp.full((1, 1, 8, 8, 3), 0.3)
  np.testing.assert_allclose(np.asarray(local_contrast(flat)), 0.0, atol=1e-6)
  dot = flat.at[:, :, 4, 4].set(-0.7)  # One dark pixel: contrast at it and around it.
  c = np.asarray(local_contrast(dot))[0, 0, ..., 0]
  assert c[4, 4] == pytest.approx(8 / 9) and c[3, 3] == pytest.approx(1 / 9)
  assert c[0, 0] == pytest.approx(0, abs=1e-6) and c.shape == (8, 8)

  config = load_config(os.path.join(CONFIGS, "vae.py"), VAE_TINY)
  task = tasks.get("vae")
  with nnx.use_eager_sharding(False):
    model = registry.build(config, nnx.Rngs(0))
  frames = np.zeros((2, 3, 16, 16, 3), np.uint8)
  frames[:, :, 4:8, 6:9] = (220, 40, 40)  # A small red piece on black.
  batch = {"frames": jnp.asarray(frames)}

  def loss_and_grads(**loss):
    c = config.copy_and_resolve_references()
    c.loss.update(loss)
    (value, _), grads = nnx.value_and_grad(task.loss, argnums=1, has_aux=True)(
      c, model, batch, jax.random.key(0)
    )
    return float(value), nnx.to_flat_state(grads)

  plain, grads = loss_and_grads()
  # Each element's weight 1 + w * contrast: the loss grows linearly in w, by the error
  # at the piece's edges (the flat black and red areas have no contrast).
  five, twenty = (loss_and_grads(detail_weight=w)[0] for w in (5.0, 20.0))
  assert five > plain * 1.05
  assert twenty - plain == pytest.approx(4 * (five - plain), rel=1e-4)
  _, frozen = loss_and_grads(train_encoder=False)
  for (path, g), (_, f) in zip(grads, frozen):
    if path[0] in ("encoder", "quant_conv"):
      assert np.any(np.asarray(g[...]) != 0) and np.all(np.asarray(f[...]) == 0), path
    else:
      np.testing.assert_allclose(np.asarray(f[...]), np.asarray(g[...]), rtol=1e-5, atol=1e-7)


def test_vae_task_rejects_frames_the_vae_cannot_take():

  from auteur_jax.config import ConfigError

  config = load_config(os.path.join(CONFIGS, "vae.py"), ["--config.data.num_frames=8"])
  with pytest.raises(ConfigError, match="config.data.num_frames.*1 \\+ 4k.*5 or 9"):
    tasks.get("vae").dataset(config, 0, 1)


CLIP_TINY = [
  "--config.model.vision.image_size=16",
  "--config.model.vision.patch_size=4",
  "--config.model.vision.width=32",
  "--config.model.vision.depth=2",
  "--config.model.vision.num_heads=2",
  "--config.model.vision.mlp_dim=64",
  "--config.model.vision.projection_dim=16",
  "--config.model.vision.num_tokens=4",
  "--config.model.text.vocab_size=320",
  "--config.model.text.width=32",
  "--config.model.text.depth=2",
  "--config.model.text.num_heads=2",
  "--config.model.text.mlp_dim=64",
  "--config.model.text.max_len=16",
  "--config.model.text.projection_dim=16",
  "--config.data.max_text_len=16",
  "--config.data.num_frames=3",
  "--config.data.batch_size=8",
  "--config.data.num_workers=0",
  "--config.train.log_every=1",
  "--config.train.warmup_steps=1",
  "--config.train.schedule=constant",
  "--config.train.async_checkpoints=false",
]


@pytest.mark.integration
def test_clip_task_mesh_equivalence_and_learning(tmp_path):
  data_dir, tok_dir = _clips(tmp_path, num_frames=3, size=16)
  config = load_config(
    os.path.join(CONFIGS, "clip.py"),
    [
      f"--config.data.dir={data_dir}",
      f"--config.data.tokenizer={tok_dir}",
      "--config.train.lr=2e-3",
      *CLIP_TINY,
    ],
  )
  losses = _compare_and_learn(config, tmp_path)
  assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3]), losses


def test_clip_task_keyframe_and_eos():
  from auteur_jax.models.clip_text import with_eos
  from auteur_jax.train.task_clip import keyframes

  frames = np.arange(2 * 4, dtype=np.uint8).reshape(2, 4, 1, 1, 1) * np.ones(
    (1, 1, 2, 2, 3), np.uint8
  )
  mask = np.array([[1, 1, 1, 1], [1, 1, 1, 0]], bool)
  np.testing.assert_array_equal(np.asarray(keyframes(frames, mask))[:, 0, 0, 0], [1, 5])
  ids = np.array([[7, 8, 0, 0], [7, 8, 9, 6]], np.int32)
  m = ids > 0
  new_ids, new_mask = with_eos(ids, m, 2)
  np.testing.assert_array_equal(np.asarray(new_ids), [[7, 8, 2, 0], [7, 8, 9, 2]])
  np.testing.assert_array_equal(np.asarray(new_mask), [[1, 1, 1, 0], [1, 1, 1, 1]])
