"""Abstract global batches (ShapeDtypeStructs) from `config.data`, without reading data.

The shapes are those the grain decoders of data/pipeline.py produce: StoryDecoder for the
director, ClipDecoder (plus the stored arrays of `config.data.arrays`) for the DiT, VAE
and CLIP tasks. Stored arrays are taken as `auteur encode` writes them by default
(bfloat16); VAE latents have Wan's 4x temporal / 8x spatial compression.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from auteur_jax.config import ConfigError
from auteur_jax.models.dit import DiTConfig

VAE_TEMPORAL, VAE_SPATIAL = 4, 8  # Wan 2.1 VAE: latents [1 + (T - 1) / 4, H / 8, W / 8, C].


def frame_hw(data: ml_collections.ConfigDict) -> tuple[int, int]:
  """(height, width) in pixels of `config.data.size`: a side (square frames) or a
  (height, width) pair, e.g. Wan's (720, 1280)."""
  size = data.size
  if isinstance(size, int):
    return size, size
  hw = tuple(size)
  if len(hw) != 2 or not all(isinstance(v, int) and v > 0 for v in hw):
    raise ConfigError(f"config.data.size: expected a side or (height, width), got {size!r}")
  return hw[0], hw[1]


STORED_DTYPE = jnp.bfloat16  # `config.encode.dtype` of the paper's encode configs.


def _need(data: ml_collections.ConfigDict, *keys: str) -> None:
  missing = [k for k in keys if k not in data]
  if missing:
    raise ConfigError(f"config.data lacks {missing}: the planner derives the batch from them")


def _sd(shape, dtype) -> jax.ShapeDtypeStruct:
  return jax.ShapeDtypeStruct(tuple(int(s) for s in shape), jnp.dtype(dtype))


def story_batch(config: ml_collections.ConfigDict) -> dict[str, jax.ShapeDtypeStruct]:
  """The director's story batch (StoryDecoder): ids / masks per step and visual states."""
  d = config.data
  _need(d, "batch_size", "max_steps", "max_action_tokens", "max_caption_tokens", "embedding_shape")
  b, s, a, c = d.batch_size, d.max_steps, d.max_action_tokens, d.max_caption_tokens
  if len(tuple(d.embedding_shape)) != 2:
    raise ConfigError(f"config.data.embedding_shape: expected (K, D), got {d.embedding_shape!r}")
  return dict(
    action_ids=_sd((b, s, a), jnp.int32),
    action_mask=_sd((b, s, a), bool),
    caption_ids=_sd((b, s, c), jnp.int32),
    caption_mask=_sd((b, s, c), bool),
    step_mask=_sd((b, s), bool),
    task_ids=_sd((b, a), jnp.int32),
    task_mask=_sd((b, a), bool),
    visual_embedding=_sd((b, s, *d.embedding_shape), jnp.float32),
  )


def clip_batch(config: ml_collections.ConfigDict) -> dict[str, jax.ShapeDtypeStruct]:
  """A clip batch (ClipDecoder): frames, caption ids when a tokenizer is set, and the
  stored arrays of config.data.arrays."""
  d = config.data
  _need(d, "batch_size", "num_frames", "size")
  b, t = d.batch_size, d.num_frames
  h, w = frame_hw(d)
  out = dict(frames=_sd((b, t, h, w, 3), jnp.uint8), frame_mask=_sd((b, t), bool))
  if d.get("tokenizer"):
    out["caption_ids"] = _sd((b, d.max_text_len), jnp.int32)
    out["caption_mask"] = _sd((b, d.max_text_len), bool)
  m = config.model
  for name in tuple(d.get("arrays") or ()):
    if name == "latents":
      if (t - 1) % VAE_TEMPORAL or h % VAE_SPATIAL or w % VAE_SPATIAL:
        raise ConfigError(
          f"config.data: num_frames {t} / size {h} x {w} do not give whole VAE "
          f"latents (1 + {VAE_TEMPORAL}k frames, a multiple of {VAE_SPATIAL})"
        )
      # The VAE's latents: a keyframe DiT's other input channels are built from them.
      c = m.in_channels - DiTConfig.from_dict(m).condition_channels
      out[name] = _sd(
        (b, 1 + (t - 1) // VAE_TEMPORAL, h // VAE_SPATIAL, w // VAE_SPATIAL, c), STORED_DTYPE
      )
    elif name == "visual_embedding":
      if len(tuple(d.get("embedding_shape") or ())) != 2:
        raise ConfigError(
          "config.data.embedding_shape: set (K, D) of the stored "
          "visual_embedding so the planner knows its shape"
        )
      out[name] = _sd((b, *d.embedding_shape), STORED_DTYPE)
    elif name == "text_embedding":
      out[name] = _sd((b, d.max_text_len, m.text_dim), STORED_DTYPE)
    else:
      raise ConfigError(f"config.data.arrays: the planner does not know the shape of {name!r}")
  return out


def abstract_batch(config: ml_collections.ConfigDict) -> dict[str, jax.ShapeDtypeStruct]:
  """The global batch of `config.task` as ShapeDtypeStructs (no sharding yet)."""
  if config.task == "director":
    return story_batch(config)
  if config.task in ("dit", "vae", "clip"):
    return clip_batch(config)
  raise ConfigError(f"config.task: the planner has no batch for task {config.task!r}")
