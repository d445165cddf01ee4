"""Restoring onto a mesh: each device reads only its shards, a sharded sampler renders
what one device does, and the shipped toy checkpoints restore through the layer."""

import os

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from auteur_jax.checkpoint.restore import restore_model
from auteur_jax.config import load_config
from auteur_jax.data.tokenizer import train_bpe
from auteur_jax.demo.plans import SHIPPED
from auteur_jax.models import registry
from auteur_jax.parallel.mesh import make_mesh
from auteur_jax.parallel.rules import mesh_rules
from auteur_jax.sample import story

TEXTS = [
  "chop the tomato",
  "slice the bread",
  "make a salad",
  "boil water in a pot",
  "stir the soup",
  "add salt to the pot",
  "put the pan on the stove",
] * 4


@pytest.fixture(scope="module")
def sample_config(tmp_path_factory):
  """toy/sample with its three models saved (random weights) as training runs."""
  tmp = tmp_path_factory.mktemp("runs")
  train_bpe(TEXTS, 300, out_dir=str(tmp / "tok"))
  config = load_config(
    "toy/sample",
    [
      f"--config.tokenizer={tmp / 'tok'}",
      "--config.sample.num_frames=5",
      "--config.sample.size=32",
      "--config.dit.sample.num_steps=2",
      "--config.director.sample.max_action_tokens=6",
      "--config.director.sample.max_caption_tokens=8",
    ],
  )
  config.unlock()
  for name in ("director", "dit", "vae"):
    model = story.build_jitted(lambda c=config[name]: registry.build(c, nnx.Rngs(7)))
    ckpt = ocp.StandardCheckpointer()
    ckpt.save(tmp / name / "checkpoints" / "3" / "state", {"model": nnx.state(model, nnx.Param)})
    ckpt.wait_until_finished()
    config[name].init.checkpoint = str(tmp / name)
  return config


def _device_bytes(model: nnx.Module) -> dict:
  out: dict = {}
  for x in jax.tree.leaves(nnx.state(model, nnx.Param)):
    for shard in x.addressable_shards:
      out[shard.device] = out.get(shard.device, 0) + shard.data.nbytes
  return out


@pytest.mark.integration
def test_eight_devices_hold_an_eighth_and_render_what_one_does(sample_config, monkeypatch):
  monkeypatch.setenv("AUTEUR_CPU_KERNELS", "0")  # The CPU decode kernel serves one device.
  assert jax.device_count() == 8
  config = sample_config.copy_and_resolve_references()
  config.mesh.shape.update(data=1, fsdp=8, tensor=1)
  sharded = story.StorySampler.from_config(config)
  dit = nnx.merge(sharded._dit_graph, sharded._dit_params)
  per_device = _device_bytes(dit)
  total = sum(x.nbytes for x in jax.tree.leaves(nnx.state(dit, nnx.Param)))
  assert len(per_device) == 8
  assert max(per_device.values()) <= 1.1 * total / 8, (max(per_device.values()), total)

  config.mesh.shape.update(data=1, fsdp=1, tensor=1)
  one = story.StorySampler.from_config(config, devices=jax.local_devices()[:1])
  assert set(_device_bytes(nnx.merge(one._dit_graph, one._dit_params))) == {jax.local_devices()[0]}

  requests = [
    story.StoryRequest("free", "make a salad", num_steps=2),
    story.StoryRequest(
      "given",
      "make a salad",
      actions=("chop the tomato", "add salt to the pot"),
      captions=("chop the tomato", "add salt to the pot"),
    ),
  ]
  got, want = sharded.render(requests), one.render(requests)
  for a, b in zip(got, want):
    assert a.actions == b.actions and a.captions == b.captions
    np.testing.assert_allclose(a.embeddings, b.embeddings, atol=1e-4)
    # uint8 frames: a float difference far below 1e-4 may still round to the next level.
    diff = np.abs(a.clips.astype(int) - b.clips.astype(int))
    assert diff.max() <= 1 and np.mean(diff > 0) < 1e-3
  # The clips before rounding: the DiT's latents on 8 devices vs 1.
  for a, b in zip(sharded.clip_latents(sharded.jobs(got)), one.clip_latents(one.jobs(want))):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-4)


@pytest.mark.parametrize("task", ["vae", "clip", "director", "dit"])
def test_shipped_toy_checkpoints_restore_onto_a_mesh(task):
  """The checkpoints shipped before the checkpoint layer moved (written by `convert
  reshard`) restore through it, sharded over fsdp 4 x tensor 2."""
  config = load_config(f"toy/{task}")
  mesh = make_mesh({"data": 1, "fsdp": 4, "tensor": 2})
  model = restore_model(
    os.path.join(SHIPPED, task),
    lambda: registry.build(config, nnx.Rngs(0)),
    ("model",),
    f"shipped {task}",
    mesh,
    mesh_rules(config),
  )
  leaves = jax.tree.leaves(nnx.state(model, nnx.Param))
  assert leaves and all(isinstance(x, jax.Array) for x in leaves)
  assert all(np.isfinite(np.asarray(x, np.float32)).all() for x in leaves)
  assert any(not x.sharding.is_fully_replicated for x in leaves)
