"""Wan 2.1-style video diffusion transformer conditioned on text and visual-embedding tokens.

The DiT predicts the flow-matching velocity of a latent video. Layout (channels last):
latents [B, T, H, W, C] -> 3-D patches (pt, ph, pw) -> N = T/pt * H/ph * W/pw tokens of
width D = num_heads * head_dim -> `num_layers` blocks -> head -> unpatchify.

Each block: adaLN-modulated self-attention (QK RMSNorm across heads, 3-D RoPE), cross-
attention to the text tokens plus a second attention over the visual-embedding tokens
(own key/value projections; Wan's image-to-video mechanism, here fed with the director's
visual state z), and a modulated tanh-GELU MLP. Timesteps enter through a shared time
projection plus a learned per-block scale/shift table.

Image-to-video (`DiTConfig.visual_condition` "keyframe" / "both", Wan 2.1 I2V's way): a
keyframe's VAE latent placed in its latent frame plus a 4-channel frame mask
(`diffusion/keyframe.py`) is concatenated on the channel axis to the noisy latents before
the patch embedding (in_channels = out_channels + 4 + out_channels: 36 for Wan), and the
keyframe's image tokens may go through the visual attention above.

Block weights are stacked on a leading `layers` axis and run with `lax.scan` (optionally
rematerialised). Weights are stored [in, out] (torch's Linear is [out, in]); the
diffusers converter lives in `convert/diffusers_wan.py`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.ad_checkpoint import checkpoint_name

from auteur_jax.config_sections import from_section
from auteur_jax.models import attention_kernels, blockwise_attention, context_parallel
from auteur_jax.models.layers import apply_rope_interleaved, param, rope_3d_tables
from auteur_jax.parallel.rules import constrain

# Which intermediates the backward keeps per block ("none": no rematerialisation).
REMAT_POLICIES = {
  "none": None,
  "full": jax.checkpoint_policies.nothing_saveable,
  "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
  # Keep the matmul outputs tagged in `_block`; recompute norms, softmax, GELU.
  "names": jax.checkpoint_policies.save_only_these_names(
    "sa_qkv", "sa_o", "sa_proj", "ca_q", "ca_o", "ca_proj", "ffn_u", "ffn_y"
  ),
}

ATTENTION = ("full", "blockwise", "splash", "cudnn")  # DiTConfig.attention (self-attention).
# What the visual condition is (DiTConfig.visual_condition): the director's embedding
# tokens (visual attention), a keyframe (its latent and mask concatenated to the input
# channels, plus optional image tokens through the visual attention), or both.
VISUAL_CONDITIONS = ("embedding", "keyframe", "both")
# Mask channels of the keyframe condition: one per pixel frame of a latent frame (Wan's VAE
# compresses time 4x; diffusers' `vae_scale_factor_temporal`).
KEYFRAME_MASK_CHANNELS = 4


@dataclasses.dataclass(frozen=True)
class DiTConfig:
  """Hyper-parameters; names follow diffusers' WanTransformer3DModel where they exist.

  visual_dim: width of the raw visual-embedding tokens (diffusers `image_dim`); 0 builds
    the text-only (text-to-video) model. visual_pos_len: learned position embedding
    added to exactly that many visual tokens (diffusers `pos_embed_seq_len`); 0 = none.
  timestep_scale: the model takes flow time t in [0, 1]; Wan embeds t * 1000.
  scan_layers / remat: how the stacked blocks run (remat: a key of REMAT_POLICIES).
  attention: self-attention as "full" (one score matrix [N, N] per head: fastest for
    short sequences), "blockwise" (models/blockwise_attention.py: scores of
    `attention_block` keys at a time, for long clips; the same result), or a fused kernel
    (models/attention_kernels.py): "splash" (TPU, blocks of `attention_block` rounded to
    128; CPU in interpret mode) or "cudnn" (GPU, bfloat16).
  context_parallel: with the sequence split on a `context` mesh axis, how self-attention
    crosses it: "xla" (XLA's partitioner), "ring" or "all_to_all"
    (models/context_parallel.py; the same result). Ring runs its own online softmax per
    hop (`attention_block` keys at a time with "blockwise", the whole hop with "full"), so
    it takes no fused kernel.
  visual_condition: a VISUAL_CONDITIONS name. "embedding": visual tokens only (visual_dim
    > 0), or text only (visual_dim 0). "keyframe": the keyframe condition [B, T, H, W,
    4 + out_channels] is concatenated to the noisy latents, so in_channels must be
    out_channels + 4 + out_channels (Wan 2.1 I2V: 36); the visual tokens, when visual_dim
    > 0, are the keyframe's image tokens. "both": the keyframe condition and the
    director's embedding tokens (visual_dim > 0).
  """

  patch_size: tuple[int, int, int] = (1, 2, 2)
  in_channels: int = 16
  out_channels: int = 16
  num_heads: int = 12
  head_dim: int = 128
  ffn_dim: int = 8960
  num_layers: int = 30
  text_dim: int = 4096
  freq_dim: int = 256
  visual_dim: int = 0
  visual_pos_len: int = 0
  eps: float = 1e-6
  cross_attn_norm: bool = True
  rope_theta: float = 10000.0
  rope_max_len: int = 1024
  timestep_scale: float = 1000.0
  dtype: str = "float32"
  param_dtype: str = "float32"
  scan_layers: bool = True
  remat: str = "none"
  attention: str = "full"
  attention_block: int = 512
  context_parallel: str = "xla"
  visual_condition: str = "embedding"

  @property
  def width(self) -> int:
    return self.num_heads * self.head_dim

  @property
  def keyframe(self) -> bool:
    """True: the model takes a keyframe condition concatenated to its input channels."""
    return self.visual_condition in ("keyframe", "both")

  @property
  def condition_channels(self) -> int:
    """Channels of the keyframe condition (mask + latent); 0 without one."""
    return KEYFRAME_MASK_CHANNELS + self.out_channels if self.keyframe else 0

  @classmethod
  def from_dict(cls, d: Mapping[str, Any], path: str = "config.model") -> DiTConfig:
    """From the section `d` at `path` (ConfigDict or dict); unknown keys and bad values
    raise ConfigError."""
    return from_section(cls, d, path)

  def validate(self) -> None:
    if len(self.patch_size) != 3 or min(self.patch_size) < 1:
      raise ValueError(f"config.model.patch_size: expected 3 positive ints, got {self.patch_size}")
    if self.head_dim % 2 or self.head_dim < 6:
      raise ValueError(
        f"config.model.head_dim: must be even and >= 6 for the 3-D RoPE split, got {self.head_dim}"
      )
    if self.remat not in REMAT_POLICIES:
      raise ValueError(
        f"config.model.remat: expected one of {sorted(REMAT_POLICIES)}, got {self.remat!r}"
      )
    if self.attention not in ATTENTION:
      raise ValueError(
        f"config.model.attention: expected one of {ATTENTION}, got {self.attention!r}"
      )
    if self.context_parallel not in context_parallel.STRATEGIES:
      raise ValueError(
        f"config.model.context_parallel: expected one of {context_parallel.STRATEGIES}, "
        f"got {self.context_parallel!r}"
      )
    if self.context_parallel == "ring" and self.attention not in ("full", "blockwise"):
      raise ValueError(
        "config.model.context_parallel 'ring' runs its own online softmax per hop: "
        f"config.model.attention must be 'full' or 'blockwise', got {self.attention!r}"
      )
    if self.attention_block < 1:
      raise ValueError(
        f"config.model.attention_block: expected >= 1 keys, got {self.attention_block}"
      )
    if self.visual_pos_len and not self.visual_dim:
      raise ValueError("config.model.visual_pos_len needs visual_dim > 0")
    if self.visual_condition not in VISUAL_CONDITIONS:
      raise ValueError(
        f"config.model.visual_condition: expected one of {VISUAL_CONDITIONS}, "
        f"got {self.visual_condition!r}"
      )
    if self.visual_condition == "both" and not self.visual_dim:
      raise ValueError(
        "config.model.visual_condition 'both' needs visual_dim > 0 (the embedding tokens)"
      )
    if self.keyframe and self.in_channels != self.out_channels + self.condition_channels:
      raise ValueError(
        f"config.model.in_channels: visual_condition {self.visual_condition!r} needs "
        f"out_channels + {KEYFRAME_MASK_CHANNELS} mask + out_channels condition channels = "
        f"{self.out_channels + self.condition_channels}, got {self.in_channels}"
      )
    for name in ("dtype", "param_dtype"):
      try:
        jnp.dtype(getattr(self, name))
      except TypeError:
        raise ValueError(f"config.model.{name}: not a dtype: {getattr(self, name)!r}") from None


# --- patches ---------------------------------------------------------------------------


def patch_grid(shape: tuple[int, ...], patch: tuple[int, int, int]) -> tuple[int, int, int]:
  """Token grid (F, H', W') of latents shaped [B, T, H, W, C]; raises if not divisible."""
  if len(shape) != 5:
    raise ValueError(f"latents: expected [B, T, H, W, C], got shape {tuple(shape)}")
  grid = []
  for name, size, p in zip(("frames", "height", "width"), shape[1:4], patch):
    if size % p:
      raise ValueError(f"latents {name} {size} is not divisible by patch size {p}")
    grid.append(size // p)
  f, h, w = grid
  return f, h, w


def patchify(x: jax.Array, patch: tuple[int, int, int]) -> jax.Array:
  """[B, T, H, W, C] -> [B, N, pt*ph*pw*C], tokens in (frame, row, column) order."""
  b, _, _, _, c = x.shape
  f, h, w = patch_grid(x.shape, patch)
  pt, ph, pw = patch
  x = x.reshape(b, f, pt, h, ph, w, pw, c).transpose(0, 1, 3, 5, 2, 4, 6, 7)
  return x.reshape(b, f * h * w, pt * ph * pw * c)


def unpatchify(
  tokens: jax.Array, grid: tuple[int, int, int], patch: tuple[int, int, int]
) -> jax.Array:
  """Inverse of `patchify`: [B, N, pt*ph*pw*C] -> [B, T, H, W, C]."""
  b, n, k = tokens.shape
  f, h, w = grid
  pt, ph, pw = patch
  if n != f * h * w or k % (pt * ph * pw):
    raise ValueError(f"tokens {tokens.shape} do not fit grid {grid} x patch {patch}")
  c = k // (pt * ph * pw)
  x = tokens.reshape(b, f, h, w, pt, ph, pw, c).transpose(0, 1, 4, 2, 5, 3, 6, 7)
  return x.reshape(b, f * pt, h * ph, w * pw, c)


def timestep_embedding(t: jax.Array, dim: int) -> jax.Array:
  """Sinusoidal embedding [B, dim] of (scaled) timesteps [B]: cos half, then sin half."""
  half = dim // 2
  freqs = jnp.exp(-math.log(10000.0) * jnp.arange(half, dtype=jnp.float32) / half)
  angles = t.astype(jnp.float32)[:, None] * freqs[None]
  return jnp.concatenate([jnp.cos(angles), jnp.sin(angles)], axis=-1)


# --- parameters ------------------------------------------------------------------------


_ZEROS, _ONES = nnx.initializers.zeros, nnx.initializers.ones


def _fan_in(in_axes: int):
  """Variance scaling over the first `in_axes` axes (our kernels are [in..., out...])."""

  def init(key, shape, dtype):
    fan = math.prod(shape[:in_axes])
    return jax.random.normal(key, shape, dtype) / math.sqrt(fan)

  return init


class Dense(nnx.Module):
  """x @ kernel + bias; kernel [in, out] with logical names (in_axis, out_axis)."""

  def __init__(
    self, d_in: int, d_out: int, axes: tuple[str | None, str | None], dtype, rngs: nnx.Rngs
  ):
    self.kernel = param(rngs, _fan_in(1), (d_in, d_out), axes, dtype)
    self.bias = param(rngs, _ZEROS, (d_out,), axes[1:], dtype)

  def __call__(self, x: jax.Array) -> jax.Array:
    return x @ self.kernel[...].astype(x.dtype) + self.bias[...].astype(x.dtype)


def layer_norm(
  x: jax.Array, eps: float, scale: jax.Array | None = None, bias: jax.Array | None = None
) -> jax.Array:
  """LayerNorm over the last axis, computed in float32 (Wan's FP32LayerNorm)."""
  x32 = x.astype(jnp.float32)
  mean = x32.mean(-1, keepdims=True)
  var = jnp.square(x32 - mean).mean(-1, keepdims=True)
  y = (x32 - mean) * jax.lax.rsqrt(var + eps)
  if scale is not None:
    assert bias is not None  # Given with scale.
    y = y * scale.astype(jnp.float32) + bias.astype(jnp.float32)
  return y


class VisualEmbedder(nnx.Module):
  """Raw visual tokens [B, K, Dv] -> [B, K, D]: LayerNorm, exact-GELU MLP, LayerNorm."""

  def __init__(self, cfg: DiTConfig, rngs: nnx.Rngs):
    dv, d, pd = cfg.visual_dim, cfg.width, cfg.param_dtype
    self.norm1_scale = param(rngs, _ONES, (dv,), ("norm",), pd)
    self.norm1_bias = param(rngs, _ZEROS, (dv,), ("norm",), pd)
    self.fc1 = Dense(dv, dv, ("embed", "mlp"), pd, rngs)  # "embed": FSDP splits it.
    self.fc2 = Dense(dv, d, ("mlp", "embed"), pd, rngs)
    self.norm2_scale = param(rngs, _ONES, (d,), ("norm",), pd)
    self.norm2_bias = param(rngs, _ZEROS, (d,), ("norm",), pd)
    self.pos_embed = (
      param(rngs, _ZEROS, (cfg.visual_pos_len, dv), (None, "norm"), pd)
      if cfg.visual_pos_len
      else None
    )

  def __call__(self, z: jax.Array, dtype) -> jax.Array:
    if self.pos_embed is not None:
      if z.shape[1] != self.pos_embed.shape[0]:
        raise ValueError(
          f"visual tokens: this model's position embedding needs exactly "
          f"{self.pos_embed.shape[0]} tokens, got {z.shape[1]}"
        )
      z = z + self.pos_embed[...][None].astype(z.dtype)
    h = layer_norm(z, 1e-5, self.norm1_scale[...], self.norm1_bias[...]).astype(dtype)
    h = self.fc2(jax.nn.gelu(self.fc1(h), approximate=False))
    return layer_norm(h, 1e-5, self.norm2_scale[...], self.norm2_bias[...]).astype(dtype)


# --- blocks ----------------------------------------------------------------------------


def block_param_specs(cfg: DiTConfig) -> dict[str, tuple[tuple[int, ...], tuple, Any]]:
  """name -> (per-layer shape, logical axes, init) of one block's weights.

  Projections that read the same input are fused (self-attention q/k/v: [D, 3, H, K];
  text and visual k/v: [D, 2, H, K]): one matmul each way instead of three.
  """
  d, h, k, f = cfg.width, cfg.num_heads, cfg.head_dim, cfg.ffn_dim
  hk = ("heads", "head_dim")

  def proj(n):
    return ((d, n, h, k), ("embed", None, *hk), _fan_in(1))

  def zeros(n):
    return ((n, h, k), (None, *hk), _ZEROS)

  hk_one = ((h, k), hk, _ONES)
  out = ((h, k, d), (*hk, "embed"), _fan_in(2))
  d_zero = ((d,), ("norm",), _ZEROS)
  shapes = {
    "modulation": (
      (6, d),
      (None, "norm"),
      lambda key, s, t: jax.random.normal(key, s, t) / math.sqrt(d),
    ),
    "sa_qkv": proj(3),
    "sa_qkv_bias": zeros(3),
    "sa_q_norm": hk_one,
    "sa_k_norm": hk_one,
    "sa_out": out,
    "sa_out_bias": d_zero,
    "ca_q": proj(1),
    "ca_q_bias": zeros(1),
    "ca_kv": proj(2),
    "ca_kv_bias": zeros(2),
    "ca_q_norm": hk_one,
    "ca_k_norm": hk_one,
    "ca_out": out,
    "ca_out_bias": d_zero,
  }
  if cfg.cross_attn_norm:
    shapes.update(ca_norm_scale=((d,), ("norm",), _ONES), ca_norm_bias=d_zero)
  if cfg.visual_dim:
    shapes.update(ca_vkv=proj(2), ca_vkv_bias=zeros(2), ca_vk_norm=hk_one)
  shapes.update(
    ffn_up=((d, f), ("embed", "mlp"), _fan_in(1)),
    ffn_up_bias=((f,), ("mlp",), _ZEROS),
    ffn_down=((f, d), ("mlp", "embed"), _fan_in(1)),
    ffn_down_bias=d_zero,
  )
  return shapes


def _rms_heads(x: jax.Array, weight: jax.Array, eps: float) -> jax.Array:
  """RMSNorm of [B, N, H, K] over all heads together (Wan's "across heads" QK norm)."""
  x32 = x.astype(jnp.float32)
  ms = jnp.square(x32).mean(axis=(-2, -1), keepdims=True)
  return (x32 * jax.lax.rsqrt(ms + eps) * weight.astype(jnp.float32)).astype(x.dtype)


def _project(x: jax.Array, w: jax.Array, b: jax.Array, name: str | None = None) -> list[jax.Array]:
  """[B, N, D] x [D, n, H, K] -> n arrays [B, N, H, K] (one matmul; output tagged `name`)."""
  bsz, n_tok, _ = x.shape
  _, n, h, k = w.shape
  y = x @ w.reshape(w.shape[0], -1).astype(x.dtype) + b.reshape(-1).astype(x.dtype)
  if name:
    y = checkpoint_name(y, name)
  y = y.reshape(bsz, n_tok, n, h, k)
  return [constrain(y[:, :, i], ("batch", "length", "heads", "head_dim")) for i in range(n)]


def _out(o: jax.Array, w: jax.Array, b: jax.Array) -> jax.Array:
  """[B, N, H, K] x [H, K, D] -> [B, N, D]."""
  bsz, n_tok, h, k = o.shape
  return o.reshape(bsz, n_tok, h * k) @ w.reshape(h * k, -1).astype(o.dtype) + b.astype(o.dtype)


def _attend(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
  """Full softmax attention; q [B, N, H, K], k/v [B, M, H, K] -> [B, N, H, K].

  Two einsums around a float32 softmax (on CPU faster than dot_product_attention; a
  variant in cached (batch, head) groups gained nothing in the whole step).
  """
  s = jnp.einsum("bnhk,bmhk->bhnm", q * (q.shape[-1] ** -0.5), k)
  p = jax.nn.softmax(s.astype(jnp.float32), axis=-1).astype(v.dtype)
  return jnp.einsum("bhnm,bmhk->bnhk", p, v)


def _context_kv(
  cfg: DiTConfig, tokens: jax.Array, w: jax.Array, b: jax.Array, norm: jax.Array
) -> tuple[jax.Array, jax.Array]:
  """Keys (RMS-normed) and values of context tokens [B, M, D] for every layer at once:
  w [L, D, 2, H, K] -> k, v [L, B, M, H, K]. One wide matmul outside the layer loop
  instead of one per layer (recomputed again by the backward under remat)."""
  n_layers, d, _, h, hd = w.shape
  bsz, m, _ = tokens.shape
  y = tokens.reshape(bsz * m, d) @ w.transpose(1, 0, 2, 3, 4).reshape(d, -1).astype(tokens.dtype)
  y = y.reshape(bsz, m, n_layers, 2, h, hd).transpose(2, 3, 0, 1, 4, 5)
  y = y + b.astype(y.dtype)[:, :, None, None]
  k = jax.vmap(lambda k, g: _rms_heads(k, g, cfg.eps))(y[:, 0], norm)
  axes = ("layers", "batch", None, "heads", "head_dim")  # Context tokens stay whole.
  return constrain(k, axes), constrain(y[:, 1], axes)


def _block(
  cfg: DiTConfig,
  p: dict[str, jax.Array],
  x: jax.Array,
  ctx: tuple[jax.Array, jax.Array],
  vis: tuple[jax.Array, jax.Array] | None,
  mod: jax.Array,
  cos: jax.Array,
  sin: jax.Array,
) -> jax.Array:
  """One block. x [B, N, D]; ctx / vis: this layer's (keys, values) [B, M, H, K] of the
  text / visual tokens (`_context_kv`); mod [B, 6, D] float32.

  checkpoint_name tags mark what the "names" remat policy keeps for the backward.
  """
  dt, eps = x.dtype, cfg.eps
  e = p["modulation"][None].astype(jnp.float32) + mod
  shift, scale, gate, c_shift, c_scale, c_gate = (e[:, i : i + 1] for i in range(6))

  h = (layer_norm(x, eps) * (1 + scale) + shift).astype(dt)
  q, k, v = _project(h, p["sa_qkv"], p["sa_qkv_bias"], "sa_qkv")
  q = apply_rope_interleaved(_rms_heads(q, p["sa_q_norm"], eps), cos, sin)
  k = apply_rope_interleaved(_rms_heads(k, p["sa_k_norm"], eps), cos, sin)
  kernels: dict[str, context_parallel.Full] = {
    "full": _attend,
    "blockwise": functools.partial(blockwise_attention.attend, block=cfg.attention_block),
    "splash": functools.partial(attention_kernels.splash, block=cfg.attention_block),
    "cudnn": attention_kernels.cudnn,
  }
  full = kernels[cfg.attention]
  block = cfg.attention_block if cfg.attention == "blockwise" else None
  o = context_parallel.attend(q, k, v, cfg.context_parallel, full, block)
  o = checkpoint_name(o, "sa_o")
  o = checkpoint_name(_out(o, p["sa_out"], p["sa_out_bias"]), "sa_proj")
  x = (x + o * gate).astype(dt)

  h = x
  if cfg.cross_attn_norm:
    h = layer_norm(x, eps, p["ca_norm_scale"], p["ca_norm_bias"]).astype(dt)
  (q,) = _project(h, p["ca_q"], p["ca_q_bias"], "ca_q")
  q = _rms_heads(q, p["ca_q_norm"], eps)
  o = _attend(q, *ctx)
  if vis is not None:  # Visual tokens: own keys/values, own softmax, outputs summed.
    o = o + _attend(q, *vis)
  o = checkpoint_name(o, "ca_o")
  x = x + checkpoint_name(_out(o, p["ca_out"], p["ca_out_bias"]), "ca_proj")

  h = (layer_norm(x, eps) * (1 + c_scale) + c_shift).astype(dt)
  u = checkpoint_name(h @ p["ffn_up"].astype(dt) + p["ffn_up_bias"].astype(dt), "ffn_u")
  h = constrain(jax.nn.gelu(u, approximate=True), ("batch", "length", "mlp"))
  h = checkpoint_name(h @ p["ffn_down"].astype(dt) + p["ffn_down_bias"].astype(dt), "ffn_y")
  x = (x + h * c_gate).astype(dt)
  return constrain(x, ("batch", "length", "act_embed"))


def per_layer_init(init):
  """An init for [L, ...] that draws each layer as `init` draws one (fans per layer)."""

  def stacked(key, shape, dtype):
    keys = jax.random.split(key, shape[0])
    return jax.vmap(lambda k: init(k, shape[1:], dtype))(keys)

  return stacked


class Blocks(nnx.Module):
  """`num_layers` blocks; every weight stacked on a leading `layers` axis."""

  # Set by name from block_param_specs; the context projections read here by name (the
  # visual ones exist only with cfg.visual_dim).
  ca_kv: nnx.Param
  ca_kv_bias: nnx.Param
  ca_k_norm: nnx.Param
  ca_vkv: nnx.Param
  ca_vkv_bias: nnx.Param
  ca_vk_norm: nnx.Param

  def __init__(self, cfg: DiTConfig, rngs: nnx.Rngs):
    self.cfg = cfg
    self.names = tuple(block_param_specs(cfg))
    for name, (shape, axes, init) in block_param_specs(cfg).items():
      setattr(
        self,
        name,
        param(
          rngs, per_layer_init(init), (cfg.num_layers, *shape), ("layers", *axes), cfg.param_dtype
        ),
      )

  def __call__(self, x, ctx, vis, mod, cos, sin) -> jax.Array:
    """x [B, N, D]; ctx [B, Lt, D] / vis [B, K, D] | None embedded text / visual tokens."""
    cfg = self.cfg
    context = ("ca_kv", "ca_kv_bias", "ca_k_norm", "ca_vkv", "ca_vkv_bias", "ca_vk_norm")
    stacked = {n: getattr(self, n)[...] for n in self.names if n not in context}
    stacked["ctx"] = _context_kv(
      cfg, ctx, self.ca_kv[...], self.ca_kv_bias[...], self.ca_k_norm[...]
    )
    if vis is not None:
      stacked["vis"] = _context_kv(
        cfg, vis, self.ca_vkv[...], self.ca_vkv_bias[...], self.ca_vk_norm[...]
      )

    def body(x, p):
      return _block(cfg, p, x, p["ctx"], p.get("vis"), mod, cos, sin), None

    if cfg.remat != "none":
      body = jax.checkpoint(body, policy=REMAT_POLICIES[cfg.remat], prevent_cse=False)
    if cfg.scan_layers:
      return jax.lax.scan(body, x, stacked)[0]
    # Unrolled: split (whose transpose is one concatenate; indexing would pad per layer).
    leaves, tree = jax.tree.flatten(stacked)
    layers = [[a[0] for a in jnp.split(v, cfg.num_layers)] for v in leaves]
    for i in range(cfg.num_layers):
      x = body(x, jax.tree.unflatten(tree, [v[i] for v in layers]))[0]
    return x


class VideoDiT(nnx.Module):
  """The DiT. Call: (latents [B,T,H,W,C], t [B] in [0,1], text [B,Lt,text_dim],
  visual [B,K,visual_dim] or None, condition [B,T,H,W,4+out_channels] or None) ->
  velocity [B,T,H,W,out_channels]. Without visual tokens the visual attention is skipped
  (the text-to-video model). A keyframe-conditioned model (cfg.keyframe) takes latents
  of out_channels and needs `condition` (diffusion/keyframe.keyframe_condition), joined
  after them on the channel axis as diffusers' pipeline joins [latents, condition];
  other models take latents of in_channels and no condition."""

  def __init__(self, cfg: DiTConfig, *, rngs: nnx.Rngs):
    cfg.validate()
    self.cfg = cfg
    d, pd = cfg.width, cfg.param_dtype
    p = math.prod(cfg.patch_size)
    self.patch_embed = Dense(p * cfg.in_channels, d, (None, "embed"), pd, rngs)
    self.time_fc1 = Dense(cfg.freq_dim, d, (None, "embed"), pd, rngs)
    self.time_fc2 = Dense(d, d, ("mlp", "embed"), pd, rngs)
    # Shared projection of the time embedding to the six per-block modulations.
    self.time_proj = param(rngs, _fan_in(1), (d, 6, d), ("mlp", None, "embed"), pd)
    self.time_proj_bias = param(rngs, _ZEROS, (6, d), (None, "embed"), pd)
    self.text_fc1 = Dense(cfg.text_dim, d, (None, "embed"), pd, rngs)
    self.text_fc2 = Dense(d, d, ("mlp", "embed"), pd, rngs)
    self.visual_embed = VisualEmbedder(cfg, rngs) if cfg.visual_dim else None
    self.blocks = Blocks(cfg, rngs)
    self.head_modulation = param(
      rngs, lambda k, s, t: jax.random.normal(k, s, t) / math.sqrt(d), (2, d), (None, "norm"), pd
    )
    self.head = Dense(d, p * cfg.out_channels, ("embed", None), pd, rngs)

  def __call__(
    self,
    latents: jax.Array,
    t: jax.Array,
    text: jax.Array,
    visual: jax.Array | None = None,
    condition: jax.Array | None = None,
  ) -> jax.Array:
    cfg = self.cfg
    dtype = jnp.dtype(cfg.dtype)
    grid = patch_grid(latents.shape, cfg.patch_size)
    self._check_inputs(latents, t, text, visual, condition, grid)

    x = latents.astype(dtype)
    if condition is not None:
      x = jnp.concatenate([x, condition.astype(dtype)], axis=-1)
    x = self.patch_embed(patchify(x, cfg.patch_size))
    x = constrain(x, ("batch", "length", "act_embed"))
    cos, sin = (jnp.asarray(a) for a in rope_3d_tables(grid, cfg.head_dim, cfg.rope_theta))

    # Time: sinusoid -> MLP (temb, used by the head) -> SiLU -> shared 6-way projection.
    temb = self.time_fc2(
      jax.nn.silu(self.time_fc1(timestep_embedding(t * cfg.timestep_scale, cfg.freq_dim)))
    )
    mod = (
      jnp.einsum(
        "bd,dke->bke",
        jax.nn.silu(temb).astype(jnp.float32),
        self.time_proj[...].astype(jnp.float32),
      )
      + self.time_proj_bias[...]
    )
    # Small per-example vectors: replicated, so each block can slice them freely.
    temb = constrain(temb, ("batch", "act_embed"))
    mod = constrain(mod, ("batch", None, "act_embed"))

    ctx = self.text_fc2(jax.nn.gelu(self.text_fc1(text.astype(dtype)), approximate=True))
    vis = None
    if visual is not None:
      assert self.visual_embed is not None  # _check_inputs raised otherwise.
      vis = self.visual_embed(visual.astype(jnp.float32), dtype)

    x = self.blocks(x, ctx, vis, mod, cos, sin)

    shift, scale = jnp.split(
      self.head_modulation[...][None] + temb[:, None].astype(jnp.float32), 2, axis=1
    )
    h = (layer_norm(x, cfg.eps) * (1 + scale) + shift).astype(dtype)
    return unpatchify(self.head(h), grid, cfg.patch_size)

  def _check_inputs(self, latents, t, text, visual, condition, grid) -> None:
    cfg = self.cfg
    if cfg.keyframe and condition is None:
      raise ValueError(
        f"condition: this DiT is keyframe-conditioned (config.model.visual_condition = "
        f"{cfg.visual_condition!r}) and needs the keyframe condition "
        f"[B, T, H, W, {cfg.condition_channels}]"
      )
    if not cfg.keyframe and condition is not None:
      raise ValueError(
        "condition given to a DiT without keyframe input (config.model.visual_condition "
        f"= {cfg.visual_condition!r})"
      )
    channels = cfg.in_channels - cfg.condition_channels
    if latents.shape[-1] != channels:
      raise ValueError(
        f"latents: expected {channels} channels (last axis), got shape {latents.shape}"
      )
    if condition is not None and condition.shape != (*latents.shape[:-1], cfg.condition_channels):
      raise ValueError(
        f"condition: expected shape {(*latents.shape[:-1], cfg.condition_channels)} "
        f"(the latents' [B, T, H, W] and {cfg.condition_channels} channels), got {condition.shape}"
      )
    if max(grid) > cfg.rope_max_len:
      raise ValueError(f"latents token grid {grid} exceeds rope_max_len {cfg.rope_max_len}")
    if t.shape != (latents.shape[0],):
      raise ValueError(f"t: expected shape ({latents.shape[0]},), got {t.shape}")
    if text.ndim != 3 or text.shape[0] != latents.shape[0] or text.shape[-1] != cfg.text_dim:
      raise ValueError(f"text: expected [{latents.shape[0]}, L, {cfg.text_dim}], got {text.shape}")
    if visual is not None and self.visual_embed is None:
      raise ValueError("visual tokens given to a text-only DiT (config.model.visual_dim = 0)")
    if visual is not None and (
      visual.ndim != 3 or visual.shape[0] != latents.shape[0] or visual.shape[-1] != cfg.visual_dim
    ):
      raise ValueError(
        f"visual: expected [{latents.shape[0]}, K, {cfg.visual_dim}], got {visual.shape}"
      )


def widen_patch_kernel(
  kernel: jax.Array, patch: tuple[int, int, int], in_channels: int
) -> jax.Array:
  """The patch-embedding kernel [pt*ph*pw*C, D] of a model with C input channels ->
  [pt*ph*pw*in_channels, D], the new channels (after the old ones, where the keyframe
  condition goes) with zero weights: the wider model predicts what the narrower one did
  until they are trained. Starts a keyframe DiT from an embedding (or text-only) one."""
  p = math.prod(patch)
  rows, d = kernel.shape
  if rows % p or not 0 < rows // p <= in_channels:
    raise ValueError(
      f"patch kernel {tuple(kernel.shape)}: expected [{p} x C, D] with C <= {in_channels}"
    )
  k = kernel.reshape(p, rows // p, d)  # Rows are (pt, ph, pw, channel), channel fastest.
  k = jnp.pad(k, ((0, 0), (0, in_channels - rows // p), (0, 0)))
  return k.reshape(p * in_channels, d)


def count_params(model: nnx.Module) -> int:
  """Number of parameters of `model`."""
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
