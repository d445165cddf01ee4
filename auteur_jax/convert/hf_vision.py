"""HF transformers CLIP / SigLIP vision weights -> `models.vision.VisionTower`.

Reads `CLIPVisionModelWithProjection`, `CLIPVisionModel`, `SiglipVisionModel` folders
and the vision half of full `CLIPModel` / `SiglipModel` folders (their text tensors and
logit scale / bias are skipped). Name map (HF -> ours), `P` = `vision_model.` (or none):

  P.embeddings.patch_embedding.{weight,bias}  -> patch_kernel [p, p, 3, D], patch_bias
  P.embeddings.class_embedding                -> class_embedding (CLIP)
  P.embeddings.position_embedding.weight      -> pos_embedding
  P.pre_layrnorm / P.post_layernorm           -> pre_norm / post_norm {scale, bias}
  P.encoder.layers.i.*                        -> blocks/* stacked on a leading layer axis
  visual_projection.weight [P, D]             -> projection [D, P] (CLIP)
  P.head.{probe, attention, layernorm, mlp}   -> head_attn / head_norm / head_mlp (SigLIP)

`stack_tensors` (the pre-LN block map) is shared with the CLIP text converter.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from flax import nnx

from auteur_jax.convert.diffusers_wan import open_checkpoint
from auteur_jax.convert.weights import Converted, SourceTensors, WeightError, linear, load_into
from auteur_jax.models.vision import VisionConfig, VisionTower
from auteur_jax.parallel.rules import DEFAULT_RULES, Rules

_VISION_TYPES = {"clip_vision_model": "clip", "siglip_vision_model": "siglip"}
_FULL_TYPES = {"clip": "clip", "siglip": "siglip"}
# HF defaults for keys a config.json may leave out.
_DEFAULTS = {"clip": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                          num_attention_heads=12, image_size=224, patch_size=32,
                          hidden_act="quick_gelu", layer_norm_eps=1e-5, projection_dim=512),
             "siglip": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                            num_attention_heads=12, image_size=224, patch_size=16,
                            hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6)}
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
    raise WeightError(f"config.json: model_type {mt!r} is not a CLIP / SigLIP vision model; "
                      f"expected one of {sorted({**_VISION_TYPES, **_FULL_TYPES})}")
  c = {**_DEFAULTS[family], **vc}
  if c.get("num_channels", 3) != 3:
    raise WeightError(f"config.json: num_channels={c['num_channels']}; only RGB (3) is supported")
  if family == "siglip" and not c.get("vision_use_head", True):
    raise WeightError("config.json: vision_use_head=false is not supported (the pooled "
                      "embedding comes from the attention-pooling head)")
  fields = dict(family=family, image_size=c["image_size"], patch_size=c["patch_size"],
                width=c["hidden_size"], depth=c["num_hidden_layers"],
                num_heads=c["num_attention_heads"], mlp_dim=c["intermediate_size"],
                act=c["hidden_act"], eps=c["layer_norm_eps"],
                projection_dim=c.get("projection_dim", 0) if family == "clip" else 0)
  grid = c["image_size"] // c["patch_size"]
  fields["num_tokens"] = min(64, grid * grid)  # SEED-X's 64 where the patch grid allows.
  fields.update(overrides)
  try:
    return VisionConfig.from_dict(fields)
  except (TypeError, ValueError) as e:
    raise WeightError(f"config.json: {e}") from None


def _heads_in(w: np.ndarray, heads: int) -> np.ndarray:
  """torch Linear [H*Dh, D] -> ours [D, H, Dh]."""
  return w.T.reshape(w.shape[1], heads, -1)


def _heads_out(w: np.ndarray, heads: int) -> np.ndarray:
  """torch Linear [D, H*Dh] -> ours [H, Dh, D]."""
  return w.T.reshape(heads, -1, w.shape[0])


def stack_tensors(src: SourceTensors, prefix: str, depth: int, heads: int,
                  ours: str = "blocks") -> Converted:
  """HF `{prefix}.layers.i.*` pre-LN blocks -> models/vit_blocks.EncoderStack weights."""
  names = {  # ours -> (HF suffix, transform)
      "ln1_scale": ("layer_norm1.weight", None), "ln1_bias": ("layer_norm1.bias", None),
      "ln2_scale": ("layer_norm2.weight", None), "ln2_bias": ("layer_norm2.bias", None),
      "o": ("self_attn.out_proj.weight", lambda w: _heads_out(w, heads)),
      "o_bias": ("self_attn.out_proj.bias", None),
      "fc1": ("mlp.fc1.weight", linear), "fc1_bias": ("mlp.fc1.bias", None),
      "fc2": ("mlp.fc2.weight", linear), "fc2_bias": ("mlp.fc2.bias", None)}
  for n in "qkv":
    names[n] = (f"self_attn.{n}_proj.weight", lambda w: _heads_in(w, heads))
    names[f"{n}_bias"] = (f"self_attn.{n}_proj.bias", lambda b: b.reshape(heads, -1))
  out: Converted = {}
  for name, (suffix, fn) in names.items():
    layers = []
    for i in range(depth):
      w = src.get(f"{prefix}.layers.{i}.{suffix}")
      layers.append(fn(w) if fn else w)
    out[f"{ours}/{name}"] = (np.stack(layers), f"{prefix}.layers.*.{suffix}")
  if f"{prefix}.layers.{depth}.{names['fc1'][0]}" in src:
    raise WeightError(f"{src.where}: the checkpoint has more than num_hidden_layers={depth} "
                      f"layers under {prefix}.layers")
  return out


def convert_tensors(src: SourceTensors, cfg: VisionConfig) -> Converted:
  """Our parameter path -> (array, HF tensor name); see the module docstring."""
  p = "vision_model." if "vision_model.embeddings.patch_embedding.weight" in src else ""
  out: Converted = {}

  def put(ours: str, theirs: str, fn=None) -> None:
    w = src.get(theirs)
    out[ours] = (fn(w) if fn else w, theirs)

  e = f"{p}embeddings."
  put("patch_kernel", f"{e}patch_embedding.weight", lambda w: w.transpose(2, 3, 1, 0))
  put("pos_embedding", f"{e}position_embedding.weight")
  for ours, theirs in (("post_norm", "post_layernorm"),
                       *((("pre_norm", "pre_layrnorm"),) if cfg.family == "clip" else ())):
    put(f"{ours}/scale", f"{p}{theirs}.weight")
    put(f"{ours}/bias", f"{p}{theirs}.bias")
  out.update(stack_tensors(src, f"{p}encoder", cfg.depth, cfg.num_heads))
  if cfg.family == "clip":
    put("class_embedding", f"{e}class_embedding")
    if cfg.projection_dim:
      put("projection", "visual_projection.weight", linear)
  else:
    put("patch_bias", f"{e}patch_embedding.bias")
    h, d = f"{p}head.", cfg.width
    put("head_attn/probe", f"{h}probe", lambda w: w.reshape(1, d))
    for i, n in enumerate("qkv"):
      put(f"head_attn/{n}", f"{h}attention.in_proj_weight",
          lambda w, i=i: _heads_in(w[i * d:(i + 1) * d], cfg.num_heads))
      put(f"head_attn/{n}_bias", f"{h}attention.in_proj_bias",
          lambda b, i=i: b[i * d:(i + 1) * d].reshape(cfg.num_heads, -1))
    put("head_attn/o", f"{h}attention.out_proj.weight", lambda w: _heads_out(w, cfg.num_heads))
    put("head_attn/o_bias", f"{h}attention.out_proj.bias")
    put("head_norm/scale", f"{h}layernorm.weight")
    put("head_norm/bias", f"{h}layernorm.bias")
    for n in ("fc1", "fc2"):
      put(f"head_mlp/{n}", f"{h}mlp.{n}.weight", linear)
      put(f"head_mlp/{n}_bias", f"{h}mlp.{n}.bias")
  src.check_all_used(ignore=_OTHER_HALF)
  return out


def load_hf_vision(path: str, *, mesh: jax.sharding.Mesh | None = None,
                   rules: Rules = DEFAULT_RULES, **overrides: Any) -> VisionTower:
  """A VisionTower holding the weights of the HF model folder `path`.

  overrides: VisionConfig fields that do not change the checkpoint's shapes (dtype,
  feature_layer, resampler, num_tokens, project_tokens, ...). An attention resampler
  is not in the checkpoint: it keeps its random initialisation.
  """
  config, tensors = open_checkpoint(path)
  cfg = config_from_hf(config, **overrides)
  converted = convert_tensors(SourceTensors(tensors, path), cfg)
  return load_into(lambda: VisionTower(cfg, rngs=nnx.Rngs(0)), converted, path, mesh=mesh,
                   rules=rules, fresh=("resampler", "resampler_norm"))
