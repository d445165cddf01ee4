"""diffusers `WanTransformer3DModel` weights <-> `models.dit.VideoDiT`.

A diffusers model folder (config.json + one safetensors file, or several listed by a
`*.safetensors.index.json`; memory-mapped, so bfloat16 loads without torch), for the
text-to-video and the image-conditioned (`image_dim` / `added_kv_proj_dim`) layouts.
Wan 2.1 I2V (in_channels 36: noisy latents, mask and keyframe latents) loads as a
keyframe-conditioned DiT. The name map (`_pieces`, used by `load_diffusers_wan` and
`auteur convert`): rename -> transpose ([out, in] torch Linear to our [in, out]) ->
reshape heads -> place in the stacked (and q/k/v-fused) block parameters; every tensor
is checked against the model's abstract state before any is read.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, cast

import jax
import jax.numpy as jnp
from flax import nnx

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
  class_name,
  flat,
  from_run,
  load_model,
)
from auteur_jax.convert.safetensors_io import read_hf_config
from auteur_jax.models.dit import (
  KEYFRAME_MASK_CHANNELS,
  DiTConfig,
  VideoDiT,
  VisualEmbedder,
  block_param_specs,
  per_layer_init,
)
from auteur_jax.parallel.rules import DEFAULT_RULES, Rules


def config_from_diffusers(config: Mapping[str, Any], **overrides: Any) -> DiTConfig:
  """DiTConfig for a diffusers WanTransformer3DModel config.json; `overrides` win.

  in_channels = 2 x out_channels + 4 (Wan 2.1 I2V's 36) is read as visual_condition
  "keyframe" (the image tokens, with image_dim, are the keyframe's CLIP tokens); override
  it with "both" to feed the director's embedding there instead: the weights are the same.
  """
  cls = config.get("_class_name", "WanTransformer3DModel")
  if cls != "WanTransformer3DModel":
    raise ValueError(f"config.json: _class_name is {cls!r}, expected 'WanTransformer3DModel'")
  qk_norm = config.get("qk_norm", "rms_norm_across_heads")
  if qk_norm != "rms_norm_across_heads":
    raise ValueError(
      f"config.json: qk_norm {qk_norm!r} unsupported; expected 'rms_norm_across_heads'"
    )
  heads, head_dim = config.get("num_attention_heads", 40), config.get("attention_head_dim", 128)
  image_dim = config.get("image_dim") or 0
  added = config.get("added_kv_proj_dim")
  if image_dim and added != heads * head_dim:
    raise ValueError(
      f"config.json: added_kv_proj_dim must equal heads x head_dim = "
      f"{heads * head_dim} when image_dim is set, got {added}"
    )
  if added and not image_dim:
    raise ValueError("config.json: added_kv_proj_dim set without image_dim")
  in_channels = config.get("in_channels", 16)
  out_channels = config.get("out_channels") or in_channels
  # Wan 2.1 I2V: the noisy latents, a mask and the keyframe's latents (16 + 4 + 16 = 36).
  i2v = in_channels == 2 * out_channels + KEYFRAME_MASK_CHANNELS
  fields = dict(
    patch_size=tuple(config.get("patch_size", (1, 2, 2))),
    num_heads=heads,
    head_dim=head_dim,
    in_channels=in_channels,
    out_channels=out_channels,
    visual_condition="keyframe" if i2v else "embedding",
    text_dim=config.get("text_dim", 4096),
    freq_dim=config.get("freq_dim", 256),
    ffn_dim=config.get("ffn_dim", 13824),
    num_layers=config.get("num_layers", 40),
    cross_attn_norm=bool(config.get("cross_attn_norm", True)),
    eps=config.get("eps", 1e-6),
    visual_dim=image_dim,
    visual_pos_len=config.get("pos_embed_seq_len") or 0,
    rope_max_len=config.get("rope_max_seq_len", 1024),
  )
  fields.update(overrides)
  return DiTConfig.from_dict(fields)


def _pieces(cfg: DiTConfig, ours: Shapes, source: Shapes | None) -> list[Piece]:
  m = Map(ours)
  d, (pt, ph, pw) = cfg.width, cfg.patch_size
  m.add(
    "patch_embed/kernel",
    "patch_embedding.weight",
    lambda s: ((d, cfg.in_channels, pt, ph, pw), (("t", (2, 3, 4, 1, 0)), ("r", s))),
  )
  m.add("patch_embed/bias", "patch_embedding.bias")
  ce = "condition_embedder."
  pairs = {
    "time_fc1": ce + "time_embedder.linear_1",
    "time_fc2": ce + "time_embedder.linear_2",
    "text_fc1": ce + "text_embedder.linear_1",
    "text_fc2": ce + "text_embedder.linear_2",
    "head": "proj_out",
  }
  if cfg.visual_dim:
    ie = ce + "image_embedder."
    pairs.update({"visual_embed/fc1": ie + "ff.net.0.proj", "visual_embed/fc2": ie + "ff.net.2"})
    for x in ("norm1", "norm2"):
      m.add(f"visual_embed/{x}_scale", f"{ie}{x}.weight")
      m.add(f"visual_embed/{x}_bias", f"{ie}{x}.bias")
    if cfg.visual_pos_len:
      m.add("visual_embed/pos_embed", ie + "pos_embed", UNIT_LEAD)
  for x, theirs in pairs.items():
    m.add(f"{x}/kernel", theirs + ".weight", LINEAR)
    m.add(f"{x}/bias", theirs + ".bias")
  m.add("time_proj", ce + "time_proj.weight", lambda s: ((6 * d, d), (("t", (1, 0)), ("r", s))))
  m.add("time_proj_bias", ce + "time_proj.bias", flat(lambda s: (6 * d,)))
  m.add("head_modulation", "scale_shift_table", UNIT_LEAD)
  n, b = cfg.num_layers, "blocks.{i}."
  fused = {
    "sa_qkv": ["attn1.to_q", "attn1.to_k", "attn1.to_v"],
    "ca_q": ["attn2.to_q"],
    "ca_kv": ["attn2.to_k", "attn2.to_v"],
  }
  if cfg.visual_dim:
    fused["ca_vkv"] = ["attn2.add_k_proj", "attn2.add_v_proj"]
    m.stack("blocks/ca_vk_norm", b + "attn2.norm_added_k.weight", n, HEADS_VEC)
  for x, names in fused.items():  # torch Linears [H*K, D] -> slot j of [L, D, n, H, K]
    for j, theirs in enumerate(names):
      m.stack(f"blocks/{x}", f"{b}{theirs}.weight", n, HEADS_IN, at=(slice(None), j))
      m.stack(f"blocks/{x}_bias", f"{b}{theirs}.bias", n, HEADS_VEC, at=(j,))
  m.stack("blocks/modulation", b + "scale_shift_table", n, UNIT_LEAD)
  for x, theirs in (("sa", "attn1."), ("ca", "attn2.")):
    m.stack(f"blocks/{x}_q_norm", f"{b}{theirs}norm_q.weight", n, HEADS_VEC)
    m.stack(f"blocks/{x}_k_norm", f"{b}{theirs}norm_k.weight", n, HEADS_VEC)
    m.stack(f"blocks/{x}_out", f"{b}{theirs}to_out.0.weight", n, HEADS_OUT)
    m.stack(f"blocks/{x}_out_bias", f"{b}{theirs}to_out.0.bias", n)
  if cfg.cross_attn_norm:
    m.stack("blocks/ca_norm_scale", b + "norm2.weight", n)
    m.stack("blocks/ca_norm_bias", b + "norm2.bias", n)
  for x, theirs in (("ffn_up", "ffn.net.0.proj"), ("ffn_down", "ffn.net.2")):
    m.stack(f"blocks/{x}", f"{b}{theirs}.weight", n, LINEAR)
    m.stack(f"blocks/{x}_bias", f"{b}{theirs}.bias", n)
  return m.pieces


def _to_hf(cfg: DiTConfig) -> dict:
  return dict(
    _class_name="WanTransformer3DModel",
    patch_size=list(cfg.patch_size),
    num_attention_heads=cfg.num_heads,
    attention_head_dim=cfg.head_dim,
    in_channels=cfg.in_channels,
    out_channels=cfg.out_channels,
    text_dim=cfg.text_dim,
    freq_dim=cfg.freq_dim,
    ffn_dim=cfg.ffn_dim,
    num_layers=cfg.num_layers,
    cross_attn_norm=cfg.cross_attn_norm,
    qk_norm="rms_norm_across_heads",
    eps=cfg.eps,
    image_dim=cfg.visual_dim or None,
    added_kv_proj_dim=cfg.width if cfg.visual_dim else None,
    rope_max_seq_len=cfg.rope_max_len,
    pos_embed_seq_len=cfg.visual_pos_len or None,
  )


FAMILY = Family(
  "wan_dit",
  DiTConfig,
  "diffusion_pytorch_model",
  class_name,
  ("WanTransformer3DModel",),
  config_from_diffusers,
  _to_hf,
  lambda cfg: VideoDiT(cfg, rngs=nnx.Rngs(0)),
  _pieces,
  ignore=lambda n: n.endswith("norm_added_q.weight"),  # diffusers too
  task=("dit", ("model", "dit"), from_run(DiTConfig)),
)


def new_visual_branch(cfg: DiTConfig, seed: int = 0) -> dict[str, jax.Array]:
  """Fresh weights "path/to/param" -> array of the visual branch (embedder and per-block
  visual keys/values) for adding visual conditioning to a text-only model. The visual
  value projection starts at zero: the model first predicts what the text-only one did.
  """
  if not cfg.visual_dim:
    raise ValueError("new_visual_branch: config.model.visual_dim must be > 0")

  @jax.jit  # One compiled init instead of one per parameter shape.
  def init():
    rngs = nnx.Rngs(seed)
    with nnx.use_eager_sharding(False):
      embed = VisualEmbedder(cfg, rngs)
    out = {
      f"visual_embed/{'/'.join(str(k) for k in key)}": v[...]
      for key, v in nnx.to_flat_state(nnx.state(embed, nnx.Param))
    }
    shapes = block_param_specs(cfg)
    for name in ("ca_vkv", "ca_vkv_bias", "ca_vk_norm"):
      shape, _, fn = shapes[name]
      out[f"blocks/{name}"] = per_layer_init(fn)(
        rngs.params(), (cfg.num_layers, *shape), jnp.dtype(cfg.param_dtype)
      )
    out["blocks/ca_vkv"] = out["blocks/ca_vkv"].at[:, :, 1].set(0.0)  # [L, D, (k, v), H, K]
    out["blocks/ca_vkv_bias"] = out["blocks/ca_vkv_bias"].at[:, 1].set(0.0)
    return out

  return init()


def load_diffusers_wan(
  path: str,
  *,
  mesh: jax.sharding.Mesh | None = None,
  rules: Rules = DEFAULT_RULES,
  add_visual_dim: int = 0,
  seed: int = 0,
  **overrides: Any,
) -> VideoDiT:
  """A VideoDiT holding the weights of the diffusers model folder `path`.

  overrides: DiTConfig fields that do not change shapes (dtype, param_dtype, remat,
  scan_layers). With `mesh`, each weight is placed with its logical sharding (`rules`).
  add_visual_dim: start VideoAuteur's visual conditioning from a text-to-video checkpoint:
  adds a visual branch for tokens of this width (`new_visual_branch`, seeded by
  `seed`) that leaves the predictions unchanged until it is trained.
  """
  cfg = config_from_diffusers(read_hf_config(path), **overrides)
  if not add_visual_dim:
    return cast(VideoDiT, load_model(FAMILY, cfg, path, mesh=mesh, rules=rules))
  if cfg.visual_dim:
    raise ValueError(
      f"{path}: add_visual_dim is for text-to-video checkpoints; this one "
      f"has an image branch (image_dim={cfg.visual_dim})"
    )
  full = dataclasses.replace(cfg, visual_dim=add_visual_dim)
  return cast(
    VideoDiT,
    load_model(
      FAMILY, full, path, mesh=mesh, rules=rules, map_cfg=cfg, values=new_visual_branch(full, seed)
    ),
  )
