"""HF transformers VideoMAE weights <-> `models.videomae.VideoMAE` (the encoder).

Reads `VideoMAEModel` folders, and the encoder of `VideoMAEForVideoClassification` (its
fc_norm too; the classifier is skipped) and `VideoMAEForPreTraining` folders (the decoder
and mask token are skipped). Name map (`_pieces`; HF -> ours), `P` = `videomae.` in the
latter two, none in `VideoMAEModel`:

  P.embeddings.patch_embeddings.projection.weight [D, 3, t, p, p]
                                                -> patch_kernel [t, p, p, 3, D] (+ bias)
  P.encoder.layer.i.layernorm_{before,after}    -> blocks/ln{1,2}_{scale,bias}
  P.encoder.layer.i.attention.attention.{query,key,value}.weight  -> blocks/{q,k,v} [D, H, Dh]
  ... .query.bias / .value.bias (older files: .q_bias / .v_bias)  -> blocks/{q,v}_bias
  P.encoder.layer.i.attention.output.dense      -> blocks/o [H, Dh, D], o_bias
  P.encoder.layer.i.{intermediate,output}.dense -> blocks/fc1, blocks/fc2 (+ biases)
  P.layernorm (use_mean_pooling off)            -> norm_{scale,bias}
  fc_norm (classification, mean pooling)        -> fc_norm_{scale,bias}

The position table is computed, not stored (as in HF).
"""

from __future__ import annotations

from collections.abc import Mapping
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
  transpose,
)
from auteur_jax.convert.safetensors_io import read_hf_config
from auteur_jax.models.videomae import VideoMAE, VideoMAEConfig
from auteur_jax.parallel.rules import DEFAULT_RULES, Rules

# HF defaults for keys a config.json may leave out.
_DEFAULTS = dict(
  image_size=224,
  patch_size=16,
  num_channels=3,
  num_frames=16,
  tubelet_size=2,
  hidden_size=768,
  num_hidden_layers=12,
  num_attention_heads=12,
  intermediate_size=3072,
  hidden_act="gelu",
  layer_norm_eps=1e-12,
  use_mean_pooling=True,
)
_CLASSIFIER = "VideoMAEForVideoClassification"
# Tensors of classification / pre-training checkpoints that the encoder does not use.
_OTHER = ("classifier.", "decoder.", "encoder_to_decoder.", "mask_token")
_PATCH = "embeddings.patch_embeddings.projection.weight"


def config_from_hf(config: Mapping[str, Any], **overrides: Any) -> VideoMAEConfig:
  """VideoMAEConfig for a HF VideoMAE config.json; `overrides` win."""
  if config.get("model_type") != "videomae":
    raise WeightError(f"config.json: model_type {config.get('model_type')!r} is not 'videomae'")
  c = {**_DEFAULTS, **config}
  if c["num_channels"] != 3:
    raise WeightError(f"config.json: num_channels={c['num_channels']}; only RGB (3) is supported")
  for key in ("image_size", "patch_size"):
    if not isinstance(c[key], int):
      raise WeightError(f"config.json: {key}={c[key]!r}; only a square size (an int) is supported")
  qv = c.get("qv_bias", c.get("qkv_bias", True))  # transformers 5 / 4 name.
  fields = dict(
    image_size=c["image_size"],
    patch_size=c["patch_size"],
    num_frames=c["num_frames"],
    tubelet_size=c["tubelet_size"],
    width=c["hidden_size"],
    depth=c["num_hidden_layers"],
    num_heads=c["num_attention_heads"],
    mlp_dim=c["intermediate_size"],
    act=c["hidden_act"],
    eps=c["layer_norm_eps"],
    qv_bias=bool(qv),
    use_mean_pooling=bool(c["use_mean_pooling"]),
    fc_norm=bool(c["use_mean_pooling"]) and _CLASSIFIER in (c.get("architectures") or ()),
  )
  fields.update(overrides)
  try:
    return VideoMAEConfig.from_dict(fields)
  except (TypeError, ValueError) as e:
    raise WeightError(f"config.json: {e}") from None


def _to_hf(cfg: VideoMAEConfig) -> dict:
  return dict(
    model_type="videomae",
    architectures=[_CLASSIFIER if cfg.fc_norm else "VideoMAEModel"],
    image_size=cfg.image_size,
    patch_size=cfg.patch_size,
    num_channels=3,
    num_frames=cfg.num_frames,
    tubelet_size=cfg.tubelet_size,
    hidden_size=cfg.width,
    num_hidden_layers=cfg.depth,
    num_attention_heads=cfg.num_heads,
    intermediate_size=cfg.mlp_dim,
    hidden_act=cfg.act,
    layer_norm_eps=cfg.eps,
    qv_bias=cfg.qv_bias,
    use_mean_pooling=cfg.use_mean_pooling,
  )


def _pieces(cfg: VideoMAEConfig, ours: Shapes, source: Shapes | None) -> list[Piece]:
  m, n = Map(ours), cfg.depth
  p = (
    "videomae."
    if (source is None and cfg.fc_norm) or (source and "videomae." + _PATCH in source)
    else ""
  )
  m.add("patch_kernel", p + _PATCH, transpose(2, 3, 4, 1, 0))
  m.add("patch_bias", p + "embeddings.patch_embeddings.projection.bias")
  layer = p + "encoder.layer.{i}."
  att = layer + "attention.attention."
  for x, theirs in (("1", "layernorm_before"), ("2", "layernorm_after")):
    m.stack(f"blocks/ln{x}_scale", f"{layer}{theirs}.weight", n)
    m.stack(f"blocks/ln{x}_bias", f"{layer}{theirs}.bias", n)
  for x, theirs in (("q", "query"), ("k", "key"), ("v", "value")):
    m.stack(f"blocks/{x}", f"{att}{theirs}.weight", n, HEADS_IN)
  if cfg.qv_bias:
    old = source is not None and att.format(i=0) + "q_bias" in source
    for x, theirs in (("q", "query"), ("v", "value")):
      m.stack(f"blocks/{x}_bias", att + (f"{x}_bias" if old else f"{theirs}.bias"), n, HEADS_VEC)
  m.stack("blocks/o", layer + "attention.output.dense.weight", n, HEADS_OUT)
  m.stack("blocks/o_bias", layer + "attention.output.dense.bias", n)
  for x, theirs in (("fc1", "intermediate"), ("fc2", "output")):
    m.stack(f"blocks/{x}", f"{layer}{theirs}.dense.weight", n, LINEAR)
    m.stack(f"blocks/{x}_bias", f"{layer}{theirs}.dense.bias", n)
  if not cfg.use_mean_pooling:
    m.add("norm_scale", p + "layernorm.weight")
    m.add("norm_bias", p + "layernorm.bias")
  if cfg.fc_norm:
    m.add("fc_norm_scale", "fc_norm.weight")
    m.add("fc_norm_bias", "fc_norm.bias")
  return m.pieces


FAMILY = Family(
  "videomae",
  VideoMAEConfig,
  "model",
  model_type,
  ("videomae",),
  config_from_hf,
  _to_hf,
  lambda cfg: VideoMAE(cfg, rngs=nnx.Rngs(0)),
  _pieces,
  ignore=lambda name: name.startswith(_OTHER),
)


def load_hf_videomae(
  path: str,
  *,
  mesh: jax.sharding.Mesh | None = None,
  rules: Rules = DEFAULT_RULES,
  **overrides: Any,
) -> VideoMAE:
  """A VideoMAE holding the weights of the HF model folder `path`.

  overrides: VideoMAEConfig fields that do not change the checkpoint's shapes (dtype).
  """
  cfg = config_from_hf(read_hf_config(path), **overrides)
  return cast(VideoMAE, load_model(FAMILY, cfg, path, mesh=mesh, rules=rules))
