"""The trainer on a tiny regression task: resume, mesh equivalence, reshard, NaN stop."""

import os

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from auteur_jax.models import registry
from auteur_jax.parallel import distributed
from auteur_jax.parallel.mesh import make_mesh
from auteur_jax.train import optim, tasks, trainer
from auteur_jax.train.checkpoint import Checkpoints
from auteur_jax.train.metrics import read_metrics


class _Mlp(nnx.Module):
  def __init__(self, width: int, rngs: nnx.Rngs):
    init = nnx.initializers.normal(0.3)
    self.up = nnx.Linear(
      8,
      width,
      kernel_init=nnx.with_partitioning(init, ("embed", "mlp")),
      bias_init=nnx.with_partitioning(nnx.initializers.zeros, ("mlp",)),
      rngs=rngs,
    )
    self.down = nnx.Linear(
      width, 1, kernel_init=nnx.with_partitioning(init, ("mlp", None)), rngs=rngs
    )

  def __call__(self, x):
    return self.down(jnp.tanh(self.up(x)))[..., 0]


def _example(i: int) -> dict:
  rng = np.random.default_rng(i)
  x = rng.normal(size=8).astype(np.float32)
  return {"x": x, "y": np.float32(np.sin(x).sum())}


class RegressionTask:
  """y = sum(sin(x)); `nan_at` poisons the loss from that step on."""

  def __init__(self, nan_at: int | None = None):
    self.nan_at = nan_at

  def loss(self, config, model, batch, rng):
    err = model(batch["x"]) - batch["y"]
    mse = jnp.mean(err**2)
    noise = 1e-3 * jax.random.normal(rng, ())  # Uses the per-step rng: resume must match.
    loss = mse + noise
    if self.nan_at is not None:
      loss = jnp.where(batch["step"][0] >= self.nan_at, jnp.nan, loss)
    return loss, {"mse": mse, "num_tokens": jnp.float32(batch["x"].shape[0])}

  def dataset(self, config, process_index, process_count):
    b = config.data.batch_size // process_count

    def example(i):
      e = _example(i)
      e["step"] = np.int32(i // config.data.batch_size)
      return e

    return (
      grain.MapDataset.range(10**6)[process_index::process_count]
      .map(example)
      .batch(b, drop_remainder=True)
      .to_iter_dataset()
    )


def _config(steps=6, **train) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.task = "regression"
  c.model = ml_collections.ConfigDict(dict(width=16))
  c.data = ml_collections.ConfigDict(dict(batch_size=8))
  c.train = optim.train_defaults()
  c.train.update(
    dict(
      dict(
        steps=steps,
        lr=0.05,
        warmup_steps=2,
        log_every=1,
        checkpoint_every=3,
        async_checkpoints=False,
      ),
      **train,
    )
  )
  c.mesh = ml_collections.ConfigDict(
    dict(shape={"data": -1}, batch_axes=("data", "fsdp"), rules=())
  )
  c.distributed = distributed.distributed_defaults()
  return c


@pytest.fixture(autouse=True)
def _task():
  registry.register("regression", lambda config, rngs: _Mlp(config.model.width, rngs))
  tasks.register("regression", RegressionTask())
  yield


def _params(workdir, config, mesh):
  s = trainer.setup(config, tasks.get(config.task), mesh)
  ck = Checkpoints(workdir, config.train)
  st = ck.restore(ck.latest_step(), s.abstract, None)
  ck.close()
  return [np.asarray(x) for x in jax.tree.leaves(st)]


@pytest.mark.integration
def test_resume_equals_straight_run(tmp_path):
  mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  a, b = str(tmp_path / "a"), str(tmp_path / "b")
  trainer.train(_config(), a, progress=False, mesh=mesh)
  trainer.train(_config(), b, progress=False, mesh=mesh, max_steps=3)
  assert Checkpoints(b, _config().train).latest_step() == 3
  trainer.train(_config(), b, progress=False, mesh=mesh)
  la = [r["loss"] for r in read_metrics(a)]
  lb = [r["loss"] for r in read_metrics(b)]
  assert len(la) == 6 and la == lb  # Same batches, same rng, same updates: bitwise.
  assert la[-1] < la[0]
  for x, y in zip(_params(a, _config(), mesh), _params(b, _config(), mesh)):
    np.testing.assert_array_equal(x, y)
  row = read_metrics(a)[-1]
  assert {"grad_norm", "lr", "mse", "step_time", "examples_per_s", "tokens_per_s"} <= set(row)


def test_one_device_equals_8_device_mesh(tmp_path):
  one = make_mesh({"data": 1}, devices=jax.devices()[:1])
  eight = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  trainer.train(_config(steps=3), str(tmp_path / "1"), progress=False, mesh=one)
  trainer.train(_config(steps=3), str(tmp_path / "8"), progress=False, mesh=eight)
  l1 = [r["loss"] for r in read_metrics(str(tmp_path / "1"))]
  l8 = [r["loss"] for r in read_metrics(str(tmp_path / "8"))]
  np.testing.assert_allclose(l1, l8, rtol=1e-5)
  for x, y in zip(
    _params(str(tmp_path / "1"), _config(), one), _params(str(tmp_path / "8"), _config(), eight)
  ):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


def test_reshard_on_restore(tmp_path):
  fsdp = make_mesh({"fsdp": 8})
  trainer.train(_config(steps=3), str(tmp_path), progress=False, mesh=fsdp)
  other = make_mesh({"data": 2, "tensor": 4})
  s = trainer.setup(_config(), tasks.get("regression"), other)
  ck = Checkpoints(str(tmp_path), _config().train)
  st = ck.restore(3, s.abstract, None)
  kernel = st["model"]["up"]["kernel"]
  assert kernel.sharding.mesh.shape == other.shape
  assert tuple(kernel.sharding.spec) == (None, "tensor")  # embed->fsdp is absent here.
  for x, y in zip(jax.tree.leaves(st), _params(str(tmp_path), _config(), fsdp)):
    np.testing.assert_array_equal(np.asarray(x), y)


def test_nan_stops_and_keeps_last_good_checkpoint(tmp_path):
  tasks.register("regression", RegressionTask(nan_at=4))
  with pytest.raises(trainer.NonFiniteLoss, match=r"step 5: non-finite loss \(.*mse="):
    trainer.train(_config(steps=8), str(tmp_path), progress=False, mesh=make_mesh({"data": -1}))
  assert Checkpoints(str(tmp_path), _config().train).all_steps() == [3]


def test_a_state_that_yields_nan_is_not_kept_and_the_kept_one_trains_on(tmp_path):
  """lr 1e30 after a warm-up from 0: the state after step 1 equals the initial one, the
  state after step 2 overflows. Its checkpoint is deleted when step 3 computes its loss;
  checkpoint 1 is kept, holds finite params and a rerun with a sane lr trains on from it."""
  config = _config(steps=20, lr=1e30, warmup_steps=5, checkpoint_every=1)
  with pytest.raises(
    trainer.NonFiniteLoss,
    match=r"step 3: non-finite loss .* of the state after step 2; the last "
    r"good checkpoint is step 1 \(",
  ):
    trainer.train(config, str(tmp_path), progress=False, mesh=make_mesh({"data": -1}))
  assert Checkpoints(str(tmp_path), config.train).all_steps() == [1]
  assert all(np.isfinite(x).all() for x in _params(str(tmp_path), config, make_mesh({"data": -1})))
  sane = _config(steps=6, lr=0.05, warmup_steps=1, checkpoint_every=1)
  last = trainer.train(sane, str(tmp_path), progress=False, mesh=make_mesh({"data": -1}))
  assert last["step"] == 6 and np.isfinite(last["loss"])
  assert Checkpoints(str(tmp_path), sane.train).all_steps() == [4, 5, 6]  # keep_last 3


def test_the_final_save_is_checked_too(tmp_path):
  """The last state's loss is computed (one more step after the save) before it counts."""
  tasks.register("regression", RegressionTask(nan_at=6))  # Step 7 reads the 7th batch.
  with pytest.raises(trainer.NonFiniteLoss, match=r"step 7: .*last good checkpoint is step 3"):
    trainer.train(_config(steps=6), str(tmp_path), progress=False, mesh=make_mesh({"data": -1}))
  assert Checkpoints(str(tmp_path), _config().train).all_steps() == [3]


def test_a_resumed_run_does_not_repeat_metrics_rows(tmp_path):
  mesh = make_mesh({"data": -1})
  trainer.train(_config(steps=6), str(tmp_path), progress=False, mesh=mesh, max_steps=3)
  with open(tmp_path / "metrics.jsonl", "a") as f:  # Logged by a run killed after step 5.
    f.write('{"step": 4, "loss": 1.0}\n{"step": 5, "loss": 1.0}\n{"step": 6, "lo')
  trainer.train(_config(steps=6), str(tmp_path), progress=False, mesh=mesh)
  assert [r["step"] for r in read_metrics(str(tmp_path))] == [1, 2, 3, 4, 5, 6]


def test_fsdp_state_bytes_per_device():
  """Params + AdamW state under 8-way FSDP: within 5 % of replicated / 8 (compiled step)."""
  config = _config()
  config.model.width = 512
  config.mesh.rules = (("embed", None), ("mlp", "fsdp"))
  tasks.register("regression", RegressionTask())
  s = trainer.setup(config, tasks.get("regression"), make_mesh({"fsdp": 8}))
  batch = {
    "x": jax.ShapeDtypeStruct((8, 8), jnp.float32),
    "y": jax.ShapeDtypeStruct((8,), jnp.float32),
    "step": jax.ShapeDtypeStruct((8,), jnp.int32),
  }
  mem = trainer.step_memory(s, batch)
  ratio = mem["state"] / (mem["state_replicated"] / 8)
  assert 0.95 <= ratio <= 1.05, mem


def test_grad_accumulation_equals_one_big_batch():
  """grad_accum_steps=2 over two half batches == one step on the whole batch."""
  mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  examples = [_example(i) for i in range(8)]
  whole = {k: np.stack([e[k] for e in examples]) for k in ("x", "y")}
  whole["step"] = np.zeros(8, np.int32)
  halves = [{k: v[i * 4 : (i + 1) * 4] for k, v in whole.items()} for i in range(2)]

  def run(config, batches):
    s = trainer.setup(config, tasks.get("regression"), mesh)
    state = s.init()
    for i, b in enumerate(batches):
      state, _ = s.step(state, jax.device_put(b, s.batch_sharding), i)
    return [np.asarray(x) for x in jax.tree.leaves(state["model"])]

  big = run(_config(warmup_steps=0), [whole])
  accum = run(_config(warmup_steps=0, grad_accum_steps=2), halves)
  first = run(_config(warmup_steps=0, grad_accum_steps=2), halves[:1])  # Not applied yet.
  init = run(_config(), [])
  for a, b, f, i in zip(big, accum, first, init):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(f, i)
  assert any(not np.array_equal(a, i) for a, i in zip(big, init))


def _cli_train(tmp_path, config, *overrides) -> str:
  """`auteur train` on `config` (written as a config file); its exit message."""
  from auteur_jax import cli

  file = tmp_path / "regression.py"
  file.write_text(
    "import ml_collections\n"
    f"def get_config():\n  return ml_collections.ConfigDict({config.to_dict()!r})\n"
  )
  with pytest.raises(SystemExit) as stop:
    cli.main(["train", "--config", str(file), "--workdir", str(tmp_path / "run"), *overrides])
  return str(stop.value)


def test_user_errors_are_one_line_before_compiling(tmp_path):
  config = _config()
  config.mesh.shape = {"data": 8}
  message = _cli_train(tmp_path, config, "--config.mesh.shape.data=3")
  assert message == (
    "auteur: ConfigError: config.mesh.shape {'data': 3} needs 3 devices, this process has 8"
  )
  message = _cli_train(tmp_path, config, "--config.data.batch_size=12")
  assert message == (
    "auteur: ConfigError: config.data.batch_size=12 does not split over the "
    "mesh's batch axes {'data': 8} (8 ways); use a multiple of 8"
  )
  for key in ("checkpoint_every", "log_every"):
    message = _cli_train(tmp_path, config, f"--config.train.{key}=0")
    assert message.startswith("auteur: ConfigError: config.train") and key in message
    assert "\n" not in message
  assert not os.path.exists(tmp_path / "run" / "checkpoints")


def test_the_nan_stop_is_one_line_from_the_cli(tmp_path, capsys):
  config = _config(steps=20, lr=1e30, warmup_steps=5, checkpoint_every=1)
  config.mesh.shape = {"data": 8}
  message = _cli_train(tmp_path, config)
  assert message.startswith("auteur: NonFiniteLoss: step 3: non-finite loss (")
  assert "\n" not in message and "checkpoint is step 1" in message


def test_init_checkpoint_by_a_relative_path(tmp_path, monkeypatch):
  """--config.init.checkpoint=runs/src from the run's folder (orbax wants absolute paths:
  the checkpoint layer makes them so)."""
  mesh = make_mesh({"data": -1})
  trainer.train(_config(steps=3), str(tmp_path / "runs" / "src"), progress=False, mesh=mesh)
  monkeypatch.chdir(tmp_path)
  config = _config(steps=1, lr=0.0, warmup_steps=0)
  config.init = ml_collections.ConfigDict({"checkpoint": "runs/src"})
  trainer.train(config, "runs/dst", progress=False, mesh=mesh)
  s = trainer.setup(config, tasks.get(config.task), mesh)
  src, dst = (Checkpoints(str(tmp_path / "runs" / n), config.train) for n in ("src", "dst"))
  a, b = (c.restore(c.latest_step(), s.abstract, None)["model"] for c in (src, dst))
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):  # lr 0: kept.
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  src.close()
  dst.close()
