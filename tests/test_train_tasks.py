"""The real tasks under the trainer: 1 device vs an 8-device mesh (2 data x 2 fsdp x 2
tensor) give the same losses and parameters after 3 steps (float32)."""

import os

import jax
import ml_collections
import numpy as np
import pytest

from auteur_jax.config import load_config
from auteur_jax.data import examples, tfrecord
from auteur_jax.data.schema import Clip, Story
from auteur_jax.data.tokenizer import train_bpe
from auteur_jax.parallel.mesh import make_mesh
from auteur_jax.train import tasks, trainer
from auteur_jax.train.checkpoint import Checkpoints
from auteur_jax.train.metrics import read_metrics

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "configs", "toy")
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
    stories.append(Story(f"v{i}", "toy_kitchen", "train", "soup", 10.0, 8.0, None,
                         tuple(clips)))
  tok_dir = str(tmp_path / "tok")
  train_bpe(texts * 3, vocab_size=300, out_dir=tok_dir)
  with tfrecord.ShardedWriter(tmp_path / "tfr" / "train", "stories", 4) as w:
    for s in stories:
      z = rng.normal(size=(len(s.clips), k, d)).astype(np.float32)
      w.write(examples.encode_story(s, z))
  return str(tmp_path / "tfr"), tok_dir


def _run(config, workdir, mesh):
  trainer.train(config, workdir, progress=False, mesh=mesh)
  losses = [r["loss"] for r in read_metrics(workdir)]
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


@pytest.mark.slow
def test_director_task_mesh_equivalence(tmp_path):
  base = load_config(os.path.join(CONFIGS, "director.py"))
  k, d = base.model.num_queries, base.model.visual_dim
  data_dir, tok_dir = _stories(tmp_path, k, d)
  config = load_config(os.path.join(CONFIGS, "director.py"), [
      f"--config.data.dir={data_dir}", f"--config.data.tokenizer={tok_dir}",
      "--config.data.batch_size=4", "--config.data.num_workers=0", "--config.data.max_steps=3",
      "--config.data.max_action_tokens=8", "--config.data.max_caption_tokens=16",
      "--config.model.llm.vocab_size=320", "--config.model.llm.num_layers=2",
      "--config.train.steps=3", "--config.train.log_every=1", "--config.train.warmup_steps=1",
      "--config.train.async_checkpoints=false"])
  _compare(config, tmp_path)
