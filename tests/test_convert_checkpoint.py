"""Converted checkpoints: orbax restores them, the trainer starts from them, reshard moves
them between meshes bit-identically (and smaller without optimizer state), inspect."""

import os
import re

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from flax import nnx
from test_convert_roundtrip import save_reference

from auteur_jax.checkpoint import layout, orbax_io
from auteur_jax.config import ConfigError
from auteur_jax.convert.hf_llm import load_hf_llm
from auteur_jax.convert.importer import import_weights
from auteur_jax.convert.reshard import inspect, reshard
from auteur_jax.models import llm as L
from auteur_jax.models import registry
from auteur_jax.parallel import distributed
from auteur_jax.train import optim, tasks, trainer
from auteur_jax.train.checkpoint import Checkpoints

LLM_FIELDS = dict(
  vocab_size=96,
  width=32,
  num_layers=2,
  num_heads=4,
  num_kv_heads=2,
  head_dim=8,
  mlp_dim=48,
  norm_eps=1e-6,
)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
  """A tiny HF Llama folder and its import onto an 8-way fsdp mesh."""
  root = tmp_path_factory.mktemp("llama")
  save_reference("llama", root / "hf")
  import_weights(
    "llama", str(root / "hf"), str(root / "ckpt"), mesh_shape={"fsdp": 8}, progress=False
  )
  return root


def _leaves(path):
  step = layout.find_step_dir(path)
  meta = orbax_io.tree_metadata(f"{step}/state")
  return orbax_io.restore(
    f"{step}/state",
    {
      k: jax.ShapeDtypeStruct(
        m.shape, m.dtype, sharding=jax.sharding.SingleDeviceSharding(jax.devices()[0])
      )
      for k, m in meta.items()
    },
  )


def _dir_bytes(path):
  return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs)


def test_import_holds_the_reference_weights_sharded(converted):
  ref = load_hf_llm(str(converted / "hf"))
  got = _leaves(str(converted / "ckpt"))
  for key, v in nnx.to_flat_state(nnx.state(ref, nnx.Param)):
    np.testing.assert_array_equal(np.asarray(got[("model", *map(str, key), "value")]), v[...])
  q = orbax_io.tree_metadata(f"{converted}/ckpt/0/state")[("model", "layers", "attn", "q", "value")]
  assert tuple(q.sharding.partition_spec) == (None, "fsdp", None, None)
  text = inspect(str(converted / "ckpt"))
  assert "converted: family llama" in text
  assert re.search(
    r"model/layers/attn/q/value +\(2, 32, 4, 8\) +float32 +"
    r"\(None, 'fsdp', None, None\) on \{'fsdp': 8\} +8,192 B",
    text,
  )
  total = sum(int(np.prod(x.shape)) * 4 for x in got.values())
  assert f"{len(got)} arrays, {total:,} bytes" in text


def test_reshard_round_trip_is_bit_identical(converted):
  a, b, c = (str(converted / n) for n in ("ckpt", "2x4", "4x2"))
  reshard(a, b, {"data": 2, "fsdp": 4})
  reshard(b, c, {"fsdp": 4, "tensor": 2})
  q = orbax_io.tree_metadata(f"{c}/0/state")[("model", "layers", "attn", "q", "value")]
  # The family's logical rules on the new mesh: heads now split over `tensor`.
  assert tuple(q.sharding.partition_spec) == (None, "fsdp", "tensor", None)
  reshard(c, str(converted / "back"), {"fsdp": 8})
  first, back = _leaves(a), _leaves(str(converted / "back"))
  assert set(first) == set(back)
  for k in first:
    np.testing.assert_array_equal(np.asarray(back[k]), np.asarray(first[k]))
  half = reshard(a, str(converted / "bf16"), {"fsdp": 8}, dtype="bfloat16")
  assert half["bytes"] * 2 == sum(int(np.prod(x.shape)) * 4 for x in first.values())
  assert all(x.dtype == jnp.bfloat16 for x in _leaves(str(converted / "bf16")).values())


class _LMTask:
  """Next-token loss of models/llm.LLM on random ids (config.model: LLMConfig fields)."""

  def loss(self, config, model, batch, rng):
    ids = batch["ids"]
    valid = jnp.ones(ids.shape, bool)
    h, _ = model(model.embed_tokens(ids), L.positions_from_valid(valid), L.causal_mask(valid))
    logits = model.logits(h)[:, :-1]
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, ids[:, 1:]).mean()
    return loss, {}

  def dataset(self, config, process_index, process_count):
    def example(i):
      return {"ids": np.random.default_rng(i).integers(0, 96, 8).astype(np.int32)}

    return (
      grain.MapDataset.range(10**6).map(example).batch(8, drop_remainder=True).to_iter_dataset()
    )


def _run_config(ckpt, **model):
  c = ml_collections.ConfigDict()
  c.task = "convert_lm"
  c.model = ml_collections.ConfigDict(dict(LLM_FIELDS, **model))
  c.data = ml_collections.ConfigDict(dict(batch_size=8))
  c.train = optim.train_defaults()
  c.train.update(
    dict(steps=1, lr=0.0, warmup_steps=0, log_every=1, checkpoint_every=10, async_checkpoints=False)
  )
  c.mesh = ml_collections.ConfigDict(
    dict(shape={"data": 2, "fsdp": 4}, batch_axes=("data", "fsdp"), rules=())
  )
  c.distributed = distributed.distributed_defaults()
  c.init = ml_collections.ConfigDict(dict(checkpoint=ckpt))
  return c


@pytest.mark.integration
def test_trainer_starts_from_converted_weights(converted, tmp_path):
  registry.register(
    "convert_lm", lambda c, rngs: L.LLM(L.LLMConfig(**c.model.to_dict()), rngs=rngs)
  )
  tasks.register("convert_lm", _LMTask())
  config = _run_config(str(converted / "ckpt"))
  trainer.train(config, str(tmp_path / "run"), progress=False)
  s = trainer.setup(config, tasks.get("convert_lm"))
  ck = Checkpoints(str(tmp_path / "run"), config.train)
  state = ck.restore(1, s.abstract, None)
  ck.close()
  want = _leaves(str(converted / "ckpt"))
  flat = {
    tuple(str(getattr(k, "key", getattr(k, "name", k))) for k in p): x
    for p, x in jax.tree_util.tree_flatten_with_path(state)[0]
  }
  for key, x in want.items():  # lr = 0: one step later the params are still the import.
    np.testing.assert_array_equal(np.asarray(flat[key]), np.asarray(x))
  counts = [
    x
    for p, x in jax.tree_util.tree_flatten_with_path(state["opt"])[0]
    if "count" in jax.tree_util.keystr(p)
  ]
  assert counts and all(int(c) == 1 for c in counts)  # A fresh optimizer, one step on.
  wrong = _run_config(str(converted / "ckpt"), mlp_dim=64)
  with pytest.raises(
    ConfigError,
    match=r"layers/mlp/up/value: checkpoint \(2, 32, 48\), "
    r"model \(2, 32, 64\)",
  ):
    trainer.train(wrong, str(tmp_path / "wrong"), progress=False)


@pytest.mark.integration
def test_reshard_without_optimizer_state_is_smaller(converted, tmp_path):
  registry.register(
    "convert_lm", lambda c, rngs: L.LLM(L.LLMConfig(**c.model.to_dict()), rngs=rngs)
  )
  tasks.register("convert_lm", _LMTask())
  config = _run_config(str(converted / "ckpt"))
  run = str(tmp_path / "run")
  trainer.train(config, run, progress=False)
  full, lean = str(tmp_path / "full"), str(tmp_path / "lean")
  r_full = reshard(run, full, {"fsdp": 4, "tensor": 2})
  r_lean = reshard(run, lean, {"fsdp": 4, "tensor": 2}, drop_optimizer=True)
  assert r_lean["leaves"] < r_full["leaves"] and r_lean["bytes"] < r_full["bytes"] / 2
  assert _dir_bytes(lean) < _dir_bytes(full) / 2
  assert os.path.isdir(f"{full}/1/data") and not os.path.exists(f"{lean}/1/data")
  params = _leaves(lean)
  assert all(k[0] == "model" for k in params)
  for key, x in _leaves(str(converted / "ckpt")).items():
    np.testing.assert_array_equal(np.asarray(params[key]), np.asarray(x))
  # The full reshard is a run the trainer resumes on the new mesh.
  spec = orbax_io.tree_metadata(f"{full}/1/state")[("model", "embed", "value")]
  assert spec.sharding.axis_names == ["fsdp", "tensor"]
  assert ocp.CheckpointManager(os.path.join(full)).latest_step() == 1
  moved = _run_config("")
  moved.mesh.shape = {"fsdp": 4, "tensor": 2}
  s = trainer.setup(moved, tasks.get("convert_lm"))
  os.makedirs(tmp_path / "moved")
  os.symlink(full, tmp_path / "moved" / "checkpoints")  # A workdir holding the reshard.
  ck = Checkpoints(str(tmp_path / "moved"), moved.train)
  state = ck.restore(1, s.abstract, None)  # Params and optimizer state, on the new mesh.
  ck.close()
  before = Checkpoints(run, config.train)
  want = before.restore(1, trainer.setup(config, tasks.get("convert_lm")).abstract, None)
  before.close()
  for got, ref in zip(jax.tree.leaves(state), jax.tree.leaves(want)):
    np.testing.assert_array_equal(np.asarray(got), np.asarray(ref))
  assert all(
    dict(x.sharding.mesh.shape) == {"fsdp": 4, "tensor": 2} for x in jax.tree.leaves(state)
  )


def test_relative_paths_and_a_hostile_record(converted, tmp_path, monkeypatch):
  """A run named by a relative path converts; a record's config class is the family's,
  never a module the checkpoint names."""
  import shutil
  import sys

  from auteur_jax.checkpoint.errors import WeightError

  copy = tmp_path / "copy"
  shutil.copytree(converted / "ckpt", copy)
  monkeypatch.chdir(tmp_path)
  assert "converted: family llama" in inspect("copy")
  reshard("copy", "resharded", {"data": 2, "fsdp": 4})
  assert os.path.isdir(tmp_path / "resharded" / "0" / "state")

  step = layout.find_step_dir("copy")
  record = layout.read_config_item(step)
  record[layout.RECORD]["cfg_class"] = "this:s"  # Importing `this` prints the Zen of Python.
  shutil.rmtree(os.path.join(step, "config"))
  layout.write_config_item(step, record)
  sys.modules.pop("this", None)
  reshard("copy", "again", {"fsdp": 8})
  assert "this" not in sys.modules
  record[layout.RECORD]["family"] = "gpt2"
  shutil.rmtree(os.path.join(step, "config"))
  layout.write_config_item(step, record)
  with pytest.raises(WeightError, match="family: unknown family 'gpt2'; expected one of"):
    reshard("copy", "never", {"fsdp": 8})
  assert not os.path.exists("never")


def test_import_into_a_run_config_puts_params_where_its_task_keeps_them(converted, tmp_path):
  """--config: the director run's shapes and mesh; the LLM's params under model/llm."""
  from auteur_jax.config import load_config

  config = load_config(
    "toy/director",
    [
      "--config.model.llm.vocab_size=96",
      "--config.model.llm.width=32",
      "--config.model.llm.mlp_dim=48",
      "--config.model.llm.num_layers=2",
      "--config.model.llm.num_heads=4",
      "--config.model.llm.num_kv_heads=2",
      "--config.model.llm.head_dim=8",
      "--config.mesh.shape.data=1",
      "--config.mesh.shape.fsdp=8",
    ],
  )
  r = import_weights(
    "llama", str(converted / "hf"), str(tmp_path / "run_init"), config=config, progress=False
  )
  assert r["prefix"] == "model/llm" and r["mesh"] == {"data": 1, "fsdp": 8, "tensor": 1}
  meta = orbax_io.tree_metadata(f"{tmp_path}/run_init/0/state")
  assert ("model", "llm", "embed", "value") in meta
