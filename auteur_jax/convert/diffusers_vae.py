"""diffusers `AutoencoderKLWan` (Wan 2.1 layout) weights -> `models.vae.VideoVAE`.

Name map (diffusers -> ours), per tensor, with the transposes torch's NCTHW kernels
need ([C_out, C_in, kt, kh, kw] -> [kt, kh, kw, C_in, C_out]):

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
from typing import Any

import jax
import numpy as np
from flax import nnx

from auteur_jax.convert.diffusers_wan import open_checkpoint
from auteur_jax.convert.weights import Converted, SourceTensors, WeightError, load_into
from auteur_jax.models.vae import WAN21_LATENTS_MEAN, VAEConfig, VideoVAE
from auteur_jax.parallel.rules import DEFAULT_RULES, Rules


def config_from_diffusers(config: Mapping[str, Any], **overrides: Any) -> VAEConfig:
  """VAEConfig for a diffusers AutoencoderKLWan config.json; `overrides` win."""
  cls = config.get("_class_name", "AutoencoderKLWan")
  if cls != "AutoencoderKLWan":
    raise WeightError(f"config.json: _class_name is {cls!r}, expected 'AutoencoderKLWan'")
  for key, why in (("is_residual", "the Wan 2.2 residual layout"),
                   ("patch_size", "patchified input"), ("attn_scales", "attention in levels")):
    if config.get(key):
      raise WeightError(f"config.json: {key}={config[key]!r}: {why} is not supported "
                        "(Wan 2.1 layout only)")
  mean = config.get("latents_mean")
  fields = dict(
      base_dim=config.get("base_dim", 96), decoder_base_dim=config.get("decoder_base_dim") or 0,
      z_dim=config.get("z_dim", 16), dim_mult=tuple(config.get("dim_mult", (1, 2, 4, 4))),
      num_res_blocks=config.get("num_res_blocks", 2),
      temporal_downsample=tuple(bool(t) for t in config.get("temperal_downsample",
                                                            (False, True, True))),
      in_channels=config.get("in_channels", 3), out_channels=config.get("out_channels", 3))
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


def _conv3d(w: np.ndarray) -> np.ndarray:
  return w.transpose(2, 3, 4, 1, 0)


def _pointwise(w: np.ndarray) -> np.ndarray:
  """[C_out, C_in, 1, ...] -> [C_in, C_out]."""
  return w.reshape(w.shape[0], w.shape[1]).T


class _Map:
  """Accumulates ours <- theirs entries with their transforms."""

  def __init__(self, src: SourceTensors):
    self.src = src
    self.out: Converted = {}

  def put(self, ours: str, theirs: str, fn=lambda w: w) -> None:
    self.out[ours] = (fn(self.src.get(theirs)), theirs)

  def conv(self, ours: str, theirs: str, fn=_conv3d) -> None:
    self.put(f"{ours}/kernel", f"{theirs}.weight", fn)
    self.put(f"{ours}/bias", f"{theirs}.bias")

  def norm(self, ours: str, theirs: str) -> None:
    self.put(f"{ours}/scale", f"{theirs}.gamma", lambda w: w.reshape(-1))

  def resblock(self, ours: str, theirs: str) -> None:
    for n in ("norm1", "norm2"):
      self.norm(f"{ours}/{n}", f"{theirs}.{n}")
    for n in ("conv1", "conv2"):
      self.conv(f"{ours}/{n}", f"{theirs}.{n}")
    if f"{theirs}.conv_shortcut.weight" in self.src:
      self.conv(f"{ours}/shortcut", f"{theirs}.conv_shortcut", _pointwise)

  def mid(self, ours: str, theirs: str) -> None:
    self.resblock(f"{ours}/res0", f"{theirs}.resnets.0")
    self.resblock(f"{ours}/res1", f"{theirs}.resnets.1")
    a = f"{theirs}.attentions.0"
    self.norm(f"{ours}/attn/norm", f"{a}.norm")
    self.conv(f"{ours}/attn/qkv", f"{a}.to_qkv", _pointwise)
    self.conv(f"{ours}/attn/proj", f"{a}.proj", _pointwise)

  def resample(self, ours: str, theirs: str, temporal: bool) -> None:
    self.put(f"{ours}/conv_kernel", f"{theirs}.resample.1.weight",
             lambda w: w.transpose(2, 3, 1, 0))
    self.put(f"{ours}/conv_bias", f"{theirs}.resample.1.bias")
    if temporal:  # [C_out, C_in, 3, 1, 1] -> [3, C_in, C_out]
      self.put(f"{ours}/time_kernel", f"{theirs}.time_conv.weight",
               lambda w: w[:, :, :, 0, 0].transpose(2, 1, 0))
      self.put(f"{ours}/time_bias", f"{theirs}.time_conv.bias")


def convert_tensors(src: SourceTensors, cfg: VAEConfig) -> Converted:
  """Our parameter path -> (array, diffusers tensor name); see the module docstring."""
  m = _Map(src)
  last = len(cfg.dim_mult) - 1
  m.conv("encoder/conv_in", "encoder.conv_in")
  k = 0  # diffusers numbers the encoder's residual blocks and resamplers in one list.
  for i in range(len(cfg.dim_mult)):
    for j in range(cfg.num_res_blocks):
      m.resblock(f"encoder/levels/{i}/blocks/{j}", f"encoder.down_blocks.{k}")
      k += 1
    if i != last:
      m.resample(f"encoder/levels/{i}/resample", f"encoder.down_blocks.{k}",
                 cfg.temporal_downsample[i])
      k += 1
  m.mid("encoder/mid", "encoder.mid_block")
  m.norm("encoder/norm_out", "encoder.norm_out")
  m.conv("encoder/conv_out", "encoder.conv_out")
  m.conv("quant_conv", "quant_conv", _pointwise)
  m.conv("post_quant_conv", "post_quant_conv", _pointwise)
  m.conv("decoder/conv_in", "decoder.conv_in")
  m.mid("decoder/mid", "decoder.mid_block")
  up_temporal = cfg.temporal_downsample[::-1]
  for i in range(len(cfg.dim_mult)):
    for j in range(cfg.num_res_blocks + 1):
      m.resblock(f"decoder/levels/{i}/blocks/{j}", f"decoder.up_blocks.{i}.resnets.{j}")
    if i != last:
      m.resample(f"decoder/levels/{i}/resample", f"decoder.up_blocks.{i}.upsamplers.0",
                 up_temporal[i])
  m.norm("decoder/norm_out", "decoder.norm_out")
  m.conv("decoder/conv_out", "decoder.conv_out")
  src.check_all_used()
  return m.out


def load_diffusers_vae(path: str, *, mesh: jax.sharding.Mesh | None = None,
                       rules: Rules = DEFAULT_RULES, **overrides: Any) -> VideoVAE:
  """A VideoVAE holding the weights of the diffusers model folder `path`.

  overrides: VAEConfig fields that do not change shapes (dtype, param_dtype, conv_impl).
  """
  config, tensors = open_checkpoint(path)
  cfg = config_from_diffusers(config, **overrides)
  converted = convert_tensors(SourceTensors(tensors, path), cfg)
  return load_into(lambda: VideoVAE(cfg, rngs=nnx.Rngs(0)), converted, path, mesh=mesh,
                   rules=rules)
