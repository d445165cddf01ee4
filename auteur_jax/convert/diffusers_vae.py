"""diffusers `AutoencoderKLWan` (Wan 2.1 layout) weights <-> `models.vae.VideoVAE`.

Name map (`_pieces`, read by `load_diffusers_vae` and `auteur convert`; diffusers ->
ours), per tensor, with the transposes torch's NCTHW kernels need ([C_out, C_in, kt, kh,
kw] -> [kt, kh, kw, C_in, C_out]):

  {enc,dec}oder.conv_in / conv_out            -> {enc,dec}oder/conv_{in,out}/{kernel,bias}
  encoder.down_blocks.k (residual)            -> encoder/levels/i/blocks/j/...
  encoder.down_blocks.k.resample.1 / time_conv -> encoder/levels/i/resample/{conv,time}_*
  decoder.up_blocks.i.resnets.j               -> decoder/levels/i/blocks/j/...
  decoder.up_blocks.i.upsamplers.0.*          -> decoder/levels/i/resample/...
  *.mid_block.resnets.{0,1} / attentions.0    -> */mid/res{0,1} / mid/attn
  norm*.gamma [C, 1, 1(, 1)]                  -> norm*/scale [C]
  conv_shortcut, quant_conv, post_quant_conv  -> Pointwise kernels [C_in, C_out]

The Wan 2.2 residual layout (`is_residual`), `patch_size` and attention inside the
levels (`attn_scales`) are refused with a message; Wan 2.1 has none of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import jax
from flax import nnx

from auteur_jax.checkpoint.errors import WeightError
from auteur_jax.convert.mapping import (
  Family,
  Map,
  Piece,
  Shapes,
  class_name,
  flat,
  from_run,
  load_model,
  transpose,
)
from auteur_jax.convert.safetensors_io import read_hf_config
from auteur_jax.models.vae import WAN21_LATENTS_MEAN, VAEConfig, VideoVAE
from auteur_jax.parallel.rules import DEFAULT_RULES, Rules


def config_from_diffusers(config: Mapping[str, Any], **overrides: Any) -> VAEConfig:
  """VAEConfig for a diffusers AutoencoderKLWan config.json; `overrides` win."""
  cls = config.get("_class_name", "AutoencoderKLWan")
  if cls != "AutoencoderKLWan":
    raise WeightError(f"config.json: _class_name is {cls!r}, expected 'AutoencoderKLWan'")
  for key, why in (
    ("is_residual", "the Wan 2.2 residual layout"),
    ("patch_size", "patchified input"),
    ("attn_scales", "attention in levels"),
  ):
    if config.get(key):
      raise WeightError(
        f"config.json: {key}={config[key]!r}: {why} is not supported (Wan 2.1 layout only)"
      )
  mean = config.get("latents_mean")
  fields = dict(
    base_dim=config.get("base_dim", 96),
    decoder_base_dim=config.get("decoder_base_dim") or 0,
    z_dim=config.get("z_dim", 16),
    dim_mult=tuple(config.get("dim_mult", (1, 2, 4, 4))),
    num_res_blocks=config.get("num_res_blocks", 2),
    temporal_downsample=tuple(
      bool(t) for t in config.get("temperal_downsample", (False, True, True))
    ),
    in_channels=config.get("in_channels", 3),
    out_channels=config.get("out_channels", 3),
  )
  if mean is not None:
    fields["latents_mean"] = tuple(float(v) for v in mean)
    fields["latents_std"] = tuple(float(v) for v in config.get("latents_std", ()))
  elif fields["z_dim"] != len(WAN21_LATENTS_MEAN):  # diffusers' defaults fit z_dim 16 only.
    fields["latents_mean"] = fields["latents_std"] = ()
  fields.update(overrides)
  cfg = VAEConfig(**fields)
  try:
    cfg.validate()
  except ValueError as e:
    raise WeightError(f"config.json: {e}") from None
  return cfg


_CONV3D = transpose(2, 3, 4, 1, 0)  # torch [O, I, kt, kh, kw] -> [kt, kh, kw, I, O]


def _pointwise(ones: int = 3):  # torch conv [O, I, 1, 1(, 1)] -> [I, O]
  return lambda s: ((s[1], s[0], *(1,) * ones), (("r", (s[1], s[0])), ("t", (1, 0))))


_POINTWISE = _pointwise()
# time_conv [O, I, 3, 1, 1] -> [3, I, O]
_TIME = lambda s: ((s[2], s[1], s[0], 1, 1), (("r", (s[2], s[1], s[0])), ("t", (2, 1, 0))))


def _pieces(cfg: VAEConfig, ours: Shapes, source: Shapes | None) -> list[Piece]:
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


def _to_hf(cfg: VAEConfig) -> dict:
  out = dict(
    _class_name="AutoencoderKLWan",
    base_dim=cfg.base_dim,
    decoder_base_dim=cfg.decoder_base_dim or None,
    z_dim=cfg.z_dim,
    dim_mult=list(cfg.dim_mult),
    num_res_blocks=cfg.num_res_blocks,
    attn_scales=[],
    temperal_downsample=list(cfg.temporal_downsample),
    dropout=0.0,
    in_channels=cfg.in_channels,
    out_channels=cfg.out_channels,
  )
  if cfg.latents_mean:
    out.update(latents_mean=list(cfg.latents_mean), latents_std=list(cfg.latents_std))
  return out


FAMILY = Family(
  "wan_vae",
  VAEConfig,
  "diffusion_pytorch_model",
  class_name,
  ("AutoencoderKLWan",),
  config_from_diffusers,
  _to_hf,
  lambda cfg: VideoVAE(cfg, rngs=nnx.Rngs(0)),
  _pieces,
  task=("vae", ("model",), from_run(VAEConfig)),
)


def load_diffusers_vae(
  path: str,
  *,
  mesh: jax.sharding.Mesh | None = None,
  rules: Rules = DEFAULT_RULES,
  **overrides: Any,
) -> VideoVAE:
  """A VideoVAE holding the weights of the diffusers model folder `path`.

  overrides: VAEConfig fields that do not change shapes (dtype, param_dtype, conv_impl).
  """
  cfg = config_from_diffusers(read_hf_config(path), **overrides)
  return cast(VideoVAE, load_model(FAMILY, cfg, path, mesh=mesh, rules=rules))
