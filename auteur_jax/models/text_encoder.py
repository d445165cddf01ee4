"""T5 / umT5 text encoder (the DiT's caption encoder; Wan 2.1 uses umT5-XXL).

Token ids [B, L] -> embedding -> `depth` blocks -> final RMS norm -> [B, L, D]. A block:
x + o(attn(RMSNorm(x))), then x + ff(RMSNorm(x)) with the gated-GELU feed-forward
wo(gelu_tanh(wi_0 h) * wi_1 h) (or T5 1.0's wo(relu(wi h))). Attention has no 1/sqrt(d)
scaling and no biases; positions enter as a learned bias per (relative-position bucket,
head) added to the scores: one table shared by all layers (T5, stored with layer 0) or
one per layer (umT5). RMS norm: x / sqrt(mean(x^2) + eps) * scale, without mean or bias.

Weights (stacked on a leading [L] layer axis, scanned): ln_attn, ln_ff [D]; q, k, v
[D, H, Dh]; o [H, Dh, D]; wi_0, wi_1 (or wi) [D, M]; wo [M, D]; rel_bias [L or 1,
buckets, H]. HF converter: convert/hf_text.py.
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
from auteur_jax.models.vit_blocks import activation, normal_init
from auteur_jax.parallel.rules import constrain


@dataclasses.dataclass(frozen=True)
class T5Config:
  """HF names: d_model=width, d_kv=head_dim, d_ff=mlp_dim, num_layers=depth,
  relative_attention_num_buckets=num_buckets, relative_attention_max_distance=max_distance,
  layer_norm_epsilon=eps. per_layer_bias: umT5 (True) or T5 (False). gated + act: the
  feed-forward (HF feed_forward_proj "gated-gelu" = gated with act "gelu_new").

  Defaults are umT5-XXL's.
  """

  vocab_size: int = 256384
  width: int = 4096
  head_dim: int = 64
  num_heads: int = 64
  mlp_dim: int = 10240
  depth: int = 24
  num_buckets: int = 32
  max_distance: int = 128
  per_layer_bias: bool = True
  gated: bool = True
  act: str = "gelu_new"
  eps: float = 1e-6
  remat: bool = False
  dtype: str = "float32"
  param_dtype: str = "float32"

  @classmethod
  def from_dict(cls, d: Mapping[str, Any], path: str = "config.model") -> T5Config:
    """From the section `d` at `path` (ConfigDict or dict); unknown keys and bad values
    raise ConfigError."""
    return from_section(cls, d, path)

  def validate(self) -> None:
    activation(self.act)  # Raises on an unknown name.


def relative_buckets(q_len: int, k_len: int, num_buckets: int, max_distance: int) -> np.ndarray:
  """Bidirectional T5 buckets int32 [q_len, k_len] of (key - query) positions.

  Half the buckets per direction; of those, half exact offsets, half logarithmic bins
  up to max_distance. float32 arithmetic, as HF computes it, so buckets agree exactly.
  """
  rel = np.arange(k_len)[None, :] - np.arange(q_len)[:, None]
  half = num_buckets // 2
  out = (rel > 0).astype(np.int64) * half
  n = np.abs(rel)
  exact = half // 2
  with np.errstate(divide="ignore"):
    ratio = np.log(n.astype(np.float32) / np.float32(exact)) / np.float32(
      math.log(max_distance / exact)
    )
  large = exact + np.where(n < exact, 0, ratio * np.float32(half - exact)).astype(np.int64)
  large = np.minimum(large, half - 1)
  return (out + np.where(n < exact, n, large)).astype(np.int32)


def rms_norm(x: jax.Array, scale: jax.Array, eps: float) -> jax.Array:
  """T5's norm in float32: x / sqrt(mean(x^2) + eps) * scale; back to x's dtype."""
  h = x.astype(jnp.float32)
  h = h * jax.lax.rsqrt(jnp.mean(h * h, axis=-1, keepdims=True) + eps)
  return (h * scale.astype(jnp.float32)).astype(x.dtype)


class T5Encoder(nnx.Module):
  """ids [B, L] (+ mask) -> hidden states [B, L, width]; see the module docstring."""

  def __init__(self, cfg: T5Config, *, rngs: nnx.Rngs):
    self.cfg = cfg
    L, D, H, K, M = cfg.depth, cfg.width, cfg.num_heads, cfg.head_dim, cfg.mlp_dim
    pd = cfg.param_dtype
    ones = nnx.initializers.ones
    p = lambda init, shape, axes: param(rngs, init, (L, *shape), ("layers", *axes), pd)
    self.embed = param(
      rngs, nnx.initializers.normal(1.0), (cfg.vocab_size, D), ("vocab", "embed"), pd
    )
    n_bias = L if cfg.per_layer_bias else 1
    self.rel_bias = param(
      rngs,
      nnx.initializers.normal(0.1),
      (n_bias, cfg.num_buckets, H),
      ("layers", None, "heads"),
      pd,
    )
    self.ln_attn = p(ones, (D,), ("norm",))
    for n in "qkv":
      setattr(self, n, p(normal_init(1, 1), (D, H, K), ("embed", "heads", "head_dim")))
    self.o = p(normal_init(2, 1), (H, K, D), ("heads", "head_dim", "embed"))
    self.ln_ff = p(ones, (D,), ("norm",))
    for n in ("wi_0", "wi_1") if cfg.gated else ("wi",):
      setattr(self, n, p(normal_init(1, 1), (D, M), ("embed", "mlp")))
    self.wo = p(normal_init(1, 1), (M, D), ("mlp", "embed"))
    self.final_norm = param(rngs, ones, (D,), ("norm",), pd)

  def _block(
    self, x: jax.Array, p: dict[str, jax.Array], bias: jax.Array, mask: jax.Array
  ) -> jax.Array:
    cfg, dt = self.cfg, x.dtype
    h = rms_norm(x, p["ln_attn"], cfg.eps)
    q, k, v = (jnp.einsum("bld,dhk->blhk", h, p[n].astype(dt)) for n in "qkv")
    q = constrain(q, ("batch", "length", "heads", "head_dim"))
    s = jnp.einsum("bqhk,bthk->bhqt", q, k, preferred_element_type=jnp.float32)
    s = jnp.where(mask, s + bias.astype(jnp.float32), jnp.finfo(jnp.float32).min)
    a = jnp.einsum("bhqt,bthk->bqhk", jax.nn.softmax(s, axis=-1).astype(dt), v)
    x = x + jnp.einsum("blhk,hkd->bld", a, p["o"].astype(dt))
    h = rms_norm(x, p["ln_ff"], cfg.eps)
    act = activation(cfg.act)
    if cfg.gated:
      g = act(h @ p["wi_0"].astype(dt)) * (h @ p["wi_1"].astype(dt))
    else:
      g = act(h @ p["wi"].astype(dt))
    g = constrain(g, ("batch", "length", "mlp"))
    return x + g @ p["wo"].astype(dt)

  def _bias(self, table: jax.Array, buckets: np.ndarray) -> jax.Array:
    """[buckets, H] -> [1, H, Lq, Lk]."""
    return jnp.transpose(table[jnp.asarray(buckets)], (2, 0, 1))[None]

  def __call__(self, ids: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """ids int [B, L]; mask [B, L] (1 = token, 0 = padding) or None -> [B, L, width]."""
    cfg = self.cfg
    b, l = ids.shape
    dt = jnp.dtype(cfg.dtype)
    x = jnp.take(self.embed[...], ids, axis=0).astype(dt)
    keys = jnp.ones((b, l), bool) if mask is None else mask.astype(bool)
    attend = keys[:, None, None, :]  # [B, 1, 1, Lk]: padding keys are never attended.
    buckets = relative_buckets(l, l, cfg.num_buckets, cfg.max_distance)
    names = ["ln_attn", "q", "k", "v", "o", "ln_ff", "wo"] + (
      ["wi_0", "wi_1"] if cfg.gated else ["wi"]
    )
    params = {n: getattr(self, n)[...] for n in names}
    if cfg.per_layer_bias:
      params["rel_bias"] = self.rel_bias[...]
      step = lambda h, p: (self._block(h, p, self._bias(p["rel_bias"], buckets), attend), None)
    else:
      shared = self._bias(self.rel_bias[...][0], buckets)
      step = lambda h, p: (self._block(h, p, shared, attend), None)
    if cfg.remat:
      step = jax.checkpoint(step)
    x = jax.lax.scan(step, x, params)[0]
    return rms_norm(x, self.final_norm[...], cfg.eps)
