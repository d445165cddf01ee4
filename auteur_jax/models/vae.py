"""Wan 2.1-style causal 3-D convolutional VAE (diffusers `AutoencoderKLWan` layout).

Video [B, T, H, W, 3] in [-1, 1] with T = 1 + 4k -> latents [B, 1 + k, H/8, W/8, z_dim]
(8x spatial, 4x temporal compression with the first frame kept alone) -> video. Single
images are T = 1. Channels last throughout.

Every temporal operation is causal, so a video can run as a stream of chunks: the first
("head") chunk starts the stream, later chunks carry per-layer state (each causal conv
keeps its last kt - 1 input frames, each temporal resampler its last frame(s)). Running
chunk by chunk gives the same result as the whole clip while holding one chunk's
activations; `encode` / `decode` take `chunk_frames` for that. Chunk lengths: encoder
head 1 + 4a frames, then 4b; decoder head 1 + a latent frames, then b.

Parameters carry logical axes (`conv_in`, `conv_out`, `norm`). Kernels: 3-D
[kt, kh, kw, C_in, C_out], 2-D [kh, kw, C_in, C_out], temporal [kt, C_in, C_out],
pointwise [C_in, C_out]. The diffusers converter is `convert/diffusers_vae.py`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from auteur_jax.config_sections import from_section
from auteur_jax.models import vae_ops as ops
from auteur_jax.models.vae_blocks import (
  CausalConv3d,
  MidBlock,
  Pointwise,
  Resample,
  ResBlock,
  Stream,
  WanRMSNorm,
)

# Wan 2.1's per-channel latent statistics (16 channels), used to normalise latents.
WAN21_LATENTS_MEAN = (
  -0.7571,
  -0.7089,
  -0.9113,
  0.1075,
  -0.1745,
  0.9653,
  -0.1517,
  1.5508,
  0.4134,
  -0.0715,
  0.5517,
  -0.3632,
  -0.1922,
  -0.9497,
  0.2503,
  -0.2921,
)
WAN21_LATENTS_STD = (
  2.8184,
  1.4541,
  2.3275,
  2.6558,
  1.2196,
  1.7708,
  2.6052,
  2.0743,
  3.2687,
  2.1526,
  2.8652,
  1.5579,
  1.6382,
  1.1253,
  2.8251,
  1.9160,
)


@dataclasses.dataclass(frozen=True)
class VAEConfig:
  """Hyper-parameters; names follow diffusers' AutoencoderKLWan where they exist.

  dim_mult: channel multiples of base_dim per level; every level but the last halves
    H and W, and temporal_downsample[i] also halves time (first frame kept alone).
  latents_mean / latents_std: per-channel statistics for `normalize` (empty: identity).
  conv_impl: how 3x3 causal convs run (see models/vae_ops.py): auto | fold | taps | xla3d.
  """

  base_dim: int = 96
  decoder_base_dim: int = 0  # 0: same as base_dim.
  z_dim: int = 16
  dim_mult: tuple[int, ...] = (1, 2, 4, 4)
  num_res_blocks: int = 2
  temporal_downsample: tuple[bool, ...] = (False, True, True)
  in_channels: int = 3
  out_channels: int = 3
  latents_mean: tuple[float, ...] = WAN21_LATENTS_MEAN
  latents_std: tuple[float, ...] = WAN21_LATENTS_STD
  conv_impl: str = "auto"
  dtype: str = "float32"
  param_dtype: str = "float32"

  @classmethod
  def from_dict(cls, d: Mapping[str, Any], path: str = "config.model") -> VAEConfig:
    """From the section `d` at `path` (ConfigDict or dict); unknown keys and bad values
    raise ConfigError."""
    return from_section(cls, d, path)

  def validate(self) -> None:
    if len(self.temporal_downsample) != len(self.dim_mult) - 1:
      raise ValueError(
        f"config.model.temporal_downsample: expected {len(self.dim_mult) - 1} "
        f"flags (one per level but the last), got {self.temporal_downsample}"
      )
    for k in ("latents_mean", "latents_std"):
      v = getattr(self, k)
      if v and len(v) != self.z_dim:
        raise ValueError(f"config.model.{k}: expected z_dim={self.z_dim} values, got {len(v)}")
    if self.conv_impl not in ops.CONV_IMPLS:
      raise ValueError(
        f"config.model.conv_impl: expected one of {ops.CONV_IMPLS}, got {self.conv_impl!r}"
      )
    for name in ("dtype", "param_dtype"):
      try:
        jnp.dtype(getattr(self, name))
      except TypeError:
        raise ValueError(f"config.model.{name}: not a dtype: {getattr(self, name)!r}") from None

  @property
  def spatial_factor(self) -> int:
    return 2 ** (len(self.dim_mult) - 1)

  @property
  def temporal_factor(self) -> int:
    return 2 ** sum(self.temporal_downsample)

  def latent_frames(self, frames: int) -> int:
    """Latent frames of a `frames`-frame video (frames = 1 + temporal_factor * k)."""
    return 1 + (frames - 1) // self.temporal_factor


class _Level(nnx.Module):
  """Residual blocks then an optional resampler."""

  def __init__(
    self,
    dims: list[tuple[int, int]],
    resample: str | None,
    cfg: VAEConfig,
    rngs: nnx.Rngs,
    up_out: int | None = None,
  ):
    pd, impl = cfg.param_dtype, cfg.conv_impl
    self.blocks = nnx.List([ResBlock(i, o, impl, pd, rngs) for i, o in dims])
    c = dims[-1][1]
    self.resample = Resample(c, resample, pd, rngs, up_out) if resample else None

  def __call__(self, x: jax.Array, s: Stream) -> jax.Array:
    for blk in self.blocks:
      x = blk(x, s)
    return self.resample(x, s) if self.resample is not None else x


class Encoder(nnx.Module):
  """Video [B, T, H, W, C_in] -> [B, T', H', W', 2 * z_dim] (before quant_conv)."""

  def __init__(self, cfg: VAEConfig, rngs: nnx.Rngs):
    pd, impl = cfg.param_dtype, cfg.conv_impl
    dims = [cfg.base_dim * m for m in (1, *cfg.dim_mult)]
    self.conv_in = CausalConv3d(cfg.in_channels, dims[0], 3, impl, pd, rngs)
    levels = []
    last = len(cfg.dim_mult) - 1
    for i, (cin, cout) in enumerate(zip(dims[:-1], dims[1:])):
      blocks = [(cin if j == 0 else cout, cout) for j in range(cfg.num_res_blocks)]
      mode = None if i == last else ("down3d" if cfg.temporal_downsample[i] else "down2d")
      levels.append(_Level(blocks, mode, cfg, rngs))
    self.levels = nnx.List(levels)
    self.mid = MidBlock(dims[-1], impl, pd, rngs)
    self.norm_out = WanRMSNorm(dims[-1], pd, rngs)
    self.conv_out = CausalConv3d(dims[-1], 2 * cfg.z_dim, 3, impl, pd, rngs)

  def __call__(self, x: jax.Array, s: Stream) -> jax.Array:
    x = self.conv_in(x, s)
    for level in self.levels:
      x = level(x, s)
    x = self.mid(x, s)
    return self.conv_out(jax.nn.silu(self.norm_out(x)), s)


class Decoder(nnx.Module):
  """Latents [B, T', H', W', z_dim] (after post_quant_conv) -> video [B, T, H, W, C_out]."""

  def __init__(self, cfg: VAEConfig, rngs: nnx.Rngs):
    pd, impl = cfg.param_dtype, cfg.conv_impl
    base = cfg.decoder_base_dim or cfg.base_dim
    mult = cfg.dim_mult
    dims = [base * m for m in (mult[-1], *mult[::-1])]
    up_temporal = cfg.temporal_downsample[::-1]
    self.conv_in = CausalConv3d(cfg.z_dim, dims[0], 3, impl, pd, rngs)
    self.mid = MidBlock(dims[0], impl, pd, rngs)
    levels = []
    last = len(mult) - 1
    for i, (cin, cout) in enumerate(zip(dims[:-1], dims[1:])):
      if i > 0:
        cin //= 2  # Wan 2.1: each upsampler halves the channels.
      blocks = [(cin if j == 0 else cout, cout) for j in range(cfg.num_res_blocks + 1)]
      mode = None if i == last else ("up3d" if up_temporal[i] else "up2d")
      levels.append(_Level(blocks, mode, cfg, rngs, up_out=cout // 2))
    self.levels = nnx.List(levels)
    self.norm_out = WanRMSNorm(dims[-1], pd, rngs)
    # RGB out (3 channels): no mesh axis divides it, so it is never split.
    self.conv_out = CausalConv3d(dims[-1], cfg.out_channels, 3, impl, pd, rngs, out_axis=None)

  def __call__(self, x: jax.Array, s: Stream) -> jax.Array:
    x = self.conv_in(x, s)
    x = self.mid(x, s)
    for level in self.levels:
      x = level(x, s)
    return self.conv_out(jax.nn.silu(self.norm_out(x)), s)


class VideoVAE(nnx.Module):
  """The causal video VAE. Inputs in [-1, 1]; see the module docstring for shapes."""

  def __init__(self, cfg: VAEConfig, *, rngs: nnx.Rngs):
    cfg.validate()
    self.cfg = cfg
    self.encoder = Encoder(cfg, rngs)
    self.quant_conv = Pointwise(2 * cfg.z_dim, 2 * cfg.z_dim, cfg.param_dtype, rngs)
    self.post_quant_conv = Pointwise(cfg.z_dim, cfg.z_dim, cfg.param_dtype, rngs)
    self.decoder = Decoder(cfg, rngs)

  # -- one chunk of a stream (pure functions of the inputs; jit these) -----------------

  def encode_chunk(
    self, video: jax.Array, state: list | None = None
  ) -> tuple[jax.Array, jax.Array, list]:
    """One chunk -> (mean, logvar [B, t', h, w, z_dim] float32, state for the next chunk).

    state None starts a stream (then the chunk has 1 + 4a frames, else 4b frames).
    """
    s = Stream(state)
    x = video.astype(jnp.dtype(self.cfg.dtype))
    h = self.quant_conv(self.encoder(x, s)).astype(jnp.float32)
    z = self.cfg.z_dim
    return h[..., :z], jnp.clip(h[..., z:], -30.0, 20.0), s.finish()

  def decode_chunk(self, latents: jax.Array, state: list | None = None) -> tuple[jax.Array, list]:
    """One chunk of latents -> (video in [-1, 1] float32, state for the next chunk)."""
    s = Stream(state)
    x = self.post_quant_conv(latents.astype(jnp.dtype(self.cfg.dtype)))
    y = self.decoder(x, s).astype(jnp.float32)
    return jnp.clip(y, -1.0, 1.0), s.finish()

  # -- helpers -------------------------------------------------------------------------

  def normalize(self, mean: jax.Array) -> jax.Array:
    """(latents - latents_mean) / latents_std per channel: the DiT's latent space."""
    if not self.cfg.latents_mean:
      return mean
    m = jnp.asarray(self.cfg.latents_mean, mean.dtype)
    return (mean - m) / jnp.asarray(self.cfg.latents_std, mean.dtype)

  def denormalize(self, latents: jax.Array) -> jax.Array:
    """Inverse of `normalize`."""
    if not self.cfg.latents_mean:
      return latents
    m = jnp.asarray(self.cfg.latents_mean, latents.dtype)
    return latents * jnp.asarray(self.cfg.latents_std, latents.dtype) + m


def inflate_image_weights(model: VideoVAE) -> None:
  """Makes a VAE trained on single images (T = 1) a video VAE that applies it frame by
  frame, in place, as the start of video training.

  On images a causal conv only uses its last temporal tap (the earlier ones see the
  zero padding) and the temporal resamplers never run, so those weights are still
  random. Here the earlier taps become zero and each temporal resampler passes the
  latest frame of its window through (down: a window's last frame; up: a frame copied
  to both of its output frames). A clip's first and last frames then reconstruct
  exactly as images do, the frames between as the latest frame of their window.
  """
  for _, m in nnx.iter_modules(model):
    if isinstance(m, CausalConv3d):
      m.kernel[...] = m.kernel[...].at[:-1].set(0)
    elif isinstance(m, Resample) and hasattr(m, "time_kernel"):
      kt, c, cout = m.time_kernel.shape
      eye = jnp.tile(jnp.eye(c, dtype=m.time_kernel.dtype), (1, cout // c))
      m.time_kernel[...] = jnp.zeros_like(m.time_kernel[...]).at[kt - 1].set(eye)
      m.time_bias[...] = jnp.zeros_like(m.time_bias[...])


def sample_posterior(mean: jax.Array, logvar: jax.Array, key: jax.Array) -> jax.Array:
  """z = mean + exp(logvar / 2) * eps."""
  return mean + jnp.exp(0.5 * logvar) * jax.random.normal(key, mean.shape, mean.dtype)


def kl_divergence(mean: jax.Array, logvar: jax.Array) -> jax.Array:
  """KL(N(mean, exp(logvar)) || N(0, 1)) summed over all but the batch axis -> [B]."""
  kl = 0.5 * (mean**2 + jnp.exp(logvar) - 1.0 - logvar)
  return jnp.sum(kl.reshape(kl.shape[0], -1), axis=-1)


# -- chunked streams -------------------------------------------------------------------


@functools.partial(jax.jit, static_argnums=0)
def _encode_step(graphdef, params, video, state):
  return nnx.merge(graphdef, params).encode_chunk(video, state)


@functools.partial(jax.jit, static_argnums=0)
def _decode_step(graphdef, params, latents, state):
  return nnx.merge(graphdef, params).decode_chunk(latents, state)


def _chunks(total: int, head: int, step: int) -> list[tuple[int, int]]:
  bounds, start = [(0, min(head, total))], min(head, total)
  while start < total:
    bounds.append((start, min(start + step, total)))
    start = bounds[-1][1]
  return bounds


def encode(
  model: VideoVAE, video: jax.Array, chunk_frames: int | None = None
) -> tuple[jax.Array, jax.Array]:
  """video [B, T, H, W, C] (T = 1 + 4k) -> (mean, logvar) [B, 1 + k, H/8, W/8, z_dim].

  chunk_frames: None runs the whole clip at once; else a multiple of the temporal
  factor: the head chunk is 1 + chunk_frames frames, later chunks chunk_frames each.
  """
  cfg = model.cfg
  _check_video(cfg, video)
  f = cfg.temporal_factor
  if chunk_frames is not None and (chunk_frames < f or chunk_frames % f):
    raise ValueError(f"chunk_frames must be a positive multiple of {f}, got {chunk_frames}")
  graphdef, params = nnx.split(model)
  t = video.shape[1]
  step = chunk_frames or t
  means, logvars, state = [], [], None
  for a, b in _chunks(t, 1 + step, step):
    mean, logvar, state = _encode_step(graphdef, params, video[:, a:b], state)
    means.append(mean)
    logvars.append(logvar)
  return jnp.concatenate(means, axis=1), jnp.concatenate(logvars, axis=1)


def decode(model: VideoVAE, latents: jax.Array, chunk_frames: int | None = None) -> jax.Array:
  """latents [B, T', h, w, z_dim] -> video [B, 1 + 4 (T' - 1), 8h, 8w, C] in [-1, 1].

  chunk_frames: latent frames per chunk after a head of 1 + chunk_frames; None = whole.
  """
  if latents.ndim != 5 or latents.shape[-1] != model.cfg.z_dim:
    raise ValueError(
      f"latents must be [B, T, h, w, z_dim={model.cfg.z_dim}], got {tuple(latents.shape)}"
    )
  if chunk_frames is not None and chunk_frames < 1:
    raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
  graphdef, params = nnx.split(model)
  t = latents.shape[1]
  step = chunk_frames or t
  outs, state = [], None
  for a, b in _chunks(t, 1 + step, step):
    out, state = _decode_step(graphdef, params, latents[:, a:b], state)
    outs.append(out)
  return jnp.concatenate(outs, axis=1)


def to_uint8(video: jax.Array) -> np.ndarray:
  """A decoded video in [-1, 1] (values beyond are clipped) -> uint8 frames on the host."""
  return np.asarray(jnp.round(jnp.clip(video + 1.0, 0.0, 2.0) * 127.5).astype(jnp.uint8))


def _check_video(cfg: VAEConfig, video: jax.Array) -> None:
  f, s = cfg.temporal_factor, cfg.spatial_factor
  if video.ndim != 5 or video.shape[-1] != cfg.in_channels:
    raise ValueError(f"video must be [B, T, H, W, C={cfg.in_channels}], got {tuple(video.shape)}")
  t, h, w = video.shape[1:4]
  if (t - 1) % f:
    raise ValueError(
      f"video has {t} frames; the VAE takes 1 + {f}k frames "
      f"(e.g. {1 + f * ((t - 1) // f)} or {1 + f * ((t - 1) // f + 1)})"
    )
  if h % s or w % s:
    raise ValueError(f"video frames are {h}x{w}; height and width must be multiples of {s}")
