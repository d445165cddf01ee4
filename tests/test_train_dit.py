"""The dit task under the trainer: 1 device vs an 8-device mesh (2 data x 2 fsdp x 2
tensor) give the same losses and parameters after 3 steps (float32)."""

import os

import numpy as np
import pytest
from test_train_tasks import CONFIGS, _compare

from auteur_jax.config import load_config
from auteur_jax.data import examples, tfrecord, video_io
from auteur_jax.data.schema import Clip
from auteur_jax.data.tokenizer import train_bpe


def _clips(tmp_path, latent_shape, k, d) -> tuple[str, str]:
  rng = np.random.default_rng(0)
  caps = [f"the onion number {i} is chopped on the board" for i in range(16)]
  tok_dir = str(tmp_path / "tok")
  train_bpe(caps * 4, vocab_size=300, out_dir=tok_dir)
  frame = video_io.encode_jpeg(np.zeros((8, 8, 3), np.uint8))
  with tfrecord.ShardedWriter(tmp_path / "tfr" / "train", "clips", 4) as w:
    for i, cap in enumerate(caps):
      arrays = {
        "latents": rng.normal(size=latent_shape).astype(np.float32),
        "visual_embedding": rng.normal(size=(k, d)).astype(np.float32),
      }
      w.write(
        examples.encode_clip(f"v{i}", Clip(f"c{i}", 0.0, 1.0, "chop", cap), [frame], 8.0, arrays)
      )
  return str(tmp_path / "tfr"), tok_dir


@pytest.mark.integration
def test_dit_task_mesh_equivalence(tmp_path):
  base = load_config(os.path.join(CONFIGS, "dit.py"))
  k, d = 4, base.model.visual_dim
  data_dir, tok_dir = _clips(tmp_path, (2, 4, 4, base.model.in_channels), k, d)
  config = load_config(
    os.path.join(CONFIGS, "dit.py"),
    [
      f"--config.data.dir={data_dir}",
      f"--config.data.tokenizer={tok_dir}",
      "--config.data.batch_size=4",
      "--config.data.num_workers=0",
      "--config.data.num_frames=1",
      "--config.data.max_text_len=8",
      "--config.text.vocab_size=320",
      "--config.model.num_layers=2",
      "--config.train.steps=3",
      "--config.train.log_every=1",
      "--config.train.warmup_steps=1",
      "--config.train.async_checkpoints=false",
      "--config.train.visual_reg.std_samples=16",
    ],
  )
  _compare(config, tmp_path)
