"""HF transformers CLIP / SigLIP vision weights <-> `models.vision.VisionTower`.

Reads `CLIPVisionModelWithProjection`, `CLIPVisionModel`, `SiglipVisionModel` folders
and the vision half of full `CLIPModel` / `SiglipModel` folders (their text tensors and
logit scale / bias are skipped). Name map (`_pieces`, read by `load_hf_vision` and
`auteur convert`; HF -> ours), `P` = `vision_model.` (or none):

  P.embeddings.patch_embedding.{weight,bias}  -> patch_kernel [p, p, 3, D], patch_bias
  P.embeddings.class_embedding                -> class_embedding (CLIP)
  P.embeddings.position_embedding.weight      -> pos_embedding
  P.pre_layrnorm / P.post_layernorm           -> pre_norm / post_norm {scale, bias}
  P.encoder.layers.i.*                        -> blocks/* stacked on a leading layer axis
  visual_projection.weight [P, D]             -> projection [D, P] (CLIP)
  P.head.{probe, attention, layernorm, mlp}   -> head_attn / head_norm / head_mlp (SigLIP)

`encoder_blocks` (the pre-LN block map) is shared with the CLIP text converter.
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
  UNIT_LEAD,
  Family,
  Map,
  Piece,
  Shapes,
  from_run,
  load_model,
  model_type,
  transpose,
)
from auteur_jax.convert.safetensors_io import read_hf_config
from auteur_jax.models.vision import VisionConfig, VisionTower
from auteur_jax.parallel.rules import DEFAULT_RULES, Rules

_VISION_TYPES = {"clip_vision_model": "clip", "siglip_vision_model": "siglip"}
_FULL_TYPES = {"clip": "clip", "siglip": "siglip"}
# HF defaults for keys a config.json may leave out.
_DEFAULTS = {
  "clip": dict(
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    image_size=224,
    patch_size=32,
    hidden_act="quick_gelu",
    layer_norm_eps=1e-5,
    projection_dim=512,
  ),
  "siglip": dict(
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    image_size=224,
    patch_size=16,
    hidden_act="gelu_pytorch_tanh",
    layer_norm_eps=1e-6,
  ),
}
# Tensors of full image-text checkpoints that the vision tower does not use.
_OTHER_HALF = ("text_model.", "text_projection", "logit_scale", "logit_bias")


def config_from_hf(config: Mapping[str, Any], **overrides: Any) -> VisionConfig:
  """VisionConfig for a HF CLIP / SigLIP (vision) config.json; `overrides` win."""
  mt = config.get("model_type", "")
  if mt in _FULL_TYPES:
    family = _FULL_TYPES[mt]
    vc = dict(config.get("vision_config") or {})
    vc["projection_dim"] = config.get("projection_dim", 512)  # The full model's wins.
  elif mt in _VISION_TYPES:
    family, vc = _VISION_TYPES[mt], dict(config)
  else:
    raise WeightError(
      f"config.json: model_type {mt!r} is not a CLIP / SigLIP vision model; "
      f"expected one of {sorted({**_VISION_TYPES, **_FULL_TYPES})}"
    )
  c = {**_DEFAULTS[family], **vc}
  if c.get("num_channels", 3) != 3:
    raise WeightError(f"config.json: num_channels={c['num_channels']}; only RGB (3) is supported")
  if family == "siglip" and not c.get("vision_use_head", True):
    raise WeightError(
      "config.json: vision_use_head=false is not supported (the pooled "
      "embedding comes from the attention-pooling head)"
    )
  fields = dict(
    family=family,
    image_size=c["image_size"],
    patch_size=c["patch_size"],
    width=c["hidden_size"],
    depth=c["num_hidden_layers"],
    num_heads=c["num_attention_heads"],
    mlp_dim=c["intermediate_size"],
    act=c["hidden_act"],
    eps=c["layer_norm_eps"],
    projection_dim=c.get("projection_dim", 0) if family == "clip" else 0,
  )
  grid = c["image_size"] // c["patch_size"]
  fields["num_tokens"] = min(64, grid * grid)  # SEED-X's 64 where the patch grid allows.
  fields.update(overrides)
  try:
    return VisionConfig.from_dict(fields)
  except (TypeError, ValueError) as e:
    raise WeightError(f"config.json: {e}") from None


def encoder_blocks(m: Map, prefix: str, n: int) -> None:
  """HF pre-LN encoder layers `{prefix}.layers.i.*` -> models/vit_blocks.EncoderStack."""
  layer = prefix + ".layers.{i}."
  for x in ("1", "2"):
    m.stack(f"blocks/ln{x}_scale", f"{layer}layer_norm{x}.weight", n)
    m.stack(f"blocks/ln{x}_bias", f"{layer}layer_norm{x}.bias", n)
  for x in "qkv":
    m.stack(f"blocks/{x}", f"{layer}self_attn.{x}_proj.weight", n, HEADS_IN)
    m.stack(f"blocks/{x}_bias", f"{layer}self_attn.{x}_proj.bias", n, HEADS_VEC)
  m.stack("blocks/o", layer + "self_attn.out_proj.weight", n, HEADS_OUT)
  m.stack("blocks/o_bias", layer + "self_attn.out_proj.bias", n)
  for x in ("fc1", "fc2"):
    m.stack(f"blocks/{x}", f"{layer}mlp.{x}.weight", n, LINEAR)
    m.stack(f"blocks/{x}_bias", f"{layer}mlp.{x}.bias", n)


def _pieces(cfg: VisionConfig, ours: Shapes, source: Shapes | None) -> list[Piece]:
  m = Map(ours)
  # transformers 5 writes SiglipVisionModel without the `vision_model.` prefix.
  bare = (
    "embeddings.patch_embedding.weight" in source if source is not None else cfg.family == "siglip"
  )
  p = "" if bare else "vision_model."
  e = p + "embeddings."
  m.add("patch_kernel", e + "patch_embedding.weight", transpose(2, 3, 1, 0))
  m.add("pos_embedding", e + "position_embedding.weight")
  norms = [("post_norm", "post_layernorm")]
  if cfg.family == "clip":
    norms.append(("pre_norm", "pre_layrnorm"))
  for x, theirs in norms:
    m.add(f"{x}/scale", f"{p}{theirs}.weight")
    m.add(f"{x}/bias", f"{p}{theirs}.bias")
  encoder_blocks(m, p + "encoder", cfg.depth)
  if cfg.family == "clip":
    m.add("class_embedding", e + "class_embedding")
    if cfg.projection_dim:
      m.add("projection", "visual_projection.weight", LINEAR)
    return m.pieces
  m.add("patch_bias", e + "patch_embedding.bias")
  h, d = p + "head.", cfg.width
  m.add("head_attn/probe", h + "probe", UNIT_LEAD)
  for i, x in enumerate("qkv"):  # Slices of the fused in-projection.
    rows = slice(i * d, (i + 1) * d)
    m.add(f"head_attn/{x}", h + "attention.in_proj_weight", HEADS_IN, take=(rows,), full=(3 * d, d))
    m.add(
      f"head_attn/{x}_bias", h + "attention.in_proj_bias", HEADS_VEC, take=(rows,), full=(3 * d,)
    )
  m.add("head_attn/o", h + "attention.out_proj.weight", HEADS_OUT)
  m.add("head_attn/o_bias", h + "attention.out_proj.bias")
  m.add("head_norm/scale", h + "layernorm.weight")
  m.add("head_norm/bias", h + "layernorm.bias")
  for x in ("fc1", "fc2"):
    m.add(f"head_mlp/{x}", f"{h}mlp.{x}.weight", LINEAR)
    m.add(f"head_mlp/{x}_bias", f"{h}mlp.{x}.bias")
  return m.pieces


def _to_hf(cfg: VisionConfig) -> dict:
  out = dict(
    hidden_size=cfg.width,
    intermediate_size=cfg.mlp_dim,
    num_hidden_layers=cfg.depth,
    num_attention_heads=cfg.num_heads,
    image_size=cfg.image_size,
    patch_size=cfg.patch_size,
    hidden_act=cfg.act,
    layer_norm_eps=cfg.eps,
    num_channels=3,
  )
  if cfg.family == "clip":
    return dict(
      out,
      model_type="clip_vision_model",
      projection_dim=cfg.projection_dim,
      architectures=["CLIPVisionModelWithProjection"],
    )
  return dict(
    out, model_type="siglip_vision_model", vision_use_head=True, architectures=["SiglipVisionModel"]
  )


def _family(name: str, kinds: tuple[str, ...]) -> Family:
  def from_hf(hf, **overrides):
    cfg = config_from_hf(hf, **overrides)
    if cfg.family != name:
      raise WeightError(f"config.json: a {cfg.family} model, not {name}")
    return cfg

  return Family(
    f"{name}_vision",
    VisionConfig,
    "model",
    model_type,
    kinds,
    from_hf,
    _to_hf,
    lambda cfg: VisionTower(cfg, rngs=nnx.Rngs(0)),
    _pieces,
    ignore=lambda n: n.startswith(_OTHER_HALF),
    fresh=("resampler", "resampler_norm"),
    task=("clip", ("model", "vision"), from_run(VisionConfig, "vision")),
  )


FAMILIES = {
  "clip": _family("clip", ("clip_vision_model", "clip")),
  "siglip": _family("siglip", ("siglip_vision_model", "siglip")),
}


def load_hf_vision(
  path: str,
  *,
  mesh: jax.sharding.Mesh | None = None,
  rules: Rules = DEFAULT_RULES,
  **overrides: Any,
) -> VisionTower:
  """A VisionTower holding the weights of the HF model folder `path`.

  overrides: VisionConfig fields that do not change the checkpoint's shapes (dtype,
  feature_layer, resampler, num_tokens, project_tokens, ...). An attention resampler
  is not in the checkpoint: it keeps its random initialisation.
  """
  cfg = config_from_hf(read_hf_config(path), **overrides)
  return cast(VisionTower, load_model(FAMILIES[cfg.family], cfg, path, mesh=mesh, rules=rules))
