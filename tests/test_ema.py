"""EMA weights (config.train.ema_decay): the recursion, sharded like the params,
checkpointed and restored, read back by init.ema; off or on, the params train the same."""

import jax
import numpy as np
import pytest
from flax import nnx
from test_trainer import _config, _Mlp, _task  # noqa: F401  (the fixture registers the task)

from auteur_jax.checkpoint.restore import restore_model
from auteur_jax.parallel.mesh import make_mesh
from auteur_jax.sample.common import load_model
from auteur_jax.train import tasks, trainer
from auteur_jax.train.checkpoint import Checkpoints
from auteur_jax.train.metrics import read_metrics


def _state(workdir, config, mesh):
  s = trainer.setup(config, tasks.get(config.task), mesh)
  ck = Checkpoints(workdir, config.train)
  st = ck.restore(ck.latest_step(), s.abstract, None)
  ck.close()
  return nnx.merge(s.graphdef, st)


def _arrays(tree) -> list[np.ndarray]:
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_one_step_of_the_recursion_and_shardings():
  config = _config(ema_decay=0.9)
  mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  s = trainer.setup(config, tasks.get(config.task), mesh)
  state = s.init()
  p0 = _arrays(nnx.state(nnx.merge(s.graphdef, state).model, nnx.Param))
  ds = tasks.get(config.task).dataset(config, 0, 1)
  batch = jax.device_put(next(iter(ds)), s.batch_sharding)
  state, _ = s.step(state, batch, jax.numpy.asarray(0, jax.numpy.int32))
  ts = nnx.merge(s.graphdef, state)
  p1 = _arrays(nnx.state(ts.model, nnx.Param))
  ema = _arrays(ts.ema)
  for e, a, b in zip(ema, p0, p1, strict=True):
    np.testing.assert_allclose(e, 0.9 * a + 0.1 * b, rtol=1e-6, atol=1e-7)
  # The EMA of a weight is laid out like the weight.
  for e, p in zip(jax.tree.leaves(ts.ema), jax.tree.leaves(nnx.state(ts.model, nnx.Param))):
    assert e.sharding == p.sharding


@pytest.mark.integration
def test_ema_is_checkpointed_restored_and_leaves_training_unchanged(tmp_path):
  mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  on, off, resumed = (str(tmp_path / n) for n in ("on", "off", "resumed"))
  trainer.train(_config(ema_decay=0.8), on, progress=False, mesh=mesh)
  trainer.train(_config(), off, progress=False, mesh=mesh)
  # EMA on or off: the same losses and params (the average never feeds back).
  assert [r["loss"] for r in read_metrics(on)] == [r["loss"] for r in read_metrics(off)]
  a, b = _state(on, _config(ema_decay=0.8), mesh), _state(off, _config(), mesh)
  for x, y in zip(_arrays(nnx.state(a.model, nnx.Param)), _arrays(nnx.state(b.model, nnx.Param))):
    np.testing.assert_array_equal(x, y)
  # A resumed run restores the average and goes on with it: bitwise the straight run's.
  trainer.train(_config(ema_decay=0.8), resumed, progress=False, mesh=mesh, max_steps=3)
  trainer.train(_config(ema_decay=0.8), resumed, progress=False, mesh=mesh)
  c = _state(resumed, _config(ema_decay=0.8), mesh)
  for x, y in zip(_arrays(a.ema), _arrays(c.ema), strict=True):
    np.testing.assert_array_equal(x, y)
  # The average differs from the params, and init.ema reads it back as a model.
  assert any(not np.allclose(x, y) for x, y in zip(_arrays(a.ema), _arrays(a.model)))
  restored = restore_model(on, lambda: _Mlp(16, nnx.Rngs(0)), ("ema",), "test")
  for x, y in zip(_arrays(nnx.state(restored, nnx.Param)), _arrays(a.ema), strict=True):
    np.testing.assert_array_equal(x, y)
  config = _config(ema_decay=0.8)
  config.init = {"checkpoint": on, "ema": True}
  loaded = load_model(config, "config")
  for x, y in zip(_arrays(nnx.state(loaded, nnx.Param)), _arrays(a.ema), strict=True):
    np.testing.assert_array_equal(x, y)


def test_bad_decay_is_refused():
  from auteur_jax.config import ConfigError
  from auteur_jax.train.optim import train_config

  with pytest.raises((ConfigError, ValueError), match="ema_decay"):
    train_config(_config(ema_decay=1.0).train)


@pytest.mark.integration
def test_export_and_eval_read_the_ema_weights(tmp_path):
  """`auteur convert export --ema` writes a run's EMA weights, not its params; eval.ema
  evaluates them (a different eval loss from the params' at the same state)."""
  import os

  from safetensors.numpy import load_file
  from test_train_tasks import CONFIGS, VAE_TINY, _clips

  from auteur_jax.config import load_config
  from auteur_jax.convert import exporter

  d, _ = _clips(tmp_path / "v", num_frames=3, size=16)
  base = [f"--config.data.dir={d}", *VAE_TINY, "--config.train.steps=3"]
  base += ["--config.train.ema_decay=0.5", "--config.eval.every=3", "--config.eval.split=train"]
  runs = {}
  for ema in (False, True):
    config = load_config(os.path.join(CONFIGS, "vae.py"), [*base, f"--config.eval.ema={ema}"])
    runs[ema] = str(tmp_path / f"run_{ema}")
    trainer.train(config, runs[ema], progress=False, mesh=make_mesh({"data": 1}, jax.devices()[:1]))
  rows = {e: [r for r in read_metrics(w) if "eval/loss" in r][-1] for e, w in runs.items()}
  losses = {e: [r["loss"] for r in read_metrics(w) if "loss" in r] for e, w in runs.items()}
  assert losses[True] == losses[False]  # Which weights are evaluated changes no training.
  assert rows[True]["eval/loss"] != rows[False]["eval/loss"]
  family = "wan_vae"
  exporter.export_weights(family, runs[True], str(tmp_path / "params"), progress=False)
  exporter.export_weights(family, runs[True], str(tmp_path / "ema"), progress=False, ema=True)
  load = lambda p: {  # noqa: E731
    k: v
    for f in sorted(os.listdir(p))
    if f.endswith(".safetensors")
    for k, v in load_file(os.path.join(p, f)).items()
  }
  a, b = load(str(tmp_path / "params")), load(str(tmp_path / "ema"))
  assert a.keys() == b.keys() and any(not np.array_equal(a[k], b[k]) for k in a)
  from auteur_jax.checkpoint.errors import WeightError

  plain = load_config(os.path.join(CONFIGS, "vae.py"), [*base[:-3], "--config.train.steps=1"])
  trainer.train(
    plain, str(tmp_path / "plain"), progress=False, mesh=make_mesh({"data": 1}, jax.devices()[:1])
  )
  with pytest.raises(WeightError, match="no EMA weights"):
    exporter.export_weights(
      family, str(tmp_path / "plain"), str(tmp_path / "x"), progress=False, ema=True
    )
  assert not os.path.exists(tmp_path / "x")
