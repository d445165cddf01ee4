"""HF transformers text encoders <-> ours: CLIP text tower, T5 / mT5 / umT5 encoders.

Name maps (`_clip_pieces`, `_t5_pieces`; read by the loaders and `auteur convert`):

CLIP (`CLIPTextModelWithProjection`, or the text half of a `CLIPModel`):
  text_model.embeddings.{token,position}_embedding.weight -> {token,pos}_embedding
  text_model.encoder.layers.i.*        -> blocks/* (stacked; hf_vision.encoder_blocks)
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
from typing import Any, cast

import jax
from flax import nnx

from auteur_jax.checkpoint.errors import WeightError
from auteur_jax.convert.hf_vision import encoder_blocks
from auteur_jax.convert.mapping import (
  HEADS_IN,
  HEADS_OUT,
  LINEAR,
  Family,
  Map,
  Piece,
  Shapes,
  from_run,
  load_model,
  model_type,
)
from auteur_jax.convert.safetensors_io import read_hf_config
from auteur_jax.models.clip_text import ClipTextTower, TextConfig
from auteur_jax.models.text_encoder import T5Config, T5Encoder
from auteur_jax.models.vit_blocks import ACTIVATIONS
from auteur_jax.parallel.rules import DEFAULT_RULES, Rules

_CLIP_DEFAULTS = dict(
  vocab_size=49408,
  hidden_size=512,
  intermediate_size=2048,
  num_hidden_layers=12,
  num_attention_heads=8,
  max_position_embeddings=77,
  hidden_act="quick_gelu",
  layer_norm_eps=1e-5,
  projection_dim=512,
  eos_token_id=2,
)
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
  fields = dict(
    vocab_size=c["vocab_size"],
    width=c["hidden_size"],
    depth=c["num_hidden_layers"],
    num_heads=c["num_attention_heads"],
    mlp_dim=c["intermediate_size"],
    max_len=c["max_position_embeddings"],
    projection_dim=c["projection_dim"],
    act=c["hidden_act"],
    eps=c["layer_norm_eps"],
    eos_token_id=c["eos_token_id"],
    pool_argmax=c["eos_token_id"] == 2,
  )  # HF's rule for OpenAI's configs.
  fields.update(overrides)
  if fields["act"] not in ACTIVATIONS:
    raise WeightError(
      f"config.json: hidden_act {fields['act']!r} is not supported; "
      f"expected one of {sorted(ACTIVATIONS)}"
    )
  return TextConfig.from_dict(fields)


def _clip_pieces(cfg: TextConfig, ours: Shapes, source: Shapes | None) -> list[Piece]:
  m = Map(ours)
  t = "text_model."
  m.add("token_embedding", t + "embeddings.token_embedding.weight")
  m.add("pos_embedding", t + "embeddings.position_embedding.weight")
  encoder_blocks(m, t + "encoder", cfg.depth)
  m.add("final_norm_scale", t + "final_layer_norm.weight")
  m.add("final_norm_bias", t + "final_layer_norm.bias")
  if cfg.projection_dim:
    m.add("projection", "text_projection.weight", LINEAR)
  return m.pieces


def _clip_to_hf(cfg: TextConfig) -> dict:
  return dict(
    model_type="clip_text_model",
    architectures=["CLIPTextModelWithProjection"],
    vocab_size=cfg.vocab_size,
    hidden_size=cfg.width,
    intermediate_size=cfg.mlp_dim,
    num_hidden_layers=cfg.depth,
    num_attention_heads=cfg.num_heads,
    max_position_embeddings=cfg.max_len,
    projection_dim=cfg.projection_dim,
    hidden_act=cfg.act,
    layer_norm_eps=cfg.eps,
    eos_token_id=cfg.eos_token_id,
  )


CLIP_TEXT = Family(
  "clip_text",
  TextConfig,
  "model",
  model_type,
  ("clip_text_model", "clip"),
  clip_config_from_hf,
  _clip_to_hf,
  lambda cfg: ClipTextTower(cfg, rngs=nnx.Rngs(0)),
  _clip_pieces,
  ignore=lambda n: n.startswith(
    ("vision_model.", "visual_projection", "logit_scale", "logit_bias")
  ),
  task=("clip", ("model", "text"), from_run(TextConfig, "text")),
)


def load_hf_clip_text(
  path: str,
  *,
  mesh: jax.sharding.Mesh | None = None,
  rules: Rules = DEFAULT_RULES,
  **overrides: Any,
) -> ClipTextTower:
  """A ClipTextTower holding the weights of the HF model folder `path`."""
  cfg = clip_config_from_hf(read_hf_config(path), **overrides)
  return cast(ClipTextTower, load_model(CLIP_TEXT, cfg, path, mesh=mesh, rules=rules))


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
    raise WeightError(
      f"config.json: feed_forward_proj {proj!r} / dense_act_fn {act!r} is "
      f"not supported; expected an activation in {sorted(ACTIVATIONS)}"
    )
  fields = dict(
    vocab_size=config.get("vocab_size", 32128),
    width=config.get("d_model", 512),
    head_dim=config.get("d_kv", 64),
    num_heads=config.get("num_heads", 8),
    mlp_dim=config.get("d_ff", 2048),
    depth=config.get("num_layers", 6),
    num_buckets=config.get("relative_attention_num_buckets", 32),
    max_distance=config.get("relative_attention_max_distance", 128),
    per_layer_bias=_T5_TYPES[mt],
    gated=gated,
    act=act,
    eps=config.get("layer_norm_epsilon", 1e-6),
  )
  fields.update(overrides)
  return T5Config.from_dict(fields)


def _t5_pieces(cfg: T5Config, ours: Shapes, source: Shapes | None) -> list[Piece]:
  m = Map(ours)
  shared = source is None or "shared.weight" in source
  m.add("embed", "shared.weight" if shared else "encoder.embed_tokens.weight")
  n, b = cfg.depth, "encoder.block.{i}."
  a, f = "layer.0.SelfAttention.", "layer.1.DenseReluDense."
  for x in "qkv":
    m.stack(x, f"{b}{a}{x}.weight", n, HEADS_IN)
  m.stack("o", f"{b}{a}o.weight", n, HEADS_OUT)
  m.stack("ln_attn", b + "layer.0.layer_norm.weight", n)
  m.stack("ln_ff", b + "layer.1.layer_norm.weight", n)
  for x in (("wi_0", "wi_1") if cfg.gated else ("wi",)) + ("wo",):
    m.stack(x, f"{b}{f}{x}.weight", n, LINEAR)
  m.stack(
    "rel_bias", f"{b}{a}relative_attention_bias.weight", n if cfg.per_layer_bias else 1
  )  # T5: block 0's table only.
  m.add("final_norm", "encoder.final_layer_norm.weight")
  return m.pieces


def _t5_family(name: str, kinds: tuple[str, ...]) -> Family:
  def to_hf(cfg: T5Config) -> dict:
    act = "gelu" if cfg.gated and cfg.act == "gelu_new" else cfg.act
    return dict(
      model_type=name,
      vocab_size=cfg.vocab_size,
      d_model=cfg.width,
      d_kv=cfg.head_dim,
      num_heads=cfg.num_heads,
      d_ff=cfg.mlp_dim,
      num_layers=cfg.depth,
      relative_attention_num_buckets=cfg.num_buckets,
      relative_attention_max_distance=cfg.max_distance,
      feed_forward_proj=("gated-" if cfg.gated else "") + act,
      dense_act_fn=cfg.act,
      is_gated_act=cfg.gated,
      layer_norm_epsilon=cfg.eps,
      is_encoder_decoder=False,
      architectures=["T5EncoderModel" if name == "t5" else "UMT5EncoderModel"],
    )

  # The decoder of a seq2seq folder and the tied copy of shared.weight are not read.
  return Family(
    name,
    T5Config,
    "model",
    model_type,
    kinds,
    t5_config_from_hf,
    to_hf,
    lambda cfg: T5Encoder(cfg, rngs=nnx.Rngs(0)),
    _t5_pieces,
    ignore=lambda n: n.startswith(("decoder.", "lm_head.")) or n == "encoder.embed_tokens.weight",
    task=("text_encoder", ("model",), from_run(T5Config)),
  )


T5, UMT5 = _t5_family("t5", ("t5", "mt5")), _t5_family("umt5", ("umt5",))


def load_hf_t5(
  path: str,
  *,
  mesh: jax.sharding.Mesh | None = None,
  rules: Rules = DEFAULT_RULES,
  **overrides: Any,
) -> T5Encoder:
  """A T5Encoder holding the encoder weights of the HF T5 / umT5 folder `path`.

  overrides: T5Config fields that do not change shapes (dtype, param_dtype, remat).
  """
  cfg = t5_config_from_hf(read_hf_config(path), **overrides)
  family = UMT5 if cfg.per_layer_bias else T5
  return cast(T5Encoder, load_model(family, cfg, path, mesh=mesh, rules=rules))
