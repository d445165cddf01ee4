"""ViT vision towers of the CLIP and SigLIP families + a resampler to K visual tokens.

Images [B, S, S, 3] (already normalised with the family's pixel mean / std; see
`normalize_pixels`) -> patches of p x p -> N = (S / p)^2 tokens of width D -> pre-LN
blocks (models/vit_blocks.py) ->
  CLIP:   class token first, LayerNorm before the blocks; pooled = projection(LN(class
          token)) (HF CLIPVisionModelWithProjection `image_embeds`).
  SigLIP: no class token; LayerNorm after the blocks on every token; pooled = attention
          pooling head (a learned probe attends over the tokens, then LN + MLP residual).

The director's visual states z come from `visual_tokens`: the patch tokens of block
`feature_layer`, resampled to K tokens either by adaptive average pooling of the patch
grid (SEED-X: 16 x 16 -> 8 x 8 = 64) or by learned queries attending over them, and
optionally mapped into the joint space (CLIP: post-LN + projection).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from auteur_jax.config_sections import from_section
from auteur_jax.models.layers import param
from auteur_jax.models.vit_blocks import (
  EncoderStack,
  activation,
  attention,
  layer_norm,
  normal_init,
)

FAMILIES = ("clip", "siglip")
RESAMPLERS = ("avgpool", "attention", "none")
# Pixel statistics of the released checkpoints (RGB, images in [0, 1]).
PIXEL_STATS = {
  "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
  "siglip": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}


@dataclasses.dataclass(frozen=True)
class VisionConfig:
  """Tower shape (HF names: hidden_size=width, num_hidden_layers=depth, ...) + resampler.

  projection_dim: CLIP's visual_projection width (0: none). feature_layer: which
  block's output feeds visual_tokens (-1 the last, -2 the penultimate, ...).
  num_tokens: K; for "avgpool" a square number. project_tokens: map the K resampled
  tokens into the joint space (post-LN, then CLIP's projection) instead of width D.
  """

  family: str = "clip"
  image_size: int = 336
  patch_size: int = 14
  width: int = 1024
  depth: int = 24
  num_heads: int = 16
  mlp_dim: int = 4096
  act: str = "quick_gelu"
  eps: float = 1e-5
  projection_dim: int = 768
  feature_layer: int = -2
  resampler: str = "avgpool"
  num_tokens: int = 64
  project_tokens: bool = False
  remat: bool = False
  dtype: str = "float32"
  param_dtype: str = "float32"

  def __post_init__(self):
    self.validate()

  @classmethod
  def from_dict(cls, d: Mapping[str, Any], path: str = "config.model.vision") -> VisionConfig:
    """From the section `d` at `path` (ConfigDict or dict); unknown keys and bad values
    raise ConfigError."""
    return from_section(cls, d, path)

  @property
  def grid(self) -> int:
    return self.image_size // self.patch_size

  @property
  def out_dim(self) -> int:
    """Width of visual_tokens' output."""
    if self.project_tokens and self.family == "clip" and self.projection_dim:
      return self.projection_dim
    return self.width

  def validate(self) -> None:
    if self.family not in FAMILIES:
      raise ValueError(f"config.model.family: expected one of {FAMILIES}, got {self.family!r}")
    if self.resampler not in RESAMPLERS:
      raise ValueError(
        f"config.model.resampler: expected one of {RESAMPLERS}, got {self.resampler!r}"
      )
    if self.image_size < self.patch_size:  # A remainder is dropped, as HF's conv does.
      raise ValueError(
        f"config.model.image_size {self.image_size} is smaller than patch_size {self.patch_size}"
      )
    if not -self.depth - 1 <= self.feature_layer <= self.depth:
      raise ValueError(
        f"config.model.feature_layer {self.feature_layer} is outside "
        f"[-{self.depth + 1}, {self.depth}] (0 = the embeddings)"
      )
    if self.resampler == "avgpool":
      k = math.isqrt(self.num_tokens)
      if k * k != self.num_tokens or k > self.grid:
        raise ValueError(
          f"config.model.num_tokens {self.num_tokens}: avgpool needs a square "
          f"number of at most grid^2 = {self.grid**2}"
        )


def normalize_pixels(images: jax.Array, family: str) -> jax.Array:
  """uint8 (or [0, 1] float) RGB [..., 3] -> the family's normalised float32 input."""
  x = images.astype(jnp.float32)
  if images.dtype == jnp.uint8:
    x = x / 255.0
  mean, std = PIXEL_STATS[family]
  return (x - jnp.asarray(mean)) / jnp.asarray(std)


def adaptive_pool_matrix(n_in: int, n_out: int) -> np.ndarray:
  """[n_out, n_in] averaging weights of torch's adaptive_avg_pool (bins floor..ceil)."""
  m = np.zeros((n_out, n_in), np.float32)
  for i in range(n_out):
    a, b = (i * n_in) // n_out, -(-((i + 1) * n_in) // n_out)
    m[i, a:b] = 1.0 / (b - a)
  return m


class _MHAPool(nnx.Module):
  """Learned queries [Q, D] attend over tokens (multi-head, biased projections)."""

  def __init__(self, width: int, heads: int, num_queries: int, param_dtype, rngs: nnx.Rngs):
    hd = width // heads
    zeros = nnx.initializers.zeros
    self.probe = param(
      rngs, nnx.initializers.normal(0.02), (num_queries, width), (None, "embed"), param_dtype
    )
    for n in ("q", "k", "v"):
      setattr(
        self,
        n,
        param(
          rngs, normal_init(1), (width, heads, hd), ("embed", "heads", "head_dim"), param_dtype
        ),
      )
      setattr(
        self, f"{n}_bias", param(rngs, zeros, (heads, hd), ("heads", "head_dim"), param_dtype)
      )
    self.o = param(
      rngs, normal_init(2), (heads, hd, width), ("heads", "head_dim", "embed"), param_dtype
    )
    self.o_bias = param(rngs, zeros, (width,), ("embed",), param_dtype)

  def __call__(self, x: jax.Array) -> jax.Array:
    """x [B, N, D] -> [B, Q, D]."""
    w = lambda n: getattr(self, n)[...].astype(x.dtype)
    probe = jnp.broadcast_to(w("probe"), (x.shape[0], *self.probe.shape))
    q = jnp.einsum("bld,dhk->blhk", probe, w("q")) + w("q_bias")
    k = jnp.einsum("bld,dhk->blhk", x, w("k")) + w("k_bias")
    v = jnp.einsum("bld,dhk->blhk", x, w("v")) + w("v_bias")
    return jnp.einsum("blhk,hkd->bld", attention(q, k, v, None), w("o")) + w("o_bias")


class _Norm(nnx.Module):
  def __init__(self, dim: int, eps: float, param_dtype, rngs: nnx.Rngs):
    self.eps = eps
    self.scale = param(rngs, nnx.initializers.ones, (dim,), ("norm",), param_dtype)
    self.bias = param(rngs, nnx.initializers.zeros, (dim,), ("norm",), param_dtype)

  def __call__(self, x: jax.Array) -> jax.Array:
    return layer_norm(x, self.scale[...], self.bias[...], self.eps)


class _Mlp(nnx.Module):
  def __init__(self, width: int, mlp_dim: int, act: str, param_dtype, rngs: nnx.Rngs):
    self.act = activation(act)
    zeros = nnx.initializers.zeros
    self.fc1 = param(rngs, normal_init(1), (width, mlp_dim), ("embed", "mlp"), param_dtype)
    self.fc1_bias = param(rngs, zeros, (mlp_dim,), ("mlp",), param_dtype)
    self.fc2 = param(rngs, normal_init(1), (mlp_dim, width), ("mlp", "embed"), param_dtype)
    self.fc2_bias = param(rngs, zeros, (width,), ("embed",), param_dtype)

  def __call__(self, x: jax.Array) -> jax.Array:
    h = self.act(x @ self.fc1[...].astype(x.dtype) + self.fc1_bias[...].astype(x.dtype))
    return h @ self.fc2[...].astype(x.dtype) + self.fc2_bias[...].astype(x.dtype)


class VisionTower(nnx.Module):
  """CLIP / SigLIP ViT; see the module docstring."""

  def __init__(self, cfg: VisionConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    d, pd, p = cfg.width, cfg.param_dtype, cfg.patch_size
    clip = cfg.family == "clip"
    self.patch_kernel = param(rngs, normal_init(3), (p, p, 3, d), (None, None, None, "embed"), pd)
    self.patch_bias = None if clip else param(rngs, nnx.initializers.zeros, (d,), ("embed",), pd)
    self.class_embedding = (
      param(rngs, nnx.initializers.normal(0.02), (d,), ("embed",), pd) if clip else None
    )
    n_pos = cfg.grid**2 + (1 if clip else 0)
    self.pos_embedding = param(rngs, nnx.initializers.normal(0.02), (n_pos, d), (None, "embed"), pd)
    self.pre_norm = _Norm(d, cfg.eps, pd, rngs) if clip else None
    self.blocks = EncoderStack(
      d,
      cfg.depth,
      cfg.num_heads,
      cfg.mlp_dim,
      cfg.act,
      cfg.eps,
      remat=cfg.remat,
      param_dtype=pd,
      rngs=rngs,
    )
    self.post_norm = _Norm(d, cfg.eps, pd, rngs)
    self.projection = (
      param(rngs, normal_init(1), (d, cfg.projection_dim), ("embed", None), pd)
      if clip and cfg.projection_dim
      else None
    )
    self.head_attn: _MHAPool | None
    self.head_norm: _Norm | None
    self.head_mlp: _Mlp | None
    self.resampler: _MHAPool | None
    self.resampler_norm: _Norm | None
    if clip:
      self.head_attn = self.head_norm = self.head_mlp = None
    else:  # SigLIP's attention-pooling head.
      self.head_attn = _MHAPool(d, cfg.num_heads, 1, pd, rngs)
      self.head_norm = _Norm(d, cfg.eps, pd, rngs)
      self.head_mlp = _Mlp(d, cfg.mlp_dim, cfg.act, pd, rngs)
    if cfg.resampler == "attention":
      self.resampler = _MHAPool(d, cfg.num_heads, cfg.num_tokens, pd, rngs)
      self.resampler_norm = _Norm(d, cfg.eps, pd, rngs)
    else:
      self.resampler = self.resampler_norm = None

  # -- tokens ----------------------------------------------------------------------------

  def _embed(self, images: jax.Array) -> jax.Array:
    cfg = self.cfg
    if images.ndim != 4 or images.shape[1:] != (cfg.image_size, cfg.image_size, 3):
      raise ValueError(
        f"images must be [B, {cfg.image_size}, {cfg.image_size}, 3], got {tuple(images.shape)}"
      )
    dt = jnp.dtype(cfg.dtype)
    x = jax.lax.conv_general_dilated(
      images.astype(dt),
      self.patch_kernel[...].astype(dt),
      (cfg.patch_size,) * 2,
      "VALID",
      dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    x = x.reshape(x.shape[0], -1, cfg.width)
    if self.patch_bias is not None:
      x = x + self.patch_bias[...].astype(dt)
    if self.class_embedding is not None:
      cls = jnp.broadcast_to(self.class_embedding[...].astype(dt), (x.shape[0], 1, cfg.width))
      x = jnp.concatenate([cls, x], axis=1)
    x = x + self.pos_embedding[...].astype(dt)
    return self.pre_norm(x) if self.pre_norm is not None else x

  def hidden(self, images: jax.Array, layer: int = -1) -> jax.Array:
    """Token states after `layer` blocks (HF hidden_states[layer]; negative from the end).

    [B, T, D] with T = N (+1 class token first, CLIP). Before SigLIP's post-LN.
    """
    n = layer % (self.cfg.depth + 1)
    return self.blocks(self._embed(images), num_layers=n)

  def __call__(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
    """images -> (last_hidden_state [B, T, D], pooled [B, P]) as HF computes them.

    CLIP: last_hidden_state without post-LN, pooled = image_embeds (or the post-LN class
    token when projection_dim is 0). SigLIP: post-LN tokens, pooled = head output.
    """
    h = self.hidden(images, -1)
    if self.cfg.family == "clip":
      pooled = self.post_norm(h[:, 0])
      if self.projection is not None:
        pooled = pooled @ self.projection[...].astype(pooled.dtype)
      return h, pooled
    h = self.post_norm(h)
    # SigLIP has the attention-pooling head.
    assert self.head_attn is not None and self.head_norm is not None and self.head_mlp is not None
    a = self.head_attn(h)
    pooled = a + self.head_mlp(self.head_norm(a))
    return h, pooled[:, 0]

  def embed_images(self, images: jax.Array) -> jax.Array:
    """The pooled image embedding [B, P] (the joint image-text space)."""
    return self(images)[1]

  # -- visual states for the director ----------------------------------------------------

  def visual_tokens(self, images: jax.Array) -> jax.Array:
    """images -> K visual tokens [B, num_tokens, out_dim] (see the module docstring)."""
    cfg = self.cfg
    n = cfg.feature_layer % (cfg.depth + 1)
    h = self.hidden(images, n)
    if cfg.family == "clip":
      h = h[:, 1:]  # Patch tokens only.
    normed = cfg.family == "siglip" and n == cfg.depth
    if normed:
      h = self.post_norm(h)  # As SigLIP's last_hidden_state.
    h = self.resample(h)
    if cfg.project_tokens:  # Into the joint space: post-LN (+ CLIP's projection).
      h = h if normed else self.post_norm(h)
      if self.projection is not None:
        h = h @ self.projection[...].astype(h.dtype)
    return h

  def resample(self, tokens: jax.Array) -> jax.Array:
    """Patch tokens [B, grid^2, D] (row-major grid) -> [B, K, D] by the configured resampler."""
    cfg = self.cfg
    if cfg.resampler == "none":
      return tokens
    if cfg.resampler == "attention":
      assert self.resampler is not None and self.resampler_norm is not None  # Built for it.
      return self.resampler_norm(self.resampler(tokens))
    g, k = cfg.grid, math.isqrt(cfg.num_tokens)
    m = jnp.asarray(adaptive_pool_matrix(g, k), tokens.dtype)
    grid = tokens.reshape(tokens.shape[0], g, g, tokens.shape[-1])
    pooled = jnp.einsum("ih,jw,bhwd->bijd", m, m, grid)
    return pooled.reshape(tokens.shape[0], k * k, tokens.shape[-1])
