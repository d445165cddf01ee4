"""Hugging Face Llama / Qwen2 checkpoints (config.json + safetensors) <-> `models.llm.LLM`.

A checkpoint folder holds `config.json` and either `model.safetensors` or shards listed
in `model.safetensors.index.json` (read memory-mapped by safetensors_io; pickled `.bin` /
`.pt` weights are refused). The name map (`_pieces`: HF tensor -> transpose / reshape ->
our stacked layer parameter) serves `load_hf_llm` and `auteur convert` alike; a tensor
with another shape, a missing tensor or a tensor nobody uses fails with its name.

  model.embed_tokens.weight [V, D]                 -> embed [V, D] (rows may grow)
  model.layers.i.self_attn.{q,k,v}_proj [H*K, D]   -> layers/attn/{q,k,v} [L, D, H, K]
  model.layers.i.self_attn.o_proj [D, H*K]         -> layers/attn/o [L, H, K, D]
  model.layers.i.mlp.{gate,up,down}_proj           -> layers/mlp/{gate,up,down}, transposed
  model.layers.i.{input,post_attention}_layernorm  -> layers/{attn,mlp}_norm/scale
  model.norm.weight / lm_head.weight [V, D]        -> norm/scale / lm_head [D, V]
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, cast

import jax
from flax import nnx

from auteur_jax.checkpoint.errors import WeightError
from auteur_jax.convert.mapping import (
  HEADS_IN,
  HEADS_OUT,
  HEADS_VEC,
  LINEAR,
  Family,
  Map,
  Piece,
  Shapes,
  load_model,
  model_type,
)
from auteur_jax.convert.safetensors_io import read_hf_config
from auteur_jax.models.layers import RopeScaling
from auteur_jax.models.llm import LLM, LLMConfig
from auteur_jax.parallel.rules import DEFAULT_RULES, Rules

FAMILIES = ("llama", "qwen2")
ConversionError = WeightError  # The name this module's callers catch.


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
    raise WeightError(
      f"config.json: rope type {kind!r} is not supported (expected 'default' or 'llama3')"
    )
  try:
    return float(theta), RopeScaling(
      float(scaling["factor"]),
      float(scaling["low_freq_factor"]),
      float(scaling["high_freq_factor"]),
      int(scaling["original_max_position_embeddings"]),
    )
  except KeyError as e:
    raise WeightError(f"config.json: llama3 rope scaling lacks {e.args[0]!r}") from None


def llm_config_from_hf(hf: Mapping[str, Any], **overrides: Any) -> LLMConfig:
  """LLMConfig for an HF Llama / Qwen2 config dict; `overrides` set compute options
  (dtype, param_dtype, remat, scan_unroll) or replace any field."""
  family = hf.get("model_type")
  if family not in FAMILIES:
    raise WeightError(
      f"config.json: model_type {family!r} is not supported; expected one of {FAMILIES}"
    )
  if hf.get("hidden_act", "silu") != "silu":
    raise WeightError(f"config.json: hidden_act {hf['hidden_act']!r}, expected 'silu'")
  if hf.get("mlp_bias"):
    raise WeightError("config.json: mlp_bias=true is not supported")
  if family == "llama" and hf.get("attention_bias"):
    raise WeightError("config.json: attention_bias=true (bias on o_proj too) is not supported")
  if family == "qwen2" and hf.get("use_sliding_window"):
    raise WeightError("config.json: use_sliding_window=true is not supported")
  theta, scaling = _rope(hf)
  heads = hf["num_attention_heads"]
  fields = dict(
    vocab_size=hf["vocab_size"],
    width=hf["hidden_size"],
    num_layers=hf["num_hidden_layers"],
    num_heads=heads,
    num_kv_heads=hf.get("num_key_value_heads") or heads,
    head_dim=hf.get("head_dim") or hf["hidden_size"] // heads,
    mlp_dim=hf["intermediate_size"],
    rope_theta=theta,
    rope_scaling=scaling,
    qkv_bias=family == "qwen2",
    tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
    norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
    init_std=float(hf.get("initializer_range", 0.02)),
  )
  fields.update(overrides)
  return LLMConfig(**fields)


def _pieces(cfg: LLMConfig, ours: Shapes, source: Shapes | None) -> list[Piece]:
  m = Map(ours)
  v, n = cfg.vocab_size, cfg.num_layers
  emb = "model.embed_tokens.weight"
  rows = source[emb][0] if source and emb in source and len(source[emb]) == 2 else v
  rows = min(rows, v)  # More rows than the config: the shape check names both.
  m.add("embed", emb, at=(slice(0, rows),))
  if not cfg.tie_embeddings:
    m.add("lm_head", "lm_head.weight", LINEAR, at=(slice(None), slice(0, rows)))
  if rows < v:  # Grown vocabulary (markup tokens, padding): new rows = the mean row.
    w = cfg.width
    m.pieces.append(Piece("embed", emb, (rows, w), (("mean", v - rows),), (slice(rows, v),)))
    if not cfg.tie_embeddings:
      m.pieces.append(
        Piece(
          "lm_head",
          "lm_head.weight",
          (rows, w),
          (("mean", v - rows), ("t", (1, 0))),
          (slice(None), slice(rows, v)),
        )
      )
  layer = "model.layers.{i}."
  m.stack("layers/attn_norm/scale", layer + "input_layernorm.weight", n)
  m.stack("layers/mlp_norm/scale", layer + "post_attention_layernorm.weight", n)
  for x in "qkv":
    m.stack(f"layers/attn/{x}", f"{layer}self_attn.{x}_proj.weight", n, HEADS_IN)
    if cfg.qkv_bias:
      m.stack(f"layers/attn/{x}_bias", f"{layer}self_attn.{x}_proj.bias", n, HEADS_VEC)
  m.stack("layers/attn/o", layer + "self_attn.o_proj.weight", n, HEADS_OUT)
  for x in ("gate", "up", "down"):
    m.stack(f"layers/mlp/{x}", f"{layer}mlp.{x}_proj.weight", n, LINEAR)
  m.add("norm/scale", "model.norm.weight")
  return m.pieces


def _to_hf(family: str) -> Callable[[LLMConfig], dict]:
  def to_hf(cfg: LLMConfig) -> dict:
    rope = {"rope_type": "default", "rope_theta": cfg.rope_theta}
    if cfg.rope_scaling is not None:
      s = cfg.rope_scaling
      rope.update(
        rope_type="llama3",
        factor=s.factor,
        low_freq_factor=s.low_freq_factor,
        high_freq_factor=s.high_freq_factor,
        original_max_position_embeddings=s.original_max_position,
      )
    out = dict(
      model_type=family,
      vocab_size=cfg.vocab_size,
      hidden_size=cfg.width,
      intermediate_size=cfg.mlp_dim,
      num_hidden_layers=cfg.num_layers,
      num_attention_heads=cfg.num_heads,
      num_key_value_heads=cfg.num_kv_heads,
      head_dim=cfg.head_dim,
      hidden_act="silu",
      rms_norm_eps=cfg.norm_eps,
      initializer_range=cfg.init_std,
      tie_word_embeddings=cfg.tie_embeddings,
      rope_parameters=rope,
      rope_theta=cfg.rope_theta,
      architectures=["LlamaForCausalLM" if family == "llama" else "Qwen2ForCausalLM"],
    )
    if family == "llama":
      out.update(attention_bias=False, mlp_bias=False)
    return out

  return to_hf


def _run_llm(config) -> LLMConfig:
  from auteur_jax.models.director import DirectorConfig

  return DirectorConfig.from_config(config.model.to_dict()).llm


def _family(name: str) -> Family:
  # Tied checkpoints sometimes store lm_head too; rotary buffers hold no weights.
  return Family(
    name,
    LLMConfig,
    "model",
    model_type,
    (name,),
    llm_config_from_hf,
    _to_hf(name),
    lambda cfg: LLM(cfg, rngs=nnx.Rngs(0)),
    _pieces,
    ignore=lambda n: n.endswith("rotary_emb.inv_freq") or n == "lm_head.weight",
    task=("director", ("model", "llm"), _run_llm),
  )


LLAMA, QWEN2 = _family("llama"), _family("qwen2")

# Fields that change the function but no tensor shape: config.json must agree with cfg.
_SEMANTIC_FIELDS = ("rope_theta", "rope_scaling", "qkv_bias", "tie_embeddings", "norm_eps")
_VOCAB_HINT = " (pad the vocabulary with vocab_size=...)"


def load_hf_llm(
  path: str,
  cfg: LLMConfig | None = None,
  *,
  vocab_size: int | None = None,
  mesh: jax.sharding.Mesh | None = None,
  rules: Rules = DEFAULT_RULES,
  **overrides: Any,
) -> LLM:
  """An LLM holding the weights of the HF checkpoint folder `path`.

  Args:
    cfg: the model to load into (e.g. `DirectorConfig.llm`): every tensor must have its
      shapes (the vocabulary may grow: new embedding / LM head rows equal the mean of
      the checkpoint's rows) and config.json must agree on RoPE, qkv bias, tied
      embeddings and norm epsilon. By default the config is read
      from config.json, with `overrides` (e.g. dtype="bfloat16", remat="full").
    vocab_size: grow the vocabulary to this size (with cfg None).
    mesh: place each param with its logical sharding on this mesh (else one device).
  """
  hf = read_hf_config(path)
  hf_cfg = llm_config_from_hf(hf, **overrides)
  if cfg is None:
    cfg = hf_cfg if vocab_size is None else dataclasses.replace(hf_cfg, vocab_size=vocab_size)
  elif vocab_size is not None or overrides:
    raise ValueError(
      "load_hf_llm: vocab_size / overrides apply only without cfg "
      "(cfg.vocab_size and cfg's options decide)"
    )
  else:
    for name in _SEMANTIC_FIELDS:
      if getattr(cfg, name) != getattr(hf_cfg, name):
        raise WeightError(
          f"{path}/config.json: {name} is {getattr(hf_cfg, name)!r}, "
          f"the model config has {getattr(cfg, name)!r}"
        )
  return cast(
    LLM,
    load_model(
      LLAMA if hf["model_type"] == "llama" else QWEN2,
      cfg,
      path,
      mesh=mesh,
      rules=rules,
      hints={"embed": _VOCAB_HINT, "lm_head": _VOCAB_HINT},
    ),
  )
