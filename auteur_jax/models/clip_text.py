"""CLIP text tower and the contrastive image-text model the toy kitchen trains.

Text tower (HF CLIPTextModelWithProjection): token + learned position embeddings ->
causal pre-LN blocks (models/vit_blocks.py) -> final LayerNorm -> the state at the
end-of-text token -> projection. `ClipModel` pairs it with a vision tower
(models/vision.py) and a learned temperature; `clip_loss` (softmax, CLIP) and
`sigmoid_loss` (SigLIP) score a batch of matching pairs.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from auteur_jax.config_sections import from_section
from auteur_jax.models.layers import param
from auteur_jax.models.vision import VisionConfig, VisionTower
from auteur_jax.models.vit_blocks import EncoderStack, layer_norm, normal_init


@dataclasses.dataclass(frozen=True)
class TextConfig:
  """HF names: vocab_size, hidden_size=width, num_hidden_layers=depth, num_attention_heads,
  intermediate_size=mlp_dim, max_position_embeddings=max_len, projection_dim, hidden_act.

  eos_token_id: the pooled state is taken at its first occurrence in each row.
  pool_argmax: instead take the row's largest id (OpenAI's vocabulary puts end-of-text
  last; HF does this for configs with eos_token_id 2).
  """

  vocab_size: int = 49408
  width: int = 768
  depth: int = 12
  num_heads: int = 12
  mlp_dim: int = 3072
  max_len: int = 77
  projection_dim: int = 768
  act: str = "quick_gelu"
  eps: float = 1e-5
  eos_token_id: int = 49407
  pool_argmax: bool = False
  remat: bool = False
  dtype: str = "float32"
  param_dtype: str = "float32"

  @classmethod
  def from_dict(cls, d: Mapping[str, Any], path: str = "config.model.text") -> TextConfig:
    """From the section `d` at `path` (ConfigDict or dict); unknown keys and bad values
    raise ConfigError."""
    return from_section(cls, d, path)


class ClipTextTower(nnx.Module):
  """Token ids [B, L] (+ padding mask) -> (last_hidden [B, L, D], pooled [B, P])."""

  def __init__(self, cfg: TextConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    d, pd = cfg.width, cfg.param_dtype
    self.token_embedding = param(
      rngs, nnx.initializers.normal(0.02), (cfg.vocab_size, d), ("vocab", "embed"), pd
    )
    self.pos_embedding = param(
      rngs, nnx.initializers.normal(0.01), (cfg.max_len, d), (None, "embed"), pd
    )
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
    self.final_norm_scale = param(rngs, nnx.initializers.ones, (d,), ("norm",), pd)
    self.final_norm_bias = param(rngs, nnx.initializers.zeros, (d,), ("norm",), pd)
    self.projection = (
      param(rngs, normal_init(1), (d, cfg.projection_dim), ("embed", None), pd)
      if cfg.projection_dim
      else None
    )

  def __call__(self, ids: jax.Array, mask: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """ids int [B, L] (L <= max_len); mask [B, L] (1 = token, 0 = padding) or None.

    Returns (last_hidden [B, L, D] after the final LN, pooled [B, P]: the projected
    state at the end-of-text token).
    """
    cfg = self.cfg
    b, l = ids.shape
    if l > cfg.max_len:
      raise ValueError(
        f"token ids have length {l}; the text tower takes at most max_len={cfg.max_len}"
      )
    dt = jnp.dtype(cfg.dtype)
    x = jnp.take(self.token_embedding[...], ids, axis=0).astype(dt)
    x = x + self.pos_embedding[...][:l].astype(dt)
    attend = jnp.tril(jnp.ones((l, l), bool))[None]
    if mask is not None:
      attend = attend & mask.astype(bool)[:, None, :]
    attend = jnp.broadcast_to(attend, (b, l, l))
    h = self.blocks(x, attend)
    h = layer_norm(h, self.final_norm_scale[...], self.final_norm_bias[...], cfg.eps)
    if cfg.pool_argmax:
      eos = jnp.argmax(ids, axis=-1)
    else:
      eos = jnp.argmax(ids == cfg.eos_token_id, axis=-1)
    pooled = jnp.take_along_axis(h, eos[:, None, None], axis=1)[:, 0]
    if self.projection is not None:
      pooled = pooled @ self.projection[...].astype(dt)
    return h, pooled


CLIP_LOSSES = ("softmax", "sigmoid")  # CLIP's, SigLIP's.


@dataclasses.dataclass(frozen=True)
class ClipModelConfig:
  """`config.model` of a CLIP config: the two towers and the contrastive loss, or the
  vision tower alone (a config only encoded with, e.g. paper/clip_vit_l14_336:siglip)."""

  vision: VisionConfig
  text: TextConfig | None = None
  loss: str | None = None  # A CLIP_LOSSES name; with the text tower.

  def validate(self) -> None:
    if (self.text is None) != (self.loss is None):
      raise ValueError("text and loss: give both (the pair) or neither (the vision tower)")
    if self.loss is not None and self.loss not in CLIP_LOSSES:
      raise ValueError(f"loss: expected one of {CLIP_LOSSES}, got {self.loss!r}")


class ClipModel(nnx.Module):
  """Vision tower + text tower + learned log-temperature (and SigLIP's logit bias)."""

  def __init__(
    self, vision: VisionConfig, text: TextConfig, *, loss: str = "softmax", rngs: nnx.Rngs
  ):
    if loss not in CLIP_LOSSES:
      raise ValueError(f"contrastive loss {loss!r}: expected 'softmax' or 'sigmoid'")
    vdim = (
      vision.projection_dim if vision.family == "clip" and vision.projection_dim else vision.width
    )
    tdim = text.projection_dim or text.width
    if vdim != tdim:
      raise ValueError(
        f"image embeddings have width {vdim}, text embeddings {tdim}; "
        "set projection_dim so that they agree"
      )
    self.loss_kind = loss
    self.vision = VisionTower(vision, rngs=rngs)
    self.text = ClipTextTower(text, rngs=rngs)
    init_scale, init_bias = (
      (math.log(1 / 0.07), 0.0) if loss == "softmax" else (math.log(10.0), -10.0)
    )  # SigLIP's initialisation.
    self.logit_scale = nnx.Param(jnp.asarray(init_scale, jnp.float32))
    self.logit_bias = nnx.Param(jnp.asarray(init_bias, jnp.float32))

  def __call__(
    self, images: jax.Array, ids: jax.Array, mask: jax.Array | None = None
  ) -> tuple[jax.Array, jax.Array]:
    """-> (image embeddings [B, P], text embeddings [B, P]), not normalised."""
    return self.vision.embed_images(images), self.text(ids, mask)[1]

  def loss(self, images: jax.Array, ids: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    img, txt = self(images, ids, mask)
    if self.loss_kind == "softmax":
      return clip_loss(img, txt, self.logit_scale[...])
    return sigmoid_loss(img, txt, self.logit_scale[...], self.logit_bias[...])


def _unit(x: jax.Array) -> jax.Array:
  x = x.astype(jnp.float32)
  return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


def clip_loss(image_emb: jax.Array, text_emb: jax.Array, logit_scale: jax.Array) -> jax.Array:
  """Symmetric softmax contrastive loss of B matching pairs (row i of each).

  logits = exp(logit_scale) * cos(image_i, text_j); the mean of the image->text and
  text->image cross-entropies with the diagonal as the labels. Scalar float32.
  """
  logits = jnp.exp(logit_scale) * _unit(image_emb) @ _unit(text_emb).T
  labels = jnp.arange(logits.shape[0])
  i2t = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
  t2i = optax.softmax_cross_entropy_with_integer_labels(logits.T, labels).mean()
  return 0.5 * (i2t + t2i)


def sigmoid_loss(
  image_emb: jax.Array, text_emb: jax.Array, logit_scale: jax.Array, logit_bias: jax.Array
) -> jax.Array:
  """SigLIP: -sum_ij log sigmoid(z_ij (exp(scale) cos_ij + bias)) / B, z = +1 on the diagonal."""
  logits = jnp.exp(logit_scale) * _unit(image_emb) @ _unit(text_emb).T + logit_bias
  z = 2.0 * jnp.eye(logits.shape[0]) - 1.0
  return -jnp.sum(jax.nn.log_sigmoid(z * logits)) / logits.shape[0]


def with_eos(ids: jax.Array, mask: jax.Array, eos: int) -> tuple[jax.Array, jax.Array]:
  """Writes `eos` after each row's tokens (over the last one when the row is full)."""
  length = ids.shape[1]
  n = jnp.sum(mask.astype(jnp.int32), axis=1)
  at = jnp.minimum(n, length - 1)[:, None] == jnp.arange(length)[None]
  return jnp.where(at, eos, ids), mask.astype(bool) | at
