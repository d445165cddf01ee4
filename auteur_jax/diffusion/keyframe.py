"""The keyframe condition of an image-to-video DiT, as diffusers' Wan 2.1 I2V builds it.

`WanImageToVideoPipeline.prepare_latents` (diffusers) concatenates, on the channel axis,
a frame mask and the condition latents:

  mask [T, H, W, tf]: pixel frames n = 1 + tf (T - 1) get 1 where a keyframe is given, 0
    elsewhere; the first pixel frame is repeated tf times (Wan's causal VAE encodes it
    alone into latent frame 0), then each latent frame's tf pixel frames become its tf
    channels. The first frame conditioned: latent frame 0 is [1, 1, 1, 1], the rest 0;
    the last frame (diffusers' `last_image`): latent frame T - 1 is [0, 0, 0, 1].
  latents [T, H, W, C]: the normalised VAE latents of the condition video.

Our DiT is channels last, so the condition is [B, T, H, W, tf + C] (mask first, as in
diffusers), joined after the noisy latents by `models.dit.VideoDiT`. tf is the VAE's
temporal factor (4 for Wan: `models.dit.KEYFRAME_MASK_CHANNELS`).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

POSITIONS = ("first", "last")  # Which frame of the clip the keyframe is.


def frame_mask(
  num_latent_frames: int, pixel_frames: Sequence[int], temporal_factor: int = 4
) -> np.ndarray:
  """[T, tf] float32: the mask channels of each latent frame when the pixel frames
  `pixel_frames` (of 1 + tf (T - 1)) are given, as diffusers builds `mask_lat_size`."""
  if num_latent_frames < 1 or temporal_factor < 1:
    raise ValueError(
      f"frame_mask: need num_latent_frames >= 1 and temporal_factor >= 1, got "
      f"{num_latent_frames}, {temporal_factor}"
    )
  n = 1 + temporal_factor * (num_latent_frames - 1)
  if any(not 0 <= i < n for i in pixel_frames):
    raise ValueError(f"frame_mask: pixel frames {list(pixel_frames)} outside [0, {n})")
  m = np.zeros(n, np.float32)
  m[list(pixel_frames)] = 1.0
  # The first pixel frame stands for a whole latent frame (causal VAE): repeat it tf times.
  return np.concatenate([np.repeat(m[:1], temporal_factor), m[1:]]).reshape(-1, temporal_factor)


def keyframe_condition(
  keyframe: jax.Array,
  latents_shape: Sequence[int],
  position: str = "last",
  *,
  temporal_factor: int = 4,
  fill: jax.Array | None = None,
) -> jax.Array:
  """The DiT's keyframe condition [B, T, H, W, tf + C] for video latents of shape
  `latents_shape` (B, T, H, W, C).

  keyframe: [B, H, W, C] the keyframe's normalised VAE latent (one latent frame), placed
    in latent frame 0 ("first") or T - 1 ("last": the toy's keyframes end their clips).
  fill: [B, T, H, W, C] latents of the other frames (default zeros). diffusers encodes the
    keyframe padded with zero images as one video; pass that video's normalised latents
    here to build exactly its condition (the keyframe's frame of `fill` is replaced).
  """
  b, t, h, w, c = latents_shape
  if position not in POSITIONS:
    raise ValueError(f"keyframe position: expected one of {POSITIONS}, got {position!r}")
  if tuple(keyframe.shape) != (b, h, w, c):
    raise ValueError(
      f"keyframe latent: expected shape (B, H, W, C) = {(b, h, w, c)} (one latent frame of "
      f"latents {tuple(latents_shape)}), got {tuple(keyframe.shape)}"
    )
  if fill is not None and tuple(fill.shape) != (b, t, h, w, c):
    raise ValueError(
      f"keyframe fill: expected shape {(b, t, h, w, c)} (the latents'), got {tuple(fill.shape)}"
    )
  frame = 0 if position == "first" else t - 1
  pixel = 0 if position == "first" else temporal_factor * (t - 1)
  base = jnp.zeros((b, t, h, w, c), keyframe.dtype) if fill is None else fill.astype(keyframe.dtype)
  cond = base.at[:, frame].set(keyframe)
  mask = jnp.asarray(frame_mask(t, (pixel,), temporal_factor), keyframe.dtype)
  mask = jnp.broadcast_to(mask[None, :, None, None], (b, t, h, w, temporal_factor))
  return jnp.concatenate([mask, cond], axis=-1)
