"""HF transformers text encoders -> ours: CLIP text tower, T5 / mT5 / umT5 encoders.

CLIP (`CLIPTextModelWithProjection`, or the text half of a `CLIPModel`):
  text_model.embeddings.{token,position}_embedding.weight -> {token,pos}_embedding
  text_model.encoder.layers.i.*        -> blocks/* (stacked; convert/hf_vision.stack_tensors)
  text_model.final_layer_norm          -> final_norm_{scale,bias}
  text_projection.weight [P, D]        -> projection [D, P]

T5 (`T5EncoderModel`, `UMT5EncoderModel`, or the encoder of a full seq2seq folder):
  shared.weight (or encoder.embed_tokens.weight)             -> embed [V, D]
  encoder.block.i.layer.0.SelfAttention.{q,k,v} [H*Dh, D]     -> {q,k,v} [L, D, H, Dh]
  encoder.block.i.layer.0.SelfAttention.o [D, H*Dh]           -> o [L, H, Dh, D]
  encoder.block.i.layer.0.SelfAttention.relative_attention_bias [buckets, H]
                                       -> rel_bias [L (umT5) or 1 (T5: block 0), buckets, H]
  encoder.block.i.layer.{0,1}.layer_norm                      -> ln_attn / ln_ff
  encoder.block.i.layer.1.DenseReluDense.{wi_0,wi_1,wi,wo}    -> same names, transposed
  encoder.final_layer_norm                                    -> final_norm
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from flax import nnx

from auteur_jax.convert.diffusers_wan import open_checkpoint
from auteur_jax.convert.hf_vision import _heads_in, _heads_out, stack_tensors
from auteur_jax.convert.weights import Converted, SourceTensors, WeightError, linear, load_into
from auteur_jax.models.clip_text import ClipTextTower, TextConfig
from auteur_jax.models.text_encoder import T5Config, T5Encoder
from auteur_jax.models.vit_blocks import ACTIVATIONS
from auteur_jax.parallel.rules import DEFAULT_RULES, Rules

_CLIP_DEFAULTS = dict(vocab_size=49408, hidden_size=512, intermediate_size=2048,
                      num_hidden_layers=12, num_attention_heads=8, max_position_embeddings=77,
                      hidden_act="quick_gelu", layer_norm_eps=1e-5, projection_dim=512,
                      eos_token_id=2)
_T5_TYPES = {"t5": False, "mt5": False, "umt5": True}  # model_type -> per-layer bias.


# ------------------------------------------------------------------------------- CLIP


def clip_config_from_hf(config: Mapping[str, Any], **overrides: Any) -> TextConfig:
  """TextConfig for a HF CLIPTextConfig (or a CLIPConfig's text half)."""
  mt = config.get("model_type", "")
  if mt == "clip":
    tc = dict(config.get("text_config") or {})
    tc["projection_dim"] = config.get("projection_dim", 512)  # The full model's wins.
  elif mt == "clip_text_model":
    tc = dict(config)
  else:
    raise WeightError(f"config.json: model_type {mt!r}; expected 'clip_text_model' or 'clip'")
  c = {**_CLIP_DEFAULTS, **{k: v for k, v in tc.items() if v is not None}}
  fields = dict(vocab_size=c["vocab_size"], width=c["hidden_size"],
                depth=c["num_hidden_layers"], num_heads=c["num_attention_heads"],
                mlp_dim=c["intermediate_size"], max_len=c["max_position_embeddings"],
                projection_dim=c["projection_dim"], act=c["hidden_act"],
                eps=c["layer_norm_eps"], eos_token_id=c["eos_token_id"],
                pool_argmax=c["eos_token_id"] == 2)  # HF's rule for OpenAI's configs.
  fields.update(overrides)
  if fields["act"] not in ACTIVATIONS:
    raise WeightError(f"config.json: hidden_act {fields['act']!r} is not supported; "
                      f"expected one of {sorted(ACTIVATIONS)}")
  return TextConfig.from_dict(fields)


def convert_clip_tensors(src: SourceTensors, cfg: TextConfig) -> Converted:
  out: Converted = {}

  def put(ours: str, theirs: str, fn=None) -> None:
    w = src.get(theirs)
    out[ours] = (fn(w) if fn else w, theirs)

  t = "text_model."
  put("token_embedding", f"{t}embeddings.token_embedding.weight")
  put("pos_embedding", f"{t}embeddings.position_embedding.weight")
  out.update(stack_tensors(src, f"{t}encoder", cfg.depth, cfg.num_heads))
  put("final_norm_scale", f"{t}final_layer_norm.weight")
  put("final_norm_bias", f"{t}final_layer_norm.bias")
  if cfg.projection_dim:
    put("projection", "text_projection.weight", linear)
  src.check_all_used(ignore=("vision_model.", "visual_projection", "logit_scale", "logit_bias"))
  return out


def load_hf_clip_text(path: str, *, mesh: jax.sharding.Mesh | None = None,
                      rules: Rules = DEFAULT_RULES, **overrides: Any) -> ClipTextTower:
  """A ClipTextTower holding the weights of the HF model folder `path`."""
  config, tensors = open_checkpoint(path)
  cfg = clip_config_from_hf(config, **overrides)
  converted = convert_clip_tensors(SourceTensors(tensors, path), cfg)
  return load_into(lambda: ClipTextTower(cfg, rngs=nnx.Rngs(0)), converted, path, mesh=mesh,
                   rules=rules)


# --------------------------------------------------------------------------------- T5


def t5_config_from_hf(config: Mapping[str, Any], **overrides: Any) -> T5Config:
  """T5Config for a HF T5 / mT5 / umT5 config.json."""
  mt = config.get("model_type", "")
  if mt not in _T5_TYPES:
    raise WeightError(f"config.json: model_type {mt!r}; expected one of {sorted(_T5_TYPES)}")
  proj = config.get("feed_forward_proj", "relu")
  gated = proj.startswith("gated-")
  act = config.get("dense_act_fn") or proj.split("-")[-1]
  act = "gelu_new" if gated and act == "gelu" else act  # HF maps "gated-gelu" to gelu_new.
  if act not in ACTIVATIONS:
    raise WeightError(f"config.json: feed_forward_proj {proj!r} / dense_act_fn {act!r} is "
                      f"not supported; expected an activation in {sorted(ACTIVATIONS)}")
  fields = dict(vocab_size=config.get("vocab_size", 32128), width=config.get("d_model", 512),
                head_dim=config.get("d_kv", 64), num_heads=config.get("num_heads", 8),
                mlp_dim=config.get("d_ff", 2048), depth=config.get("num_layers", 6),
                num_buckets=config.get("relative_attention_num_buckets", 32),
                max_distance=config.get("relative_attention_max_distance", 128),
                per_layer_bias=_T5_TYPES[mt], gated=gated, act=act,
                eps=config.get("layer_norm_epsilon", 1e-6))
  fields.update(overrides)
  return T5Config.from_dict(fields)


def convert_t5_tensors(src: SourceTensors, cfg: T5Config) -> Converted:
  out: Converted = {}
  h = cfg.num_heads
  emb = "shared.weight" if "shared.weight" in src else "encoder.embed_tokens.weight"
  out["embed"] = (src.get(emb), emb)
  if emb == "shared.weight" and "encoder.embed_tokens.weight" in src:
    src.get("encoder.embed_tokens.weight")  # The tied copy of shared.weight.

  def stacked(ours: str, suffix: str, fn, num_layers: int = cfg.depth) -> None:
    arrs = [fn(src.get(f"encoder.block.{i}.{suffix}")) for i in range(num_layers)]
    out[ours] = (np.stack(arrs), f"encoder.block.*.{suffix}")

  a, f = "layer.0.SelfAttention.", "layer.1.DenseReluDense."
  ident = lambda w: w
  for n in "qkv":
    stacked(n, f"{a}{n}.weight", lambda w: _heads_in(w, h))
  stacked("o", f"{a}o.weight", lambda w: _heads_out(w, h))
  stacked("ln_attn", "layer.0.layer_norm.weight", ident)
  stacked("ln_ff", "layer.1.layer_norm.weight", ident)
  for n in (("wi_0", "wi_1") if cfg.gated else ("wi",)) + ("wo",):
    stacked(n, f"{f}{n}.weight", linear)
  bias_layers = cfg.depth if cfg.per_layer_bias else 1  # T5: block 0's table only.
  stacked("rel_bias", f"{a}relative_attention_bias.weight", ident, bias_layers)
  if f"encoder.block.{cfg.depth}.{a}q.weight" in src:
    raise WeightError(f"{src.where}: the checkpoint has more than num_layers={cfg.depth} "
                      "encoder blocks")
  out["final_norm"] = (src.get("encoder.final_layer_norm.weight"), "encoder.final_layer_norm")
  src.check_all_used(ignore=("decoder.", "lm_head."))
  return out


def load_hf_t5(path: str, *, mesh: jax.sharding.Mesh | None = None,
               rules: Rules = DEFAULT_RULES, **overrides: Any) -> T5Encoder:
  """A T5Encoder holding the encoder weights of the HF T5 / umT5 folder `path`.

  overrides: T5Config fields that do not change shapes (dtype, param_dtype, remat).
  """
  config, tensors = open_checkpoint(path)
  cfg = t5_config_from_hf(config, **overrides)
  converted = convert_t5_tensors(SourceTensors(tensors, path), cfg)
  return load_into(lambda: T5Encoder(cfg, rngs=nnx.Rngs(0)), converted, path, mesh=mesh,
                   rules=rules)
