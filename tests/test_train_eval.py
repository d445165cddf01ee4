"""Evaluation during training (config.eval, train/evaluate.py): it never changes the run,
gives the same numbers on 1 and 8 devices, and each task writes its scalars and
pictures (read back from the TensorBoard event files)."""

import glob
import os

import jax
import numpy as np
import pytest
from tensorboardX.proto.event_pb2 import Event
from test_train_dit import _clips as _latent_clips
from test_train_dit import tiny_dit
from test_train_tasks import CLIP_TINY, CONFIGS, VAE_TINY, _clips, _compare, _stories
from test_trainer import _config, _task  # noqa: F401  (the fixture registers the task)

from auteur_jax.config import load_config
from auteur_jax.data import tfrecord
from auteur_jax.demo.plans import SHIPPED
from auteur_jax.parallel.mesh import make_mesh
from auteur_jax.train import trainer
from auteur_jax.train.metrics import read_metrics


def events(workdir: str) -> dict[str, set[str]]:
  """tag -> kinds ("scalar", "image", "text") in WORKDIR/tensorboard's event files."""
  out: dict[str, set[str]] = {}
  for path in glob.glob(os.path.join(workdir, "tensorboard", "events.out.tfevents.*")):
    for record in tfrecord.iter_records(path):
      e = Event.FromString(record)
      for v in e.summary.value:
        kind = "image" if v.HasField("image") else "scalar" if v.HasField("simple_value") else ""
        kind = kind or ("text" if v.metadata.plugin_data.plugin_name == "text" else "other")
        out.setdefault(v.tag, set()).add(kind)
  return out


def _one():
  return make_mesh({"data": 1}, devices=jax.devices()[:1])


def _eval_rows(workdir):
  return [r for r in read_metrics(workdir) if any(k.startswith("eval/") for k in r)]


def test_eval_leaves_training_alone_and_matches_8_devices(tmp_path):
  on, off, eight = (str(tmp_path / n) for n in ("on", "off", "eight"))
  config = _config(steps=5)
  config.eval = {"every": 2, "batches": 2, "split": "train"}
  trainer.train(config, on, progress=False, mesh=_one())
  trainer.train(_config(steps=5), off, progress=False, mesh=_one())
  mesh8 = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  trainer.train(config, eight, progress=False, mesh=mesh8)
  train_rows = lambda w: [r["loss"] for r in read_metrics(w) if "loss" in r]  # noqa: E731
  assert train_rows(on) == train_rows(off)  # Bitwise: evaluation changes nothing.
  rows = _eval_rows(on)
  assert [r["step"] for r in rows] == [2, 4, 5]  # Every 2 steps and at the end.
  np.testing.assert_allclose(
    [r["eval/loss"] for r in rows], [r["eval/loss"] for r in _eval_rows(eight)], rtol=1e-5
  )
  assert "scalar" in events(on)["eval/loss"]


@pytest.mark.integration
def test_each_task_writes_its_eval(tmp_path):
  common = [
    "--config.train.steps=2",
    "--config.train.log_every=1",
    "--config.train.warmup_steps=1",
    "--config.train.async_checkpoints=false",
    "--config.eval.every=2",
    "--config.eval.video_every=2",
    "--config.eval.batches=1",
    "--config.eval.split=train",
  ]
  eval_section = ["--config.eval.sample_steps=2", "--config.eval.videos=2"]

  def run(name, extra, tag_kinds):
    config = load_config(os.path.join(CONFIGS, name), [*extra, *common, *eval_section])
    workdir = str(tmp_path / name.replace(":", "_"))
    trainer.train(config, workdir, progress=False, mesh=_one())
    found = events(workdir)
    for tag, kind in tag_kinds.items():
      assert kind in found.get(tag, set()), (name, tag, sorted(found))
    return workdir

  # VAE: reconstruction strip.
  d, _ = _clips(tmp_path / "v", num_frames=3, size=16)
  run("vae.py", [f"--config.data.dir={d}", *VAE_TINY], {
    "eval/psnr": "scalar", "eval/reconstruction": "image"})  # fmt: skip
  # CLIP: contrastive loss and caption <-> keyframe retrieval top-1.
  d, tok = _clips(tmp_path / "c", num_frames=3, size=16)
  run("clip.py", [f"--config.data.dir={d}", f"--config.data.tokenizer={tok}", *CLIP_TINY], {
    "eval/loss": "scalar", "eval/i2t_acc": "scalar", "eval/t2i_acc": "scalar"})  # fmt: skip
  # Director: step top-1 with the true texts.
  base = load_config(os.path.join(CONFIGS, "director.py"))
  d, tok = _stories(tmp_path / "d", base.model.num_queries, base.model.visual_dim)
  run(
    "director.py",
    [
      f"--config.data.dir={d}",
      f"--config.data.tokenizer={tok}",
      "--config.data.batch_size=4",
      "--config.data.num_workers=0",
      "--config.data.max_steps=3",
      "--config.data.max_action_tokens=8",
      "--config.data.max_caption_tokens=16",
      "--config.model.llm.vocab_size=320",
      "--config.model.llm.num_layers=2",
    ],
    {"eval/step_top1": "scalar", "eval/text_ce": "scalar"},
  )
  # DiT: flow loss at fixed times; sampled and true clips as GIFs with their captions,
  # and the toy state reader on them (64 x 64 frames: 8 x 8 latents).
  dd = load_config(os.path.join(CONFIGS, "dit.py"))
  d, tok = _latent_clips(tmp_path / "t", (3, 8, 8, dd.model.in_channels), 4, dd.model.visual_dim)
  w = run(
    "dit.py",
    [
      *tiny_dit(d, tok),
      f"--config.eval.vae={os.path.join(SHIPPED, 'vae')}",
      "--config.eval.toy_states=true",
    ],
    {
      "eval/flow_loss_t0.5": "scalar",
      "eval/state_agreement_vs_true": "scalar",
      "eval/sampled_0": "image",
      "eval/true_1": "image",
      "eval/sampled_0/text_summary": "text",
    },
  )
  gifs = sorted(os.listdir(os.path.join(w, "eval", "2")))
  assert gifs == ["sampled_0.gif", "sampled_1.gif", "true_0.gif", "true_1.gif"]


@pytest.mark.integration
def test_toy_dit_eval_leaves_training_alone_and_matches_8_devices(tmp_path):
  """toy/dit with its evaluation (every step here) against the same run without: the
  same losses; and the eval rows of 1 and 8 devices agree (_compare's meshes)."""
  dd = load_config(os.path.join(CONFIGS, "dit.py"))
  d, tok = _latent_clips(tmp_path / "t", (2, 4, 4, dd.model.in_channels), 4, dd.model.visual_dim)
  common = [
    *tiny_dit(d, tok),
    "--config.train.steps=3",
    "--config.train.log_every=1",
    "--config.train.warmup_steps=1",
    "--config.train.async_checkpoints=false",
    "--config.eval.split=train",
    "--config.eval.batches=2",
    "--config.eval.video_every=0",
  ]
  on = load_config(os.path.join(CONFIGS, "dit.py"), [*common, "--config.eval.every=1"])
  off = load_config(os.path.join(CONFIGS, "dit.py"), [*common, "--config.eval.every=0"])
  _compare(on, tmp_path / "on")  # 1 vs 8 devices: the training rows.
  trainer.train(off, str(tmp_path / "off"), progress=False, mesh=_one())
  losses = lambda w: [r["loss"] for r in read_metrics(w) if "loss" in r]  # noqa: E731
  assert losses(str(tmp_path / "on" / "one")) == losses(str(tmp_path / "off"))
  one, eight = (_eval_rows(str(tmp_path / "on" / n)) for n in ("one", "eight"))
  assert [r["step"] for r in one] == [1, 2, 3]
  for a, b in zip(one, eight, strict=True):
    np.testing.assert_allclose(a["eval/flow_loss_t0.5"], b["eval/flow_loss_t0.5"], rtol=1e-5)
