"""The model families `auteur convert` knows: one name map per family (used for import
and export alike), config.json <-> our config, and where a run's model keeps them.

  family          reference class (library)                 ours
  llama, qwen2    LlamaForCausalLM / Qwen2ForCausalLM (HF)  models/llm.LLM
  wan_dit         WanTransformer3DModel (diffusers)         models/dit.VideoDiT
  wan_vae         AutoencoderKLWan (diffusers)              models/vae.VideoVAE
  clip_vision     CLIPVisionModelWithProjection (HF)        models/vision.VisionTower
  siglip_vision   SiglipVisionModel (HF)                    models/vision.VisionTower
  clip_text       CLIPTextModelWithProjection (HF)          models/clip_text.ClipTextTower
  t5, umt5        T5EncoderModel / UMT5EncoderModel (HF)    models/text_encoder.T5Encoder
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from flax import nnx

from auteur_jax.convert import diffusers_vae, diffusers_wan, hf_llm, hf_text, hf_vision
from auteur_jax.convert.mapping import (HEADS_IN, HEADS_OUT, LINEAR, Map, Piece, flat,
                                        transpose)
from auteur_jax.convert.weights import WeightError

Shapes = Mapping[str, tuple[int, ...]]


@dataclasses.dataclass(frozen=True)
class Family:
  """What import / export need to know about one family."""

  name: str
  stem: str  # Weight file stem: "model" (transformers) or "diffusion_pytorch_model".
  kind: Callable[[Mapping[str, Any]], str]  # config.json -> its kind (model_type / class)
  kinds: tuple[str, ...]  # the kinds this family accepts
  from_hf: Callable[..., Any]  # (config.json dict, **overrides) -> our config
  to_hf: Callable[[Any], dict]  # our config -> config.json dict
  build: Callable[[Any], nnx.Module]
  pieces: Callable[[Any, Shapes, Shapes | None], list[Piece]]  # (cfg, ours, source)
  ignore: Callable[[str], bool] = lambda name: False  # source tensors nobody needs
  fresh: tuple[str, ...] = ()  # our parameters no checkpoint of the family has
  task: tuple[str, tuple[str, ...], Callable[[Any], Any]] | None = None
  # (config.task, where the run's model keeps this family, config -> our config)


# ----------------------------------------------------------------------- Llama / Qwen2


def _llm_pieces(cfg, ours: Shapes, source: Shapes | None) -> list[Piece]:
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
      m.pieces.append(Piece("lm_head", "lm_head.weight", (rows, w),
                            (("mean", v - rows), ("t", (1, 0))), (slice(None), slice(rows, v))))
  layer = "model.layers.{i}."
  m.stack("layers/attn_norm/scale", layer + "input_layernorm.weight", n)
  m.stack("layers/mlp_norm/scale", layer + "post_attention_layernorm.weight", n)
  for x in "qkv":
    m.stack(f"layers/attn/{x}", f"{layer}self_attn.{x}_proj.weight", n, HEADS_IN)
    if cfg.qkv_bias:
      m.stack(f"layers/attn/{x}_bias", f"{layer}self_attn.{x}_proj.bias", n,
              flat(lambda s: (s[0] * s[1],)))
  m.stack("layers/attn/o", layer + "self_attn.o_proj.weight", n, HEADS_OUT)
  for x in ("gate", "up", "down"):
    m.stack(f"layers/mlp/{x}", f"{layer}mlp.{x}_proj.weight", n, LINEAR)
  m.add("norm/scale", "model.norm.weight")
  return m.pieces


def _llm_to_hf(family: str) -> Callable[[Any], dict]:
  def to_hf(cfg) -> dict:
    rope = {"rope_type": "default", "rope_theta": cfg.rope_theta}
    if cfg.rope_scaling is not None:
      s = cfg.rope_scaling
      rope.update(rope_type="llama3", factor=s.factor, low_freq_factor=s.low_freq_factor,
                  high_freq_factor=s.high_freq_factor,
                  original_max_position_embeddings=s.original_max_position_embeddings)
    out = dict(model_type=family, vocab_size=cfg.vocab_size, hidden_size=cfg.width,
               intermediate_size=cfg.mlp_dim, num_hidden_layers=cfg.num_layers,
               num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_kv_heads,
               head_dim=cfg.head_dim, hidden_act="silu", rms_norm_eps=cfg.norm_eps,
               initializer_range=cfg.init_std, tie_word_embeddings=cfg.tie_embeddings,
               rope_parameters=rope, rope_theta=cfg.rope_theta,
               architectures=["LlamaForCausalLM" if family == "llama" else "Qwen2ForCausalLM"])
    if family == "llama":
      out.update(attention_bias=False, mlp_bias=False)
    return out
  return to_hf


# --------------------------------------------------------------------------- Wan DiT


def _dit_pieces(cfg, ours: Shapes, source: Shapes | None) -> list[Piece]:
  m = Map(ours)
  d, (pt, ph, pw) = cfg.width, cfg.patch_size
  m.add("patch_embed/kernel", "patch_embedding.weight",
        lambda s: ((d, cfg.in_channels, pt, ph, pw), (("t", (2, 3, 4, 1, 0)), ("r", s))))
  m.add("patch_embed/bias", "patch_embedding.bias")
  ce = "condition_embedder."
  pairs = {"time_fc1": ce + "time_embedder.linear_1", "time_fc2": ce + "time_embedder.linear_2",
           "text_fc1": ce + "text_embedder.linear_1", "text_fc2": ce + "text_embedder.linear_2",
           "head": "proj_out"}
  if cfg.visual_dim:
    ie = ce + "image_embedder."
    pairs.update({"visual_embed/fc1": ie + "ff.net.0.proj", "visual_embed/fc2": ie + "ff.net.2"})
    for x in ("norm1", "norm2"):
      m.add(f"visual_embed/{x}_scale", f"{ie}{x}.weight")
      m.add(f"visual_embed/{x}_bias", f"{ie}{x}.bias")
    if cfg.visual_pos_len:
      m.add("visual_embed/pos_embed", ie + "pos_embed", flat(lambda s: (1, *s)))
  for x, theirs in pairs.items():
    m.add(f"{x}/kernel", theirs + ".weight", LINEAR)
    m.add(f"{x}/bias", theirs + ".bias")
  m.add("time_proj", ce + "time_proj.weight", lambda s: ((6 * d, d), (("t", (1, 0)), ("r", s))))
  m.add("time_proj_bias", ce + "time_proj.bias", flat(lambda s: (6 * d,)))
  m.add("head_modulation", "scale_shift_table", flat(lambda s: (1, *s)))
  n, b = cfg.num_layers, "blocks.{i}."
  vec = flat(lambda s: (s[0] * s[1],))  # [H*K] -> ours [H, K]
  fused = {"sa_qkv": ["attn1.to_q", "attn1.to_k", "attn1.to_v"], "ca_q": ["attn2.to_q"],
           "ca_kv": ["attn2.to_k", "attn2.to_v"]}
  if cfg.visual_dim:
    fused["ca_vkv"] = ["attn2.add_k_proj", "attn2.add_v_proj"]
    m.stack("blocks/ca_vk_norm", b + "attn2.norm_added_k.weight", n, vec)
  for x, names in fused.items():
    for j, theirs in enumerate(names):
      m.stack(f"blocks/{x}", f"{b}{theirs}.weight", n, HEADS_IN, at=(slice(None), j))
      m.stack(f"blocks/{x}_bias", f"{b}{theirs}.bias", n, vec, at=(j,))
  m.stack("blocks/modulation", b + "scale_shift_table", n, flat(lambda s: (1, *s)))
  for x, theirs in (("sa", "attn1."), ("ca", "attn2.")):
    m.stack(f"blocks/{x}_q_norm", f"{b}{theirs}norm_q.weight", n, vec)
    m.stack(f"blocks/{x}_k_norm", f"{b}{theirs}norm_k.weight", n, vec)
    m.stack(f"blocks/{x}_out", f"{b}{theirs}to_out.0.weight", n, HEADS_OUT)
    m.stack(f"blocks/{x}_out_bias", f"{b}{theirs}to_out.0.bias", n)
  if cfg.cross_attn_norm:
    m.stack("blocks/ca_norm_scale", b + "norm2.weight", n)
    m.stack("blocks/ca_norm_bias", b + "norm2.bias", n)
  for x, theirs in (("ffn_up", "ffn.net.0.proj"), ("ffn_down", "ffn.net.2")):
    m.stack(f"blocks/{x}", f"{b}{theirs}.weight", n, LINEAR)
    m.stack(f"blocks/{x}_bias", f"{b}{theirs}.bias", n)
  return m.pieces


def _dit_to_hf(cfg) -> dict:
  return dict(_class_name="WanTransformer3DModel", patch_size=list(cfg.patch_size),
              num_attention_heads=cfg.num_heads, attention_head_dim=cfg.head_dim,
              in_channels=cfg.in_channels, out_channels=cfg.out_channels,
              text_dim=cfg.text_dim, freq_dim=cfg.freq_dim, ffn_dim=cfg.ffn_dim,
              num_layers=cfg.num_layers, cross_attn_norm=cfg.cross_attn_norm,
              qk_norm="rms_norm_across_heads", eps=cfg.eps, image_dim=cfg.visual_dim or None,
              added_kv_proj_dim=cfg.width if cfg.visual_dim else None,
              rope_max_seq_len=cfg.rope_max_len, pos_embed_seq_len=cfg.visual_pos_len or None)


# --------------------------------------------------------------------------- Wan VAE

_CONV3D = transpose(2, 3, 4, 1, 0)  # torch [O, I, kt, kh, kw] -> [kt, kh, kw, I, O]
def _pointwise(ones: int = 3):  # torch conv [O, I, 1, 1(, 1)] -> [I, O]
  return lambda s: ((s[1], s[0], *(1,) * ones), (("r", (s[1], s[0])), ("t", (1, 0))))


_POINTWISE = _pointwise()
_TIME = lambda s: ((s[2], s[1], s[0], 1, 1), (("r", (s[2], s[1], s[0])), ("t", (2, 1, 0))))


def _vae_pieces(cfg, ours: Shapes, source: Shapes | None) -> list[Piece]:
  m = Map(ours)

  def conv(x, theirs, kind=_CONV3D):
    m.add(f"{x}/kernel", f"{theirs}.weight", kind)
    m.add(f"{x}/bias", f"{theirs}.bias")

  def norm(x, theirs, ones=3):  # gamma [C, 1, 1(, 1)]
    m.add(f"{x}/scale", f"{theirs}.gamma", flat(lambda s: (*s, *(1,) * ones)))

  def resblock(x, theirs):
    for k in ("norm1", "norm2"):
      norm(f"{x}/{k}", f"{theirs}.{k}")
    for k in ("conv1", "conv2"):
      conv(f"{x}/{k}", f"{theirs}.{k}")
    if m.has(f"{x}/shortcut/kernel"):
      conv(f"{x}/shortcut", f"{theirs}.conv_shortcut", _POINTWISE)

  def mid(x, theirs):
    resblock(f"{x}/res0", f"{theirs}.resnets.0")
    resblock(f"{x}/res1", f"{theirs}.resnets.1")
    a = f"{theirs}.attentions.0"
    norm(f"{x}/attn/norm", f"{a}.norm", ones=2)
    conv(f"{x}/attn/qkv", f"{a}.to_qkv", _pointwise(2))
    conv(f"{x}/attn/proj", f"{a}.proj", _pointwise(2))

  def resample(x, theirs):
    m.add(f"{x}/conv_kernel", f"{theirs}.resample.1.weight", transpose(2, 3, 1, 0))
    m.add(f"{x}/conv_bias", f"{theirs}.resample.1.bias")
    if m.has(f"{x}/time_kernel"):
      m.add(f"{x}/time_kernel", f"{theirs}.time_conv.weight", _TIME)
      m.add(f"{x}/time_bias", f"{theirs}.time_conv.bias")

  last = len(cfg.dim_mult) - 1
  conv("encoder/conv_in", "encoder.conv_in")
  k = 0  # diffusers numbers the encoder's residual blocks and resamplers in one list.
  for i in range(len(cfg.dim_mult)):
    for j in range(cfg.num_res_blocks):
      resblock(f"encoder/levels/{i}/blocks/{j}", f"encoder.down_blocks.{k}")
      k += 1
    if i != last:
      resample(f"encoder/levels/{i}/resample", f"encoder.down_blocks.{k}")
      k += 1
  mid("encoder/mid", "encoder.mid_block")
  norm("encoder/norm_out", "encoder.norm_out")
  conv("encoder/conv_out", "encoder.conv_out")
  conv("quant_conv", "quant_conv", _POINTWISE)
  conv("post_quant_conv", "post_quant_conv", _POINTWISE)
  conv("decoder/conv_in", "decoder.conv_in")
  mid("decoder/mid", "decoder.mid_block")
  for i in range(len(cfg.dim_mult)):
    for j in range(cfg.num_res_blocks + 1):
      resblock(f"decoder/levels/{i}/blocks/{j}", f"decoder.up_blocks.{i}.resnets.{j}")
    if i != last:
      resample(f"decoder/levels/{i}/resample", f"decoder.up_blocks.{i}.upsamplers.0")
  norm("decoder/norm_out", "decoder.norm_out")
  conv("decoder/conv_out", "decoder.conv_out")
  return m.pieces


def _vae_to_hf(cfg) -> dict:
  out = dict(_class_name="AutoencoderKLWan", base_dim=cfg.base_dim,
             decoder_base_dim=cfg.decoder_base_dim or None, z_dim=cfg.z_dim,
             dim_mult=list(cfg.dim_mult), num_res_blocks=cfg.num_res_blocks, attn_scales=[],
             temperal_downsample=list(cfg.temporal_downsample), dropout=0.0,
             in_channels=cfg.in_channels, out_channels=cfg.out_channels)
  if cfg.latents_mean:
    out.update(latents_mean=list(cfg.latents_mean), latents_std=list(cfg.latents_std))
  return out


# ----------------------------------------------------------- CLIP / SigLIP vision + text


def _blocks(m: Map, prefix: str, n: int) -> None:
  """HF pre-LN encoder layers `{prefix}.layers.i.*` -> models/vit_blocks.EncoderStack."""
  layer = prefix + ".layers.{i}."
  for x in ("1", "2"):
    m.stack(f"blocks/ln{x}_scale", f"{layer}layer_norm{x}.weight", n)
    m.stack(f"blocks/ln{x}_bias", f"{layer}layer_norm{x}.bias", n)
  for x in "qkv":
    m.stack(f"blocks/{x}", f"{layer}self_attn.{x}_proj.weight", n, HEADS_IN)
    m.stack(f"blocks/{x}_bias", f"{layer}self_attn.{x}_proj.bias", n,
            flat(lambda s: (s[0] * s[1],)))
  m.stack("blocks/o", layer + "self_attn.out_proj.weight", n, HEADS_OUT)
  m.stack("blocks/o_bias", layer + "self_attn.out_proj.bias", n)
  for x in ("fc1", "fc2"):
    m.stack(f"blocks/{x}", f"{layer}mlp.{x}.weight", n, LINEAR)
    m.stack(f"blocks/{x}_bias", f"{layer}mlp.{x}.bias", n)


def _vision_pieces(cfg, ours: Shapes, source: Shapes | None) -> list[Piece]:
  m = Map(ours)
  # transformers 5 writes SiglipVisionModel without the `vision_model.` prefix.
  bare = ("embeddings.patch_embedding.weight" in source if source is not None
          else cfg.family == "siglip")
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
  _blocks(m, p + "encoder", cfg.depth)
  if cfg.family == "clip":
    m.add("class_embedding", e + "class_embedding")
    if cfg.projection_dim:
      m.add("projection", "visual_projection.weight", LINEAR)
    return m.pieces
  m.add("patch_bias", e + "patch_embedding.bias")
  h, d = p + "head.", cfg.width
  m.add("head_attn/probe", h + "probe", flat(lambda s: (1, *s)))
  for i, x in enumerate("qkv"):
    rows = slice(i * d, (i + 1) * d)
    m.add(f"head_attn/{x}", h + "attention.in_proj_weight", HEADS_IN, take=(rows,),
          full=(3 * d, d))
    m.add(f"head_attn/{x}_bias", h + "attention.in_proj_bias", flat(lambda s: (s[0] * s[1],)),
          take=(rows,), full=(3 * d,))
  m.add("head_attn/o", h + "attention.out_proj.weight", HEADS_OUT)
  m.add("head_attn/o_bias", h + "attention.out_proj.bias")
  m.add("head_norm/scale", h + "layernorm.weight")
  m.add("head_norm/bias", h + "layernorm.bias")
  for x in ("fc1", "fc2"):
    m.add(f"head_mlp/{x}", f"{h}mlp.{x}.weight", LINEAR)
    m.add(f"head_mlp/{x}_bias", f"{h}mlp.{x}.bias")
  return m.pieces


def _vision_to_hf(cfg) -> dict:
  out = dict(hidden_size=cfg.width, intermediate_size=cfg.mlp_dim,
             num_hidden_layers=cfg.depth, num_attention_heads=cfg.num_heads,
             image_size=cfg.image_size, patch_size=cfg.patch_size, hidden_act=cfg.act,
             layer_norm_eps=cfg.eps, num_channels=3)
  if cfg.family == "clip":
    return dict(out, model_type="clip_vision_model", projection_dim=cfg.projection_dim,
                architectures=["CLIPVisionModelWithProjection"])
  return dict(out, model_type="siglip_vision_model", vision_use_head=True,
              architectures=["SiglipVisionModel"])


def _clip_text_pieces(cfg, ours: Shapes, source: Shapes | None) -> list[Piece]:
  m = Map(ours)
  t = "text_model."
  m.add("token_embedding", t + "embeddings.token_embedding.weight")
  m.add("pos_embedding", t + "embeddings.position_embedding.weight")
  _blocks(m, t + "encoder", cfg.depth)
  m.add("final_norm_scale", t + "final_layer_norm.weight")
  m.add("final_norm_bias", t + "final_layer_norm.bias")
  if cfg.projection_dim:
    m.add("projection", "text_projection.weight", LINEAR)
  return m.pieces


def _clip_text_to_hf(cfg) -> dict:
  return dict(model_type="clip_text_model", architectures=["CLIPTextModelWithProjection"],
              vocab_size=cfg.vocab_size, hidden_size=cfg.width, intermediate_size=cfg.mlp_dim,
              num_hidden_layers=cfg.depth, num_attention_heads=cfg.num_heads,
              max_position_embeddings=cfg.max_len, projection_dim=cfg.projection_dim,
              hidden_act=cfg.act, layer_norm_eps=cfg.eps, eos_token_id=cfg.eos_token_id)


# ------------------------------------------------------------------------- T5 / umT5


def _t5_pieces(cfg, ours: Shapes, source: Shapes | None) -> list[Piece]:
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
  m.stack("rel_bias", f"{b}{a}relative_attention_bias.weight",
          n if cfg.per_layer_bias else 1)  # T5: block 0's table only.
  m.add("final_norm", "encoder.final_layer_norm.weight")
  return m.pieces


def _t5_to_hf(family: str) -> Callable[[Any], dict]:
  def to_hf(cfg) -> dict:
    act = "gelu" if cfg.gated and cfg.act == "gelu_new" else cfg.act
    return dict(model_type=family, vocab_size=cfg.vocab_size, d_model=cfg.width,
                d_kv=cfg.head_dim, num_heads=cfg.num_heads, d_ff=cfg.mlp_dim,
                num_layers=cfg.depth, relative_attention_num_buckets=cfg.num_buckets,
                relative_attention_max_distance=cfg.max_distance,
                feed_forward_proj=("gated-" if cfg.gated else "") + act,
                dense_act_fn=cfg.act, is_gated_act=cfg.gated,
                layer_norm_epsilon=cfg.eps, is_encoder_decoder=False,
                architectures=["T5EncoderModel" if family == "t5" else "UMT5EncoderModel"])
  return to_hf


# -------------------------------------------------------------------------- registry


def _model_type(hf: Mapping[str, Any]) -> str:
  return hf.get("model_type", "")


def _class_name(hf: Mapping[str, Any]) -> str:
  return hf.get("_class_name", "")


def _run_llm(config):
  from auteur_jax.models.director import DirectorConfig
  return DirectorConfig.from_config(config.model.to_dict()).llm


def _from(cls_path: str, key: str | None = None) -> Callable[[Any], Any]:
  def get(config):
    module, name = cls_path.split(":")
    import importlib
    cls = getattr(importlib.import_module(module), name)
    sub = config.model if key is None else config.model[key]
    return cls.from_dict(sub.to_dict() if hasattr(sub, "to_dict") else sub)
  return get


def _build(cls_path: str) -> Callable[[Any], nnx.Module]:
  def build(cfg) -> nnx.Module:
    module, name = cls_path.split(":")
    import importlib
    return getattr(importlib.import_module(module), name)(cfg, rngs=nnx.Rngs(0))
  return build


def _vision_from_hf(family: str):
  def from_hf(hf, **overrides):
    cfg = hf_vision.config_from_hf(hf, **overrides)
    if cfg.family != family:
      raise WeightError(f"config.json: a {cfg.family} model, not {family}")
    return cfg
  return from_hf


_LLM = dict(stem="model", kind=_model_type, from_hf=hf_llm.llm_config_from_hf,
            build=_build("auteur_jax.models.llm:LLM"), pieces=_llm_pieces,
            ignore=lambda n: n.endswith("rotary_emb.inv_freq") or n == "lm_head.weight",
            task=("director", ("model", "llm"), _run_llm))
_VISION = dict(stem="model", kind=_model_type, build=_build("auteur_jax.models.vision:VisionTower"),
               pieces=_vision_pieces, to_hf=_vision_to_hf, fresh=("resampler", "resampler_norm"),
               ignore=lambda n: n.startswith(hf_vision._OTHER_HALF),
               task=("clip", ("model", "vision"),
                     _from("auteur_jax.models.vision:VisionConfig", "vision")))
_T5 = dict(stem="model", kind=_model_type, from_hf=hf_text.t5_config_from_hf,
           build=_build("auteur_jax.models.text_encoder:T5Encoder"), pieces=_t5_pieces,
           ignore=lambda n: n.startswith(("decoder.", "lm_head.")) or
           n == "encoder.embed_tokens.weight",
           task=("text_encoder", ("model",), _from("auteur_jax.models.text_encoder:T5Config")))

FAMILIES: dict[str, Family] = {f.name: f for f in [
    Family("llama", kinds=("llama",), to_hf=_llm_to_hf("llama"), **_LLM),
    Family("qwen2", kinds=("qwen2",), to_hf=_llm_to_hf("qwen2"), **_LLM),
    Family("wan_dit", "diffusion_pytorch_model", _class_name, ("WanTransformer3DModel",),
           diffusers_wan.config_from_diffusers, _dit_to_hf,
           _build("auteur_jax.models.dit:VideoDiT"), _dit_pieces,
           ignore=lambda n: n.endswith(diffusers_wan._IGNORED_SUFFIXES),
           task=("dit", ("model", "dit"), _from("auteur_jax.models.dit:DiTConfig"))),
    Family("wan_vae", "diffusion_pytorch_model", _class_name, ("AutoencoderKLWan",),
           diffusers_vae.config_from_diffusers, _vae_to_hf,
           _build("auteur_jax.models.vae:VideoVAE"), _vae_pieces,
           task=("vae", ("model",), _from("auteur_jax.models.vae:VAEConfig"))),
    Family("clip_vision", kinds=("clip_vision_model", "clip"), from_hf=_vision_from_hf("clip"),
           **_VISION),
    Family("siglip_vision", kinds=("siglip_vision_model", "siglip"),
           from_hf=_vision_from_hf("siglip"), **_VISION),
    Family("clip_text", "model", _model_type, ("clip_text_model", "clip"),
           hf_text.clip_config_from_hf, _clip_text_to_hf,
           _build("auteur_jax.models.clip_text:ClipTextTower"), _clip_text_pieces,
           ignore=lambda n: n.startswith(("vision_model.", "visual_projection", "logit_scale",
                                          "logit_bias")),
           task=("clip", ("model", "text"), _from("auteur_jax.models.clip_text:TextConfig",
                                                  "text"))),
    Family("t5", kinds=("t5", "mt5"), to_hf=_t5_to_hf("t5"), **_T5),
    Family("umt5", kinds=("umt5",), to_hf=_t5_to_hf("umt5"), **_T5),
]}


def get(name: str) -> Family:
  if name not in FAMILIES:
    raise WeightError(f"unknown family {name!r}; expected one of {sorted(FAMILIES)}")
  return FAMILIES[name]


def check_kind(family: Family, hf: Mapping[str, Any], where: str) -> None:
  """Refuses a config.json of another family (e.g. --family qwen2 on a Llama folder)."""
  kind = family.kind(hf)
  if kind not in family.kinds:
    what = kind or hf.get("model_type") or hf.get("_class_name") or "unknown"
    raise WeightError(f"{where}/config.json: this is a {what!r} model, not "
                      f"--family {family.name} (which reads {list(family.kinds)})")
