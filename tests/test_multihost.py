"""Two local processes x 4 CPU devices train with jax.distributed, checkpoint, restore and
evaluate."""

import json
import os
import subprocess
import sys
import time

import numpy as np
import portpicker
import pytest
from test_train_dit import _clips as _latent_clips
from test_train_dit import tiny_dit
from test_train_tasks import CONFIGS

from auteur_jax.config import load_config
from auteur_jax.data import examples, tfrecord, video_io
from auteur_jax.data.schema import Clip
from auteur_jax.demo.plans import SHIPPED

WORKER = os.path.join(os.path.dirname(__file__), "multiprocess_worker.py")


@pytest.fixture
def data_dir(tmp_path):
  frame = video_io.encode_jpeg(np.zeros((8, 8, 3), np.uint8))
  rng = np.random.default_rng(0)
  with tfrecord.ShardedWriter(tmp_path / "data" / "train", "clips", 4) as w:
    for i in range(64):
      clip = Clip(f"c{i}", 0.0, 1.0, "stir", "a pot")
      w.write(
        examples.encode_clip(
          f"v{i}", clip, [frame], 8.0, {"latents": rng.normal(size=8).astype(np.float32)}
        )
      )
  return str(tmp_path / "data")


def _run(workdir: str, data: str, steps: int, *extra: str) -> list[dict]:
  port = portpicker.pick_unused_port()
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS",)}
  procs = [
    subprocess.Popen(
      [
        "timeout",
        "180",
        sys.executable,
        WORKER,
        "--process-id",
        str(i),
        "--num-processes",
        "2",
        "--port",
        str(port),
        "--workdir",
        workdir,
        "--data",
        data,
        "--steps",
        str(steps),
        *extra,
      ],
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
      env=env,
    )
    for i in range(2)
  ]
  outs = [p.communicate(timeout=200) for p in procs]
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, f"worker failed ({p.returncode}):\n{err[-3000:]}"
  return [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]


@pytest.mark.integration
def test_two_processes_train_checkpoint_restore(tmp_path, data_dir):
  workdir = str(tmp_path / "run")
  os.makedirs(workdir)
  first = _run(workdir, data_dir, steps=2)
  assert [r["step"] for r in first] == [2, 2]
  assert first[0]["loss"] == first[1]["loss"]  # One global loss, seen by both.
  files = [json.load(open(os.path.join(workdir, f"files-{i}.json"))) for i in range(2)]
  assert not set(files[0]) & set(files[1]) and len(files[0]) == len(files[1]) == 2
  ckpt = os.path.join(workdir, "checkpoints", "2")
  assert {"process_0-of-2.json", "process_1-of-2.json"} <= set(
    os.listdir(os.path.join(ckpt, "data"))
  )
  second = _run(workdir, data_dir, steps=4)  # Restores step 2, trains to 4.
  assert [r["step"] for r in second] == [4, 4]
  rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  assert [r["step"] for r in rows] == [1, 2, 3, 4]


@pytest.mark.integration
def test_two_processes_evaluate_together_and_process_0_writes(tmp_path):
  """toy/dit with its evaluation (validation losses, sampled and true clips decoded by the
  shipped VAE, toy state scores) on 2 processes x 4 devices: each evaluation is one
  metrics row, one set of GIFs and one TensorBoard writer."""
  dd = load_config(os.path.join(CONFIGS, "dit.py"))
  data, tok = _latent_clips(tmp_path / "t", (3, 8, 8, dd.model.in_channels), 4, dd.model.visual_dim)
  workdir = str(tmp_path / "run")
  os.makedirs(workdir)
  sets = [
    *tiny_dit(data, tok, batch_size=8),
    "--config.train.log_every=1",
    "--config.train.warmup_steps=1",
    "--config.eval.split=train",
    "--config.eval.every=1",
    "--config.eval.video_every=2",
    "--config.eval.batches=1",
    "--config.eval.sample_steps=2",
    "--config.eval.videos=2",
    f"--config.eval.vae={os.path.join(SHIPPED, 'vae')}",
    "--config.eval.toy_states=true",
  ]
  config = os.path.join(CONFIGS, "dit.py")
  _run(workdir, data, 3, "--config", config, *(f"--set={s}" for s in sets))
  rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  evals = [r for r in rows if "eval/flow_loss_t0.5" in r]
  assert [r["step"] for r in evals] == [1, 2, 3]  # Once per evaluation, not per process.
  assert [r["step"] for r in rows if "eval/state_agreement_vs_true" in r] == [2, 3]
  (third,) = [r for r in rows if r["step"] == 3 and "loss" in r]  # Times step 2's eval.
  assert third["time_frac_eval"] > 0 and third["time_frac_previews"] > 0
  assert sorted(os.listdir(os.path.join(workdir, "eval", "2"))) == [
    "sampled_0.gif", "sampled_1.gif", "true_0.gif", "true_1.gif"
  ]  # fmt: skip
  assert len(os.listdir(os.path.join(workdir, "tensorboard"))) == 1


def _worker(workdir: str, data: str, steps: int) -> subprocess.Popen:
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  return subprocess.Popen(
    [
      "timeout",
      "120",
      sys.executable,
      WORKER,
      "--process-id",
      "0",
      "--num-processes",
      "1",
      "--port",
      "0",
      "--workdir",
      workdir,
      "--data",
      data,
      "--steps",
      str(steps),
      "--checkpoint-every",
      "100000",
    ],
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
    env=env,
  )


def _losses(workdir: str) -> list[float]:
  return [json.loads(l)["loss"] for l in open(os.path.join(workdir, "metrics.jsonl"))]


@pytest.mark.integration
def test_sigterm_saves_and_resume_matches(tmp_path, data_dir):
  steps = 300
  straight, cut = str(tmp_path / "straight"), str(tmp_path / "cut")
  os.makedirs(straight)
  os.makedirs(cut)
  p = _worker(straight, data_dir, steps)
  assert p.wait(timeout=150) == 0, p.stderr.read()[-2000:]
  p = _worker(cut, data_dir, steps)
  metrics = os.path.join(cut, "metrics.jsonl")
  while not (os.path.exists(metrics) and len(open(metrics).readlines()) >= 5):
    assert p.poll() is None, p.stderr.read()[-2000:]
    time.sleep(0.05)
  p.terminate()  # SIGTERM, as a preemption notice.
  out, err = p.communicate(timeout=100)
  assert p.returncode == 0, err[-2000:]
  report = json.loads(out.strip().splitlines()[-1])
  assert report["stopped_by_signal"] and 5 <= report["step"] < steps
  saved = sorted(int(d) for d in os.listdir(os.path.join(cut, "checkpoints")) if d.isdigit())
  assert saved == [report["step"]]
  p = _worker(cut, data_dir, steps)
  assert p.wait(timeout=150) == 0, p.stderr.read()[-2000:]
  assert _losses(cut) == _losses(straight)  # Same batches and updates after the restore.
