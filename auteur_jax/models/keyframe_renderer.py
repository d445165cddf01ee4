"""The keyframe renderer: draws step t's keyframe latent from its text and the previous
1-3 keyframes of the story (the language-centric director's image model, paper Sec. 4).

It is our video DiT (models/dit.py) in image mode over R + 1 latent frames: R reference
slots, then the keyframe being drawn. The DiT is keyframe-conditioned (Wan 2.1 I2V's
input channels, `DiTConfig.visual_condition = "keyframe"`): a reference slot holds zeros
in the noisy-latent channels and, in the condition channels, a 4-channel mask of ones and
the reference's normalised VAE latent (all zeros when the slot is empty); the target
frame holds the noisy latent and a zero condition. So every reference is h/2 * w/2
patch tokens in the self-attention with its own frame position in the 3-D RoPE, and only
the target frame's velocity is returned. The paper tiles references into a FLUX.1 Fill
canvas; frames of one sequence are the same idea on our DiT.

Slots are in story order: slot R - j holds keyframe t - j (the newest reference sits next
to the target); a missing one (t - j < 0, dropped, or a story that starts here) is
masked. Text: the step's action tokens then its caption tokens through a trained token
table (as `conditioned_dit.TextConditionedDiT` embeds caption ids), zeros on padding.

Shapes: keyframe latents [B, h, w, C] (C = out_channels); references [B, R, h, w, C]
with reference_mask [B, R] bool; t [B] flow time in [0, 1]; text [B, L, text_dim].
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from auteur_jax.config_sections import from_section
from auteur_jax.models.dit import KEYFRAME_MASK_CHANNELS, DiTConfig, VideoDiT

MAX_REFERENCES = 3  # The paper's rolling context: 1-3 previous keyframes.


@dataclasses.dataclass(frozen=True)
class KeyframeRendererConfig(DiTConfig):
  """`config.model` of the keyframe renderer: the DiT's fields (DiTConfig; it must be
  keyframe-conditioned, in_channels = 2 out_channels + 4, with no visual tokens) plus:

  max_references: reference slots R (1..3), the rolling context's length.
  vocab_size: rows of the token table that embeds action and caption ids (text_dim wide).
  """

  max_references: int = MAX_REFERENCES
  vocab_size: int = 2048

  @classmethod
  def from_dict(cls, d: Mapping[str, Any], path: str = "config.model") -> KeyframeRendererConfig:
    """From the section `d` at `path`; unknown keys and bad values raise ConfigError."""
    return from_section(cls, d, path)

  def validate(self) -> None:
    super().validate()
    if not 1 <= self.max_references <= MAX_REFERENCES:
      raise ValueError(
        f"config.model.max_references: expected 1..{MAX_REFERENCES}, got {self.max_references}"
      )
    if self.visual_condition != "keyframe":
      raise ValueError(
        "config.model.visual_condition: the renderer's references go in the keyframe input "
        f"channels; expected 'keyframe', got {self.visual_condition!r}"
      )
    if self.visual_dim:
      raise ValueError(
        f"config.model.visual_dim: the renderer has no visual tokens; expected 0, got "
        f"{self.visual_dim}"
      )
    if self.patch_size[0] != 1:
      raise ValueError(
        f"config.model.patch_size: one latent frame per image needs a time patch of 1, got "
        f"{self.patch_size}"
      )
    if self.vocab_size < 1:
      raise ValueError(f"config.model.vocab_size: expected >= 1, got {self.vocab_size}")


def rolling_references(
  keyframes: jax.Array, step_mask: jax.Array, max_references: int
) -> tuple[jax.Array, jax.Array]:
  """Each step's references from the story's own keyframes (teacher forcing).

  keyframes [B, S, h, w, C], step_mask [B, S] bool -> references [B, S, R, h, w, C] and
  reference_mask [B, S, R] bool, where slot R - j of step t holds keyframe t - j (zeros
  and False when t - j < 0 or that step is padding).
  """
  b, s = keyframes.shape[:2]
  r = max_references
  # Pad R empty steps in front, then slot k of step t reads padded step t + k.
  pad = jnp.zeros((b, r, *keyframes.shape[2:]), keyframes.dtype)
  padded = jnp.concatenate([pad, keyframes], axis=1)
  valid = jnp.concatenate([jnp.zeros((b, r), bool), step_mask.astype(bool)], axis=1)
  idx = jnp.arange(s)[:, None] + jnp.arange(r)[None, :]  # [S, R]
  return padded[:, idx], valid[:, idx]


class KeyframeRenderer(nnx.Module):
  """The renderer: `dit` (a keyframe-conditioned VideoDiT) and `text_embed` (the token
  table). Call: (x [B, h, w, C] noisy keyframe latent, t [B], text [B, L, text_dim],
  references [B, R, h, w, C], reference_mask [B, R] bool) -> velocity [B, h, w, C].
  A masked reference's latent is zeroed here, so its content never reaches the output."""

  def __init__(self, cfg: KeyframeRendererConfig, *, rngs: nnx.Rngs):
    cfg.validate()
    self.cfg = cfg
    self.dit = VideoDiT(cfg, rngs=rngs)
    self.text_embed = nnx.Embed(
      cfg.vocab_size,
      cfg.text_dim,
      rngs=rngs,
      embedding_init=nnx.with_partitioning(nnx.initializers.normal(0.02), ("vocab", "embed")),
    )

  def embed_text(
    self,
    action_ids: jax.Array,
    action_mask: jax.Array,
    caption_ids: jax.Array,
    caption_mask: jax.Array,
  ) -> jax.Array:
    """A step's text: action ids [B, La] then caption ids [B, Lc] (+ bool masks) ->
    [B, La + Lc, text_dim], zeros at padding (the null text of guidance is all zeros)."""
    ids = jnp.concatenate([action_ids, caption_ids], axis=1)
    mask = jnp.concatenate([action_mask, caption_mask], axis=1)
    return self.text_embed(ids) * mask[..., None].astype(jnp.float32)

  def __call__(
    self,
    x: jax.Array,
    t: jax.Array,
    text: jax.Array,
    references: jax.Array,
    reference_mask: jax.Array,
  ) -> jax.Array:
    cfg = self.cfg
    r = cfg.max_references
    if x.ndim != 4 or x.shape[-1] != cfg.out_channels:
      raise ValueError(f"keyframe latents: expected [B, h, w, {cfg.out_channels}], got {x.shape}")
    b, h, w, c = x.shape
    if references.shape != (b, r, h, w, c):
      raise ValueError(
        f"references: expected shape {(b, r, h, w, c)} ([B, max_references, h, w, C] like "
        f"the keyframe latents {x.shape}), got {references.shape}"
      )
    if reference_mask.shape != (b, r):
      raise ValueError(f"reference_mask: expected shape {(b, r)}, got {reference_mask.shape}")
    m = reference_mask.astype(x.dtype)[:, :, None, None, None]
    zeros = jnp.zeros((b, 1, h, w, c), x.dtype)
    # Frames 0..R-1: the reference slots; frame R: the keyframe being drawn.
    latents = jnp.concatenate([jnp.zeros((b, r, h, w, c), x.dtype), x[:, None]], axis=1)
    refs = jnp.concatenate([references.astype(x.dtype) * m, zeros], axis=1)
    mask = jnp.concatenate([m, jnp.zeros((b, 1, 1, 1, 1), x.dtype)], axis=1)
    mask = jnp.broadcast_to(mask, (b, r + 1, h, w, KEYFRAME_MASK_CHANNELS))
    v = self.dit(latents, t, text, None, jnp.concatenate([mask, refs], axis=-1))
    return v[:, r]
