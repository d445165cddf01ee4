"""T5 / umT5 encoders: parity with HF, relative-position buckets, converter errors."""

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from transformers import T5Config, T5EncoderModel, UMT5Config, UMT5EncoderModel
from transformers.models.t5.modeling_t5 import T5Attention

from auteur_jax.checkpoint.errors import WeightError
from auteur_jax.convert.hf_text import load_hf_t5
from auteur_jax.models.text_encoder import relative_buckets

SHAPE = dict(
  vocab_size=50,
  d_model=16,
  d_kv=4,
  d_ff=32,
  num_heads=4,
  relative_attention_num_buckets=8,
  relative_attention_max_distance=20,
)


def _save(model, path):
  torch.manual_seed(1)
  with torch.no_grad():
    for p in model.parameters():
      p.add_(0.05 * torch.randn_like(p))
  model.eval().save_pretrained(path)
  return model


@pytest.mark.parametrize("kind", ["t5_gated", "umt5", "t5_relu"])
def test_encoder_parity(tmp_path, kind):
  torch.manual_seed(0)
  if kind == "umt5":  # Per-layer position biases.
    ref = UMT5EncoderModel(UMT5Config(**SHAPE, num_layers=3))
  else:  # T5 1.1 (gated-GELU) and T5 1.0 (ReLU): one shared bias table.
    proj = "gated-gelu" if kind == "t5_gated" else "relu"
    ref = T5EncoderModel(T5Config(**SHAPE, num_layers=3, feed_forward_proj=proj))
  _save(ref, tmp_path)
  encoder = load_hf_t5(str(tmp_path))
  assert encoder.cfg.per_layer_bias == (kind == "umt5")
  assert encoder.rel_bias.shape == ((3 if kind == "umt5" else 1), 8, 4)
  length = 40  # Beyond max_distance: the logarithmic buckets are used.
  ids = torch.randint(1, 50, (2, length), generator=torch.Generator().manual_seed(2))
  mask = torch.ones(2, length, dtype=torch.long)
  mask[1, 25:] = 0
  with torch.no_grad():
    theirs = ref(input_ids=ids, attention_mask=mask).last_hidden_state.numpy()
  ours = np.asarray(encoder(jnp.asarray(ids.numpy()), jnp.asarray(mask.numpy())))
  assert ours.shape == (2, length, 16)
  np.testing.assert_allclose(ours[0], theirs[0], atol=1e-4, rtol=1e-4)
  np.testing.assert_allclose(ours[1, :25], theirs[1, :25], atol=1e-4, rtol=1e-4)
  assert np.abs(theirs).mean() > 0.1


@pytest.mark.parametrize("buckets,distance", [(32, 128), (8, 20), (64, 300)])
def test_relative_buckets_match_hf(buckets, distance):
  q, k = 7, 400
  ours = relative_buckets(q, k, buckets, distance)
  rel = torch.arange(k)[None, :] - torch.arange(q)[:, None]
  theirs = T5Attention._relative_position_bucket(
    rel, bidirectional=True, num_buckets=buckets, max_distance=distance
  )
  np.testing.assert_array_equal(ours, theirs.numpy())
  assert ours.max() == buckets - 1 and ours.min() == 0


def test_t5_converter_errors(tmp_path):
  torch.manual_seed(0)
  good = tmp_path / "good"
  _save(UMT5EncoderModel(UMT5Config(**SHAPE, num_layers=2)), good)
  with open(good / "config.json") as f:
    config = json.load(f)
  bad = tmp_path / "bad"
  bad.mkdir()
  os.symlink(good / "model.safetensors", bad / "model.safetensors")
  # umT5 weights read as T5: the per-layer bias tables of blocks 1.. are left over.
  (bad / "config.json").write_text(json.dumps(dict(config, model_type="t5")))
  with pytest.raises(
    WeightError, match="not used.*block.1.layer.0.SelfAttention.relative_attention_bias"
  ):
    load_hf_t5(str(bad))
  (bad / "config.json").write_text(json.dumps(dict(config, d_ff=24)))
  with pytest.raises(WeightError, match="wi_0.weight.*expects"):
    load_hf_t5(str(bad))
  (bad / "config.json").write_text(json.dumps(dict(config, num_layers=3)))
  with pytest.raises(WeightError, match="missing: \\['encoder.block.2"):
    load_hf_t5(str(bad))
