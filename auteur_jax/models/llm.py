"""A Llama / Qwen2-family decoder: token embedding, stacked pre-norm blocks, LM head.

`LLMConfig` holds the family's hyper-parameters (vocab, width, layers, heads, kv heads,
head dim, MLP width, RoPE theta and optional Llama-3 scaling, qkv bias for Qwen2, tied
embeddings, norm epsilon) plus compute options (dtypes, remat policy, scan unroll).
Blocks are created once with `nnx.vmap` (a leading `layers` axis on every parameter)
and run with `lax.scan`, optionally rematerialised. The same forward serves training
(full sequence, explicit mask) and decoding (a chunk written into a stacked KV cache).
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
from auteur_jax.models.cross_entropy import head_cross_entropy
from auteur_jax.models.layers import (
  Attention,
  KVCache,
  RMSNorm,
  RopeScaling,
  SwiGLU,
  cache_write,
  param,
  rope_angles,
  rope_frequencies,
)
from auteur_jax.parallel.rules import constrain

REMAT_POLICIES = {
  "none": None,  # No rematerialisation: keep every activation.
  "full": jax.checkpoint_policies.nothing_saveable,  # Recompute the whole block.
  "dots": jax.checkpoint_policies.checkpoint_dots,  # Keep matmul outputs.
  "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


@dataclasses.dataclass(frozen=True)
class LLMConfig:
  """Decoder hyper-parameters (names as in `config.model.llm`)."""

  vocab_size: int
  width: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  mlp_dim: int
  rope_theta: float = 10000.0
  rope_scaling: RopeScaling | None = None
  qkv_bias: bool = False  # Qwen2: biases on q, k, v.
  tie_embeddings: bool = False  # LM head = embedding table transposed.
  norm_eps: float = 1e-6
  init_std: float = 0.02
  dtype: str = "float32"  # Compute dtype.
  param_dtype: str = "float32"
  remat: str = "none"  # A key of REMAT_POLICIES.
  scan_unroll: int = 1

  def __post_init__(self):
    if self.remat not in REMAT_POLICIES:
      raise ValueError(f"llm.remat: expected one of {sorted(REMAT_POLICIES)}, got {self.remat!r}")
    if self.num_heads % self.num_kv_heads:
      raise ValueError(
        f"llm.num_heads ({self.num_heads}) must be a multiple of "
        f"llm.num_kv_heads ({self.num_kv_heads})"
      )
    for name in (
      "vocab_size",
      "width",
      "num_layers",
      "num_heads",
      "num_kv_heads",
      "head_dim",
      "mlp_dim",
      "scan_unroll",
    ):
      if getattr(self, name) < 1:
        raise ValueError(f"llm.{name} must be >= 1, got {getattr(self, name)}")

  @classmethod
  def from_config(cls, c: Mapping[str, Any], path: str = "config.model.llm") -> LLMConfig:
    """From the section `c` at `path` (ConfigDict or mapping) with these field names;
    rope_scaling a section or None. Unknown keys and bad values raise ConfigError."""
    return from_section(cls, c, path)


@functools.lru_cache(maxsize=16)
def _frequencies(head_dim: int, theta: float, scaling: RopeScaling | None) -> np.ndarray:
  return rope_frequencies(head_dim, theta, scaling)


class Block(nnx.Module):
  """Pre-norm decoder block: x + attn(norm(x)), then x + mlp(norm(x))."""

  def __init__(self, cfg: LLMConfig, *, rngs: nnx.Rngs):
    pd = cfg.param_dtype
    self.attn_norm = RMSNorm(cfg.width, cfg.norm_eps, param_dtype=pd, rngs=rngs)
    self.attn = Attention(
      cfg.width,
      cfg.num_heads,
      cfg.num_kv_heads,
      cfg.head_dim,
      qkv_bias=cfg.qkv_bias,
      init_std=cfg.init_std,
      dtype=cfg.dtype,
      param_dtype=pd,
      rngs=rngs,
    )
    self.mlp_norm = RMSNorm(cfg.width, cfg.norm_eps, param_dtype=pd, rngs=rngs)
    self.mlp = SwiGLU(
      cfg.width, cfg.mlp_dim, init_std=cfg.init_std, dtype=cfg.dtype, param_dtype=pd, rngs=rngs
    )

  def __call__(
    self,
    x: jax.Array,
    rope: tuple[jax.Array, jax.Array],
    mask: jax.Array,
    cache: KVCache | None = None,
    cache_index: jax.Array | int = 0,
    layer: jax.Array | None = None,
  ) -> tuple[jax.Array, KVCache | None]:
    """x [B, L, width] -> (same shape, cache).

    cache: None; this layer's KVCache (layer None); or stacked over layers (a leading
    layer axis) with `layer` this block's index.
    """
    q, k, v = self.attn.project(self.attn_norm(x), rope)
    if cache is not None:
      # Only the new chunk is written; the buffer is updated in place inside loops.
      cache = cache_write(cache, KVCache(k, v), cache_index, layer)
      k, v = cache if layer is None else (cache.k[layer], cache.v[layer])
    x = x + self.attn.combine(q, k, v, mask, cached=cache is not None)
    x = constrain(x, ("batch", "length", "act_embed"))
    x = x + self.mlp(self.mlp_norm(x))
    return constrain(x, ("batch", "length", "act_embed")), cache


class LLM(nnx.Module):
  """The decoder. Parameters: embed [vocab, width], layers.* stacked [num_layers, ...],
  norm.scale [width], lm_head [width, vocab] (absent when embeddings are tied)."""

  def __init__(self, cfg: LLMConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    init = nnx.initializers.normal(cfg.init_std)
    self.embed = param(rngs, init, (cfg.vocab_size, cfg.width), ("vocab", "embed"), cfg.param_dtype)

    @nnx.split_rngs(splits=cfg.num_layers)
    @nnx.vmap(in_axes=0, out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
    def make_blocks(rngs: nnx.Rngs) -> Block:
      return Block(cfg, rngs=rngs)

    self.layers = make_blocks(rngs)
    self.norm = RMSNorm(cfg.width, cfg.norm_eps, param_dtype=cfg.param_dtype, rngs=rngs)
    if not cfg.tie_embeddings:
      self.lm_head = param(
        rngs, init, (cfg.width, cfg.vocab_size), ("embed", "vocab"), cfg.param_dtype
      )

  def embed_tokens(self, ids: jax.Array) -> jax.Array:
    """ids int [B, L] -> embeddings [B, L, width] in the compute dtype."""
    x = jnp.take(self.embed[...], ids, axis=0).astype(self.cfg.dtype)
    return constrain(x, ("batch", "length", "act_embed"))

  def __call__(
    self,
    x: jax.Array,
    positions: jax.Array,
    mask: jax.Array,
    cache: KVCache | None = None,
    cache_index: jax.Array | int = 0,
  ) -> tuple[jax.Array, KVCache | None]:
    """Runs the blocks and the final norm.

    Args:
      x: input embeddings [B, L, width] (`embed_tokens`, or other vectors in that space).
      positions: RoPE positions int [B, L].
      mask: bool [B, L, L] (True = may attend) without a cache, [B, L, T] with one.
      cache: KVCache stacked over layers (`init_cache`) or None.
      cache_index: slot where x's keys are written (scalar, may be traced).
    Returns:
      (hidden states [B, L, width] after the final norm, the updated cache or None).
    """
    cfg = self.cfg
    if x.shape[-1] != cfg.width:
      raise ValueError(f"LLM input width {x.shape[-1]} != config width {cfg.width}")
    rope = rope_angles(positions, _frequencies(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling))
    x = constrain(x.astype(cfg.dtype), ("batch", "length", "act_embed"))
    graphdef, state = nnx.split(self.layers)

    def body(carry, xs):
      h, c = carry
      layer_state, index = xs
      return nnx.merge(graphdef, layer_state)(h, rope, mask, c, cache_index, index), None

    policy = REMAT_POLICIES[cfg.remat]
    if policy is not None:
      body = jax.checkpoint(body, policy=policy, prevent_cse=False)
    (x, cache), _ = jax.lax.scan(
      body, (x, cache), (state, jnp.arange(cfg.num_layers)), unroll=cfg.scan_unroll
    )
    return self.norm(x), cache

  def unstack_layers(self) -> list[Block]:
    """One Block per layer holding slices of the stacked params (for `decode`).

    Slice once, outside a decoding loop: XLA copies a slice of a stacked weight each time
    it is taken inside a loop body, which doubles the bytes a decode step reads.
    """
    graphdef, state = nnx.split(self.layers)
    return [
      nnx.merge(graphdef, jax.tree.map(lambda a, i=i: a[i], state))
      for i in range(self.cfg.num_layers)
    ]

  def decode(
    self,
    x: jax.Array,
    positions: jax.Array,
    mask: jax.Array,
    caches: tuple[KVCache, ...],
    cache_index: jax.Array | int,
    layers: list[Block],
  ) -> tuple[jax.Array, tuple[KVCache, ...]]:
    """The forward for decoding: layers unrolled, one cache buffer per layer.

    Separate buffers are updated in place inside a while loop, where slicing a stacked
    cache would copy the layer's whole cache every step (measured ~2x slower at T=1280).

    Args:
      x: [B, L, width] chunk (L = 1 for a token); positions int [B, L].
      mask: bool [B, L, T] over the cache slots (after x is written at cache_index).
      caches: per-layer KVCaches (`init_caches`).
      layers: `unstack_layers()`.
    Returns:
      (hidden [B, L, width] after the final norm, updated caches).
    """
    cfg = self.cfg
    rope = rope_angles(positions, _frequencies(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling))
    x = x.astype(cfg.dtype)
    out = []
    for block, cache in zip(layers, caches, strict=True):
      x, new = block(x, rope, mask, cache, cache_index)
      assert new is not None  # A block given a cache returns the updated one.
      out.append(new)
    return self.norm(x), tuple(out)

  def init_caches(self, batch: int, length: int, dtype: str | None = None) -> tuple[KVCache, ...]:
    """Per-layer zero caches of `length` slots for `decode`."""
    cfg = self.cfg
    return tuple(
      KVCache.zeros(batch, cfg.num_kv_heads, length, cfg.head_dim, dtype or cfg.dtype)
      for _ in range(cfg.num_layers)
    )

  def head_table(self) -> jax.Array:
    """The output weights as [vocab, width]: the tied embedding table or lm_head^T."""
    return self.embed[...] if self.cfg.tie_embeddings else self.lm_head[...].T

  def token_nll(self, h: jax.Array, targets: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Cross-entropy of the logits of h [..., width] at targets int [...]: (nll float32
    [...], whether the target is the top logit bool [...]); models/cross_entropy.py."""
    return head_cross_entropy(h, self.head_table(), targets)

  def logits(self, h: jax.Array) -> jax.Array:
    """Hidden states [..., width] -> float32 logits [..., vocab]."""
    w = self.embed[...].T if self.cfg.tie_embeddings else self.lm_head[...]
    out = jnp.einsum("...w,wv->...v", h, w.astype(h.dtype), preferred_element_type=jnp.float32)
    return constrain(out, ("batch", "length", "vocab")) if out.ndim == 3 else out

  def init_cache(self, batch: int, length: int, dtype: str | None = None) -> KVCache:
    """A zero cache of `length` slots for `batch` sequences (compute dtype by default)."""
    cfg = self.cfg
    return KVCache.zeros(
      batch, cfg.num_kv_heads, length, cfg.head_dim, dtype or cfg.dtype, layers=cfg.num_layers
    )


def causal_mask(valid: jax.Array) -> jax.Array:
  """valid bool [B, L] -> [B, L, L]: query i sees keys j <= i that are valid."""
  length = valid.shape[1]
  tri = jnp.tril(jnp.ones((length, length), bool))
  return tri[None] & valid[:, None, :]


def positions_from_valid(valid: jax.Array) -> jax.Array:
  """RoPE positions int32 [B, L]: index among the valid tokens (padding does not count)."""
  return jnp.maximum(jnp.cumsum(valid.astype(jnp.int32), axis=1) - 1, 0)
