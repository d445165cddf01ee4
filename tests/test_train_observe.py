"""What a run tells about itself: goodput rows, a profile trace, `auteur runs summary`."""

import glob
import json
import os

import jax
import pytest
from test_trainer import _config, _task  # noqa: F401  (the fixture registers the task)

from auteur_jax import cli
from auteur_jax.config import ConfigError
from auteur_jax.parallel.mesh import make_mesh
from auteur_jax.train import trainer
from auteur_jax.train.metrics import read_metrics, summarize


def test_goodput_rows_and_a_profile_trace(tmp_path):
  workdir = str(tmp_path / "run")
  config = _config(steps=4, profile_steps=(1, 2))
  trainer.train(config, workdir, progress=False, mesh=make_mesh({"data": 1}, jax.devices()[:1]))
  rows = read_metrics(workdir)
  for r in rows:
    shares = [r[f"time_frac_{p}"] for p in ("data", "step", "checkpoint", "eval", "previews")]
    assert all(0.0 <= x <= 1.0 for x in shares) and sum(shares) <= 1.0 + 1e-6
  assert "mfu" not in rows[-1]  # The regression task has no FLOP formula.
  # TensorBoard's profile plugin reads tensorboard/plugins/profile/<run>/*.xplane.pb.
  assert glob.glob(os.path.join(workdir, "tensorboard", "plugins", "profile", "*", "*.xplane.pb"))


def test_profile_steps_are_checked():
  with pytest.raises(ConfigError, match="profile_steps"):
    from auteur_jax.train.run_config import check_train

    check_train(_config(profile_steps=(3, 1)))


def test_runs_summary(tmp_path, capsys):
  rows = [
    {"step": 10, "loss": 2.0, "lr": 1e-3, "mfu": 0.2, "tflops_per_device": 1.0},
    {"step": 20, "loss": 1.5, "eval/loss": 1.7, "eval/top1": 0.4, "time_frac_data": 0.1},
    {"step": 30, "loss": 1.2, "eval/loss": 1.8, "eval/top1": 0.5, "mfu": 0.4,
     "tflops_per_device": 2.0, "time_frac_data": 0.3},
  ]  # fmt: skip
  with open(tmp_path / "metrics.jsonl", "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in rows)
  s = summarize(str(tmp_path))
  assert s["steps"] == 30 and s["last"]["loss"] == 1.2
  assert s["best_eval"] == {"eval/loss": (1.7, 20), "eval/top1": (0.5, 30)}
  assert s["mfu"] == pytest.approx(0.3) and s["goodput"]["data"] == pytest.approx(0.2)
  cli.main(["runs", "summary", str(tmp_path)])
  out = capsys.readouterr().out
  assert "step 30" in out and "best eval/loss: 1.7 at step 20" in out and "MFU 30.0 %" in out
