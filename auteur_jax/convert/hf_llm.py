"""Hugging Face Llama / Qwen2 checkpoints (config.json + safetensors) -> `models.llm.LLM`.

A checkpoint folder holds `config.json` and either `model.safetensors` or shards listed
in `model.safetensors.index.json`. Tensors are read with safetensors (numpy, memory
mapped), renamed and transposed by the explicit table in `_layer_tensors`, stacked over
layers and checked against the shapes the config implies; a tensor with another shape,
a missing tensor or a tensor nobody uses fails with its name. Pickled `.bin` / `.pt`
weights are refused. Export back to HF is the conversion issue's (`convert/` later).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
from flax import nnx
from safetensors import safe_open

from auteur_jax.models.layers import RopeScaling
from auteur_jax.models.llm import LLM, LLMConfig
from auteur_jax.parallel.rules import DEFAULT_RULES, Rules, state_shardings

FAMILIES = ("llama", "qwen2")
# Buffers some checkpoints carry that hold no weights (recomputed from the config).
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


class ConversionError(ValueError):
  """A checkpoint does not fit the model: the message names the tensor / key / file."""


def read_hf_config(path: str) -> dict[str, Any]:
  """The checkpoint folder's config.json as a dict."""
  file = os.path.join(path, "config.json")
  if not os.path.isfile(file):
    raise ConversionError(f"{path}: no config.json (expected an HF checkpoint folder)")
  with open(file) as f:
    return json.load(f)


def _rope(hf: Mapping[str, Any]) -> tuple[float, RopeScaling | None]:
  # transformers >= 5 writes `rope_parameters`; older files `rope_theta` + `rope_scaling`.
  params = dict(hf.get("rope_parameters") or {})
  theta = params.get("rope_theta", hf.get("rope_theta", 10000.0))
  scaling = dict(hf.get("rope_scaling") or {})
  scaling.update({k: v for k, v in params.items() if k != "rope_theta"})
  kind = scaling.get("rope_type", scaling.get("type", "default"))
  if kind == "default":
    return float(theta), None
  if kind != "llama3":
    raise ConversionError(f"config.json: rope type {kind!r} is not supported "
                          "(expected 'default' or 'llama3')")
  try:
    return float(theta), RopeScaling(float(scaling["factor"]), float(scaling["low_freq_factor"]),
                                      float(scaling["high_freq_factor"]),
                                      int(scaling["original_max_position_embeddings"]))
  except KeyError as e:
    raise ConversionError(f"config.json: llama3 rope scaling lacks {e.args[0]!r}") from None


def llm_config_from_hf(hf: Mapping[str, Any], **overrides: Any) -> LLMConfig:
  """LLMConfig for an HF Llama / Qwen2 config dict; `overrides` set compute options
  (dtype, param_dtype, remat, scan_unroll) or replace any field."""
  family = hf.get("model_type")
  if family not in FAMILIES:
    raise ConversionError(f"config.json: model_type {family!r} is not supported; "
                          f"expected one of {FAMILIES}")
  if hf.get("hidden_act", "silu") != "silu":
    raise ConversionError(f"config.json: hidden_act {hf['hidden_act']!r}, expected 'silu'")
  if hf.get("mlp_bias"):
    raise ConversionError("config.json: mlp_bias=true is not supported")
  if family == "llama" and hf.get("attention_bias"):
    raise ConversionError("config.json: attention_bias=true (bias on o_proj too) is not "
                          "supported")
  if family == "qwen2" and hf.get("use_sliding_window"):
    raise ConversionError("config.json: use_sliding_window=true is not supported")
  theta, scaling = _rope(hf)
  heads = hf["num_attention_heads"]
  fields = dict(
      vocab_size=hf["vocab_size"], width=hf["hidden_size"], num_layers=hf["num_hidden_layers"],
      num_heads=heads, num_kv_heads=hf.get("num_key_value_heads") or heads,
      head_dim=hf.get("head_dim") or hf["hidden_size"] // heads,
      mlp_dim=hf["intermediate_size"], rope_theta=theta, rope_scaling=scaling,
      qkv_bias=family == "qwen2", tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
      norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
      init_std=float(hf.get("initializer_range", 0.02)))
  fields.update(overrides)
  return LLMConfig(**fields)


class SafetensorsReader:
  """Lazy tensor access over one safetensors file or an index of shards."""

  def __init__(self, path: str):
    self.path = path
    bad = [f for f in os.listdir(path) if f.endswith((".bin", ".pt", ".pth", ".ckpt"))]
    single = os.path.join(path, "model.safetensors")
    index = os.path.join(path, "model.safetensors.index.json")
    if os.path.isfile(index):
      with open(index) as f:
        weight_map = json.load(f).get("weight_map")
      if not isinstance(weight_map, dict):
        raise ConversionError(f"{index}: no 'weight_map' object")
      self._file_of = {name: os.path.join(path, file) for name, file in weight_map.items()}
      for file in sorted(set(self._file_of.values())):
        if not os.path.isfile(file):
          raise ConversionError(f"{index}: shard {os.path.basename(file)} is listed but "
                                "missing")
    elif os.path.isfile(single):
      with safe_open(single, framework="numpy") as f:
        self._file_of = {name: single for name in f.keys()}
    elif bad:
      raise ConversionError(f"{path}: only pickled weights {bad}; convert them to "
                            "safetensors first (pickles are never loaded)")
    else:
      raise ConversionError(f"{path}: neither model.safetensors nor "
                            "model.safetensors.index.json found")
    self._open: dict[str, Any] = {}

  def keys(self) -> list[str]:
    return sorted(self._file_of)

  def __contains__(self, name: str) -> bool:
    return name in self._file_of

  def get(self, name: str) -> np.ndarray:
    if name not in self._file_of:
      raise ConversionError(f"{self.path}: tensor {name!r} is missing from the checkpoint")
    file = self._file_of[name]
    if file not in self._open:
      self._open[file] = safe_open(file, framework="numpy")
    try:
      return self._open[file].get_tensor(name)
    except Exception as e:  # A truncated or mislabelled shard: say which tensor.
      raise ConversionError(f"{file}: cannot read tensor {name!r}: {e}") from e


Convert = Callable[[np.ndarray], np.ndarray]


def _layer_tensors(cfg: LLMConfig) -> dict[tuple[str, ...], tuple[str, tuple[int, ...], Convert]]:
  """Our per-layer param path -> (HF name under model.layers.{i}., HF shape, HF -> ours)."""
  w, h, kv, d, m = cfg.width, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.mlp_dim
  table = {
      ("attn_norm", "scale"): ("input_layernorm.weight", (w,), lambda x: x),
      ("mlp_norm", "scale"): ("post_attention_layernorm.weight", (w,), lambda x: x),
      # nn.Linear stores [out, in]; ours are [in, ...out] for x @ W.
      ("attn", "q"): ("self_attn.q_proj.weight", (h * d, w), lambda x: x.T.reshape(w, h, d)),
      ("attn", "k"): ("self_attn.k_proj.weight", (kv * d, w), lambda x: x.T.reshape(w, kv, d)),
      ("attn", "v"): ("self_attn.v_proj.weight", (kv * d, w), lambda x: x.T.reshape(w, kv, d)),
      ("attn", "o"): ("self_attn.o_proj.weight", (w, h * d), lambda x: x.T.reshape(h, d, w)),
      ("mlp", "gate"): ("mlp.gate_proj.weight", (m, w), lambda x: x.T),
      ("mlp", "up"): ("mlp.up_proj.weight", (m, w), lambda x: x.T),
      ("mlp", "down"): ("mlp.down_proj.weight", (w, m), lambda x: x.T),
  }
  if cfg.qkv_bias:
    table[("attn", "q_bias")] = ("self_attn.q_proj.bias", (h * d,), lambda x: x.reshape(h, d))
    table[("attn", "k_bias")] = ("self_attn.k_proj.bias", (kv * d,), lambda x: x.reshape(kv, d))
    table[("attn", "v_bias")] = ("self_attn.v_proj.bias", (kv * d,), lambda x: x.reshape(kv, d))
  return table


def _checked(reader: SafetensorsReader, name: str, shape: tuple[int, ...]) -> np.ndarray:
  x = reader.get(name)
  if tuple(x.shape) != tuple(shape):
    raise ConversionError(f"tensor {name!r} has shape {tuple(x.shape)}, the config expects "
                          f"{tuple(shape)}")
  return x


def _resize_vocab(x: np.ndarray, rows: int) -> np.ndarray:
  """Extends a [vocab, width] table to `rows` rows initialised to the mean row."""
  if rows == x.shape[0]:
    return x
  extra = np.broadcast_to(x.mean(axis=0, keepdims=True), (rows - x.shape[0], x.shape[1]))
  return np.concatenate([x, extra.astype(x.dtype)], axis=0)


def convert_params(reader: SafetensorsReader, cfg: LLMConfig) -> dict[tuple[str, ...], np.ndarray]:
  """All LLM params as {our path: numpy array in param_dtype}, layers stacked.

  Every tensor's shape is checked against `cfg`, except that the checkpoint's vocabulary
  may be smaller than cfg.vocab_size (e.g. the director's markup tokens added, or rows
  padded for sharding): the embedding and LM head then get extra rows equal to the mean
  of the existing rows.
  """
  dtype = np.dtype(jax.numpy.dtype(cfg.param_dtype))
  used = set()

  def get(name, shape):
    used.add(name)
    return _checked(reader, name, shape)

  out = {}
  used.add("model.embed_tokens.weight")
  embed = reader.get("model.embed_tokens.weight")
  rows = embed.shape[0] if embed.ndim == 2 else -1
  if embed.ndim != 2 or embed.shape[1] != cfg.width or rows > cfg.vocab_size:
    raise ConversionError(f"tensor 'model.embed_tokens.weight' has shape {embed.shape}, the "
                          f"config expects (<= {cfg.vocab_size}, {cfg.width})")
  out[("embed",)] = _resize_vocab(embed, cfg.vocab_size)
  for path, (name, shape, fn) in _layer_tensors(cfg).items():
    out[("layers", *path)] = np.stack(
        [fn(get(f"model.layers.{i}.{name}", shape)) for i in range(cfg.num_layers)])
  out[("norm", "scale")] = get("model.norm.weight", (cfg.width,))
  if not cfg.tie_embeddings:
    if "lm_head.weight" not in reader:
      raise ConversionError(f"{reader.path}: tensor 'lm_head.weight' is missing and "
                            "tie_word_embeddings is false")
    head = get("lm_head.weight", (rows, cfg.width))
    out[("lm_head",)] = _resize_vocab(head, cfg.vocab_size).T
  elif "lm_head.weight" in reader:
    used.add("lm_head.weight")  # Tied checkpoints sometimes store the copy as well.
  unused = [k for k in reader.keys() if k not in used and not k.endswith(_IGNORED_SUFFIXES)]
  if unused:
    raise ConversionError(f"{reader.path}: tensors not used by the {cfg.num_layers}-layer "
                          f"model: {unused[:8]}{' ...' if len(unused) > 8 else ''}")
  return {k: np.ascontiguousarray(v.astype(dtype)) for k, v in out.items()}


# Fields that change the function but no tensor shape: config.json must agree with cfg.
_SEMANTIC_FIELDS = ("rope_theta", "rope_scaling", "qkv_bias", "tie_embeddings", "norm_eps")


def _check_divisible(key: tuple[str, ...], shape: tuple[int, ...],
                     sharding: jax.sharding.NamedSharding) -> None:
  for dim, (size, axes) in enumerate(zip(shape, sharding.spec)):
    axes = (axes,) if isinstance(axes, str) else tuple(axes or ())
    ways = int(np.prod([sharding.mesh.shape[a] for a in axes]))
    if size % ways:
      vocab = key in (("embed",), ("lm_head",))
      hint = " (pad the vocabulary with vocab_size=...)" if vocab else ""
      raise ConversionError(f"parameter {'.'.join(key)} {shape}: dimension {dim} ({size}) does "
                            f"not divide over mesh axes {axes} ({ways} ways){hint}")


def load_hf_llm(path: str, cfg: LLMConfig | None = None, *, vocab_size: int | None = None,
                mesh: jax.sharding.Mesh | None = None, rules: Rules = DEFAULT_RULES,
                **overrides: Any) -> LLM:
  """An LLM holding the weights of the HF checkpoint folder `path`.

  Args:
    cfg: the model to load into (e.g. `DirectorConfig.llm`): every tensor must have its
      shapes (the vocabulary may grow, see `convert_params`) and config.json must agree
      on RoPE, qkv bias, tied embeddings and norm epsilon. By default the config is read
      from config.json, with `overrides` (e.g. dtype="bfloat16", remat="full").
    vocab_size: grow the vocabulary to this size (with cfg None).
    mesh: place each param with its logical sharding on this mesh (else one device).
  """
  hf_cfg = llm_config_from_hf(read_hf_config(path), **overrides)
  if cfg is None:
    cfg = hf_cfg if vocab_size is None else dataclasses.replace(hf_cfg, vocab_size=vocab_size)
  elif vocab_size is not None or overrides:
    raise ValueError("load_hf_llm: vocab_size / overrides apply only without cfg "
                     "(cfg.vocab_size and cfg's options decide)")
  else:
    for name in _SEMANTIC_FIELDS:
      if getattr(cfg, name) != getattr(hf_cfg, name):
        raise ConversionError(f"{path}/config.json: {name} is {getattr(hf_cfg, name)!r}, "
                              f"the model config has {getattr(cfg, name)!r}")
  params = convert_params(SafetensorsReader(path), cfg)
  with nnx.use_eager_sharding(False):
    abstract = nnx.eval_shape(lambda: LLM(cfg, rngs=nnx.Rngs(0)))
  graphdef, state = nnx.split(abstract)
  shardings = dict(nnx.to_flat_state(state_shardings(state, mesh, rules))) if mesh else {}
  flat = []
  for path, var in nnx.to_flat_state(state):
    key = tuple(str(p) for p in path)
    if key not in params:
      raise ConversionError(f"no converted tensor for parameter {'.'.join(key)}")
    value = params.pop(key)
    if value.shape != var.shape:
      raise ConversionError(f"parameter {'.'.join(key)}: converted shape {value.shape}, "
                            f"model expects {var.shape}")
    if mesh:
      sharding = shardings[path].get_value()
      _check_divisible(key, value.shape, sharding)
      array = jax.device_put(value, sharding)
    else:
      array = jax.numpy.asarray(value)
    flat.append((path, var.replace(array)))
  if params:
    raise ConversionError(f"converted tensors without a parameter: {sorted(params)}")
  return nnx.merge(graphdef, nnx.from_flat_state(flat))
