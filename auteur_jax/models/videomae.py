"""VideoMAE video encoder (HF transformers `VideoMAEModel`, encoder only), for FVD features.

Videos [B, T, S, S, 3] (pixels normalised with ImageNet mean / std; see `normalize_video`)
-> tubelets of t x p x p (Conv3d with stride = kernel) -> N = (T / t) (S / p)^2 tokens of
width D, time-major then rows then columns -> + a fixed sinusoidal position table (not a
parameter) -> pre-LN blocks -> (LayerNorm on every token when use_mean_pooling is off).

Blocks: x + o(attn(LN1(x))), then x + fc2(act(fc1(LN2(x)))); q and v carry biases
(`qv_bias`), k never does (as in VideoMAE). The blocks' weights are stacked on a leading
`layers` axis and run with `lax.scan`.

`features` is the video's embedding: the mean over tokens of the last hidden state, then
`fc_norm` (a LayerNorm, eps 1e-5) when the weights come from a `VideoMAEForVideoClassification`
checkpoint that has one (HF's pooling before its classifier).
Weight names: convert/hf_videomae.py.
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
from auteur_jax.models.layers import param
from auteur_jax.models.vit_blocks import activation, attention, layer_norm, normal_init

# ImageNet pixel statistics (RGB, [0, 1]): what VideoMAE's video processor uses.
PIXEL_MEAN = (0.485, 0.456, 0.406)
PIXEL_STD = (0.229, 0.224, 0.225)
FC_NORM_EPS = 1e-5  # torch LayerNorm's default: HF builds fc_norm without layer_norm_eps.


@dataclasses.dataclass(frozen=True)
class VideoMAEConfig:
  """Encoder shape (HF names: hidden_size = width, num_hidden_layers = depth, ...).

  num_frames / image_size: the only input size the position table allows. qv_bias: q and
  v projections have biases. use_mean_pooling: HF's flag; when off the last hidden state
  goes through a final LayerNorm. fc_norm: the weights carry a classification head's
  fc_norm, applied by `features` after mean pooling.
  """

  image_size: int = 224
  patch_size: int = 16
  num_frames: int = 16
  tubelet_size: int = 2
  width: int = 768
  depth: int = 12
  num_heads: int = 12
  mlp_dim: int = 3072
  act: str = "gelu"
  eps: float = 1e-12
  qv_bias: bool = True
  use_mean_pooling: bool = True
  fc_norm: bool = False
  dtype: str = "float32"
  param_dtype: str = "float32"

  def __post_init__(self):
    self.validate()

  @classmethod
  def from_dict(cls, d: Mapping[str, Any], path: str = "config.model") -> VideoMAEConfig:
    """From the section `d` at `path`; unknown keys and bad values raise ConfigError."""
    return from_section(cls, d, path)

  @property
  def num_tokens(self) -> int:
    return (self.num_frames // self.tubelet_size) * (self.image_size // self.patch_size) ** 2

  def validate(self) -> None:
    activation(self.act)
    if self.width % self.num_heads:
      raise ValueError(f"width {self.width} is not divisible by num_heads {self.num_heads}")
    if self.image_size % self.patch_size or self.num_frames % self.tubelet_size:
      raise ValueError(
        f"image_size {self.image_size} / num_frames {self.num_frames} must be multiples of "
        f"patch_size {self.patch_size} / tubelet_size {self.tubelet_size}"
      )


def normalize_video(videos: jax.Array | np.ndarray) -> jax.Array:
  """uint8 (or [0, 1] float) RGB [..., 3] -> float32 normalised with ImageNet statistics."""
  x = jnp.asarray(videos).astype(jnp.float32)
  if videos.dtype == np.uint8:
    x = x / 255.0
  return (x - jnp.asarray(PIXEL_MEAN)) / jnp.asarray(PIXEL_STD)


@functools.lru_cache(maxsize=8)
def sinusoid_table(n: int, d: int) -> np.ndarray:
  """[n, d] float32: sin on even, cos on odd channels of pos / 10000^(2 (j // 2) / d)."""
  pos = np.arange(n, dtype=np.float64)[:, None]
  j = np.arange(d)
  angle = pos / np.power(10000.0, 2 * (j // 2) / d)
  return np.where(j % 2 == 0, np.sin(angle), np.cos(angle)).astype(np.float32)


class VideoMAEBlocks(nnx.Module):
  """`depth` pre-LN blocks, stacked on a leading `layers` axis (no k bias)."""

  def __init__(self, cfg: VideoMAEConfig, rngs: nnx.Rngs):
    self.cfg = cfg
    L, D, H, M = cfg.depth, cfg.width, cfg.num_heads, cfg.mlp_dim
    hd, pd = D // H, cfg.param_dtype
    zeros, ones = nnx.initializers.zeros, nnx.initializers.ones
    p = lambda init, shape, axes: param(rngs, init, (L, *shape), ("layers", *axes), pd)
    self.ln1_scale, self.ln1_bias = p(ones, (D,), ("norm",)), p(zeros, (D,), ("norm",))
    self.q = p(normal_init(1, 1), (D, H, hd), ("embed", "heads", "head_dim"))
    self.k = p(normal_init(1, 1), (D, H, hd), ("embed", "heads", "head_dim"))
    self.v = p(normal_init(1, 1), (D, H, hd), ("embed", "heads", "head_dim"))
    self.q_bias = p(zeros, (H, hd), ("heads", "head_dim")) if cfg.qv_bias else None
    self.v_bias = p(zeros, (H, hd), ("heads", "head_dim")) if cfg.qv_bias else None
    self.o = p(normal_init(2, 1), (H, hd, D), ("heads", "head_dim", "embed"))
    self.o_bias = p(zeros, (D,), ("embed",))
    self.ln2_scale, self.ln2_bias = p(ones, (D,), ("norm",)), p(zeros, (D,), ("norm",))
    self.fc1 = p(normal_init(1, 1), (D, M), ("embed", "mlp"))
    self.fc1_bias = p(zeros, (M,), ("mlp",))
    self.fc2 = p(normal_init(1, 1), (M, D), ("mlp", "embed"))
    self.fc2_bias = p(zeros, (D,), ("embed",))

  def _block(self, x: jax.Array, p: dict[str, jax.Array]) -> jax.Array:
    p = {k: v.astype(x.dtype) for k, v in p.items()}
    h = layer_norm(x, p["ln1_scale"], p["ln1_bias"], self.cfg.eps)
    q, k, v = (jnp.einsum("bld,dhk->blhk", h, p[n]) for n in "qkv")
    if "q_bias" in p:
      q, v = q + p["q_bias"], v + p["v_bias"]
    x = x + jnp.einsum("blhk,hkd->bld", attention(q, k, v, None), p["o"]) + p["o_bias"]
    h = layer_norm(x, p["ln2_scale"], p["ln2_bias"], self.cfg.eps)
    h = activation(self.cfg.act)(h @ p["fc1"] + p["fc1_bias"])
    return x + h @ p["fc2"] + p["fc2_bias"]

  def __call__(self, x: jax.Array) -> jax.Array:
    """x [B, N, D] -> [B, N, D] after every block."""
    names = [n for n, v in vars(self).items() if isinstance(v, nnx.Param)]
    params = {n: getattr(self, n)[...] for n in names}
    return jax.lax.scan(lambda h, p: (self._block(h, p), None), x, params)[0]


class VideoMAE(nnx.Module):
  """VideoMAE encoder; see the module docstring."""

  def __init__(self, cfg: VideoMAEConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    d, pd, p, t = cfg.width, cfg.param_dtype, cfg.patch_size, cfg.tubelet_size
    zeros, ones = nnx.initializers.zeros, nnx.initializers.ones
    self.patch_kernel = param(
      rngs, normal_init(4), (t, p, p, 3, d), (None, None, None, None, "embed"), pd
    )
    self.patch_bias = param(rngs, zeros, (d,), ("embed",), pd)
    self.blocks = VideoMAEBlocks(cfg, rngs)
    final = not cfg.use_mean_pooling
    self.norm_scale = param(rngs, ones, (d,), ("norm",), pd) if final else None
    self.norm_bias = param(rngs, zeros, (d,), ("norm",), pd) if final else None
    self.fc_norm_scale = param(rngs, ones, (d,), ("norm",), pd) if cfg.fc_norm else None
    self.fc_norm_bias = param(rngs, zeros, (d,), ("norm",), pd) if cfg.fc_norm else None

  def embed(self, videos: jax.Array) -> jax.Array:
    """Normalised videos [B, T, S, S, 3] -> tubelet tokens + positions [B, N, D]."""
    cfg = self.cfg
    want = (cfg.num_frames, cfg.image_size, cfg.image_size, 3)
    if videos.ndim != 5 or tuple(videos.shape[1:]) != want:
      raise ValueError(f"videos must be [B, {', '.join(map(str, want))}], got {videos.shape}")
    dt = jnp.dtype(cfg.dtype)
    x = jax.lax.conv_general_dilated(
      videos.astype(dt),
      self.patch_kernel[...].astype(dt),
      (cfg.tubelet_size, cfg.patch_size, cfg.patch_size),
      "VALID",
      dimension_numbers=("NDHWC", "DHWIO", "NDHWC"),
    )
    x = x.reshape(x.shape[0], -1, cfg.width) + self.patch_bias[...].astype(dt)
    return x + jnp.asarray(sinusoid_table(cfg.num_tokens, cfg.width), dt)

  def __call__(self, videos: jax.Array) -> jax.Array:
    """Normalised videos [B, T, S, S, 3] -> last hidden state [B, N, D] (HF's)."""
    h = self.blocks(self.embed(videos))
    if self.norm_scale is not None and self.norm_bias is not None:
      h = layer_norm(h, self.norm_scale[...], self.norm_bias[...], self.cfg.eps)
    return h

  def features(self, videos: jax.Array) -> jax.Array:
    """Normalised videos [B, T, S, S, 3] -> float32 [B, D]: token mean (+ fc_norm)."""
    pooled = jnp.mean(self(videos).astype(jnp.float32), axis=1)
    if self.fc_norm_scale is not None and self.fc_norm_bias is not None:
      pooled = layer_norm(pooled, self.fc_norm_scale[...], self.fc_norm_bias[...], FC_NORM_EPS)
    return pooled
