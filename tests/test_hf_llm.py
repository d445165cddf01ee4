"""HF Llama / Qwen2 safetensors -> our LLM: logit parity with transformers, and bad inputs."""

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import nnx
from safetensors.numpy import load_file, save_file

from auteur_jax.convert import hf_llm
from auteur_jax.convert.safetensors_io import SafetensorsFolder
from auteur_jax.models import llm as L
from auteur_jax.parallel.mesh import make_mesh

SMALL = dict(
  vocab_size=97,
  hidden_size=32,
  intermediate_size=48,
  num_hidden_layers=2,
  num_attention_heads=4,
  num_key_value_heads=2,
)
LLAMA3_ROPE = {
  "rope_type": "llama3",
  "factor": 8.0,
  "low_freq_factor": 1.0,
  "high_freq_factor": 4.0,
  "original_max_position_embeddings": 16,
}


def _save(tmp_path, config_cls, name="m", seed=0, **kw):
  torch.manual_seed(seed)
  cfg = config_cls(**{**SMALL, **kw})
  model = transformers.AutoModelForCausalLM.from_config(cfg).eval()
  with torch.no_grad():  # Random biases / norm scales too, so that every tensor matters.
    for p in model.parameters():
      p.add_(torch.randn_like(p) * 0.05)
  path = str(tmp_path / name)
  model.save_pretrained(path, max_shard_size=kw.pop("_shard", "5GB"))
  return model, path


@jax.jit
def _logits(model, ids):
  valid = jnp.ones(ids.shape, bool)
  h, _ = model(model.embed_tokens(ids), L.positions_from_valid(valid), L.causal_mask(valid))
  return model.logits(h)


def _check_parity(ref, ours, lengths=(1, 9, 40), atol=1e-4):
  gen = torch.Generator().manual_seed(1)
  for n in lengths:
    ids = torch.randint(0, SMALL["vocab_size"], (2, n), generator=gen)
    with torch.no_grad():
      want = ref(ids).logits.numpy()
    got = np.asarray(_logits(ours, jnp.asarray(ids.numpy(), jnp.int32)))
    np.testing.assert_allclose(got, want, rtol=0, atol=atol, err_msg=f"length {n}")


@pytest.mark.integration
@pytest.mark.parametrize(
  "family,kw",
  [
    ("llama", {}),
    ("qwen2", {}),
    ("llama", {"rope_parameters": {"rope_theta": 500000.0, **LLAMA3_ROPE}}),
    ("qwen2", {"tie_word_embeddings": True}),
  ],
)
def test_logits_match_transformers(tmp_path, family, kw):
  cls = transformers.LlamaConfig if family == "llama" else transformers.Qwen2Config
  ref, path = _save(tmp_path, cls, **kw)
  with nnx.use_eager_sharding(False):
    ours = hf_llm.load_hf_llm(path)
  assert ours.cfg.qkv_bias == (family == "qwen2")
  assert ours.cfg.tie_embeddings == kw.get("tie_word_embeddings", False)
  if "rope_parameters" in kw:
    assert ours.cfg.rope_scaling == L.RopeScaling(8.0, 1.0, 4.0, 16)
  _check_parity(ref, ours)


def test_sharded_checkpoint_equals_single_file(tmp_path):
  ref, single = _save(tmp_path, transformers.LlamaConfig, "single")
  sharded = str(tmp_path / "sharded")
  ref.save_pretrained(sharded, max_shard_size="20KB")
  assert os.path.isfile(os.path.join(sharded, "model.safetensors.index.json"))
  assert len([f for f in os.listdir(sharded) if f.endswith(".safetensors")]) > 1
  a, b = hf_llm.load_hf_llm(single), hf_llm.load_hf_llm(sharded)
  for x, y in zip(jax.tree.leaves(nnx.state(a)), jax.tree.leaves(nnx.state(b))):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_placed_on_a_mesh_with_logical_shardings(tmp_path):
  ref, path = _save(tmp_path, transformers.Qwen2Config)
  mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  with pytest.raises(hf_llm.ConversionError, match=r"embed \(97, 32\): dimension 0 \(97\)"):
    hf_llm.load_hf_llm(path, mesh=mesh)  # 97 rows do not split over tensor = 2.
  ours = hf_llm.load_hf_llm(path, mesh=mesh, vocab_size=100)
  q = ours.layers.attn.q[...]
  assert tuple(q.sharding.spec) == (None, "fsdp", "tensor", None)  # layers, embed, heads, head_dim
  with jax.set_mesh(mesh):
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, SMALL["vocab_size"], (2, 8), generator=gen)
    got = np.asarray(_logits(ours, jnp.asarray(ids.numpy(), jnp.int32)))
  with torch.no_grad():
    want = ref(ids).logits.numpy()
  np.testing.assert_allclose(got[..., :97], want, rtol=0, atol=1e-4)


def test_vocab_extension_keeps_old_rows(tmp_path):
  _, path = _save(tmp_path, transformers.LlamaConfig)
  plain = hf_llm.load_hf_llm(path)
  bigger = hf_llm.load_hf_llm(path, vocab_size=103)
  assert bigger.cfg.vocab_size == 103 and bigger.embed[...].shape == (103, 32)
  e = np.asarray(bigger.embed[...])
  np.testing.assert_array_equal(e[:97], np.asarray(plain.embed[...]))
  mean = e[:97].astype(np.float64).mean(0)  # Accumulated in float64, then cast.
  np.testing.assert_allclose(e[97:], np.broadcast_to(mean, (6, 32)), rtol=1e-6)
  assert bigger.lm_head[...].shape == (32, 103)
  # Into a model config (a director's LLM: more rows, its own compute options).
  cfg = dataclasses.replace(plain.cfg, vocab_size=104, remat="full")
  into = hf_llm.load_hf_llm(path, cfg)
  assert into.cfg == cfg and into.embed[...].shape == (104, 32)
  np.testing.assert_array_equal(
    np.asarray(into.lm_head[...])[:, :97], np.asarray(plain.lm_head[...])
  )
  with pytest.raises(ValueError, match="only without cfg"):
    hf_llm.load_hf_llm(path, cfg, vocab_size=110)
  with pytest.raises(hf_llm.ConversionError, match=r"\(97, 32\), the config expects \(90, 32\)"):
    hf_llm.load_hf_llm(path, dataclasses.replace(cfg, vocab_size=90))


def _rewrite(path, fn):
  file = os.path.join(path, "model.safetensors")
  tensors = fn(load_file(file))
  save_file(tensors, file, metadata={"format": "pt"})


def test_bad_checkpoints_name_the_tensor(tmp_path):
  _, path = _save(tmp_path, transformers.LlamaConfig)
  cfg = hf_llm.llm_config_from_hf(hf_llm.read_hf_config(path))
  with pytest.raises(
    hf_llm.ConversionError, match=r"model.embed_tokens.weight' has shape \(97, 32\).*\(97, 40\)"
  ):
    hf_llm.load_hf_llm(path, dataclasses.replace(cfg, width=40))
  with pytest.raises(
    hf_llm.ConversionError, match=r"self_attn.k_proj.weight' has shape \(16, 32\).*\(32, 32\)"
  ):
    hf_llm.load_hf_llm(path, dataclasses.replace(cfg, num_kv_heads=4))
  with pytest.raises(
    hf_llm.ConversionError, match="rope_theta is 10000.0, the model config has 500.0"
  ):
    hf_llm.load_hf_llm(path, dataclasses.replace(cfg, rope_theta=500.0))
  name = "model.layers.1.mlp.up_proj.weight"
  _rewrite(path, lambda t: {**t, name: t[name][:40]})
  with pytest.raises(hf_llm.ConversionError, match=rf"{name}' has shape \(40, 32\).*\(48, 32\)"):
    hf_llm.load_hf_llm(path)
  _rewrite(path, lambda t: {k: v for k, v in t.items() if k != name})
  with pytest.raises(hf_llm.ConversionError, match=rf"missing: \['{name}'\]"):
    hf_llm.load_hf_llm(path)
  _rewrite(
    path,
    lambda t: {
      **t,
      name: np.zeros((48, 32), np.float32),
      "model.layers.2.mlp.up_proj.weight": np.zeros((48, 32), np.float32),
    },
  )
  with pytest.raises(hf_llm.ConversionError, match="not used.*model.layers.2.mlp.up_proj"):
    hf_llm.load_hf_llm(path)


def test_bad_folders_and_configs(tmp_path):
  _, path = _save(tmp_path, transformers.LlamaConfig)
  with open(os.path.join(path, "model.safetensors.index.json"), "w") as f:
    json.dump({"weight_map": {"model.norm.weight": "model-00002-of-00002.safetensors"}}, f)
  with pytest.raises(
    hf_llm.ConversionError, match="model-00002-of-00002.safetensors'\\] are listed"
  ):
    hf_llm.load_hf_llm(path)
  pickled = tmp_path / "pickled"
  pickled.mkdir()
  (pickled / "pytorch_model.bin").write_bytes(b"\x80")
  with pytest.raises(hf_llm.ConversionError, match="only pickled weights"):
    SafetensorsFolder(str(pickled))
  with pytest.raises(hf_llm.ConversionError, match="no config.json"):
    hf_llm.read_hf_config(str(pickled))
  hf = hf_llm.read_hf_config(path)
  with pytest.raises(hf_llm.ConversionError, match="model_type 'gpt2'"):
    hf_llm.llm_config_from_hf({**hf, "model_type": "gpt2"})
  with pytest.raises(hf_llm.ConversionError, match="rope type 'yarn'"):
    hf_llm.llm_config_from_hf({**hf, "rope_parameters": {"rope_type": "yarn", "factor": 2.0}})
  with pytest.raises(hf_llm.ConversionError, match="attention_bias"):
    hf_llm.llm_config_from_hf({**hf, "attention_bias": True})
  old_style = {k: v for k, v in hf.items() if k != "rope_parameters"}
  old_style.update(
    rope_theta=5000.0,
    rope_scaling={"type": "llama3", **{k: v for k, v in LLAMA3_ROPE.items() if k != "rope_type"}},
  )
  cfg = hf_llm.llm_config_from_hf(old_style, remat="full")
  assert cfg.rope_theta == 5000.0 and cfg.rope_scaling.factor == 8.0 and cfg.remat == "full"


def test_llama3_rope_scaling_goes_back_to_config_json():
  """Export writes the scaling our config holds under transformers' names."""
  from auteur_jax.convert import hf_llm

  hf = {**SMALL, "model_type": "llama", "rope_theta": 500000.0, "rope_scaling": LLAMA3_ROPE}
  back = hf_llm.LLAMA.to_hf(hf_llm.llm_config_from_hf(hf))
  rope = back.get("rope_scaling") or back.get("rope_parameters")
  assert {k: rope[k] for k in LLAMA3_ROPE} == LLAMA3_ROPE
