"""Story batches with each step's keyframe latent: the keyframe renderer's data.

A story record holds its steps' text; `auteur encode --config toy/vae` stores VAE latents
per clip record. `StoryKeyframes` joins the two without a new file format: it indexes
the split's clip records by (video id, start, end), the key `auteur encode` matches a
story's steps to its clips by, and adds to a story's step arrays (pipeline.StoryDecoder)

  keyframes  float32 [S, h, w, C]: the last latent frame of each step's clip latents,
             zeros on padded steps.

The last latent frame is the state the step ends in (the toy's keyframes end their
clips: demo/data.end_keyframes) and the very latent that the keyframe-conditioned DiT is
conditioned on (train/task_dit.py), so a drawn keyframe can condition that DiT as it is.
For clips longer than the encoded window (config.encode.num_frames) it is the window's
end, not the clip's. Clip records are read by offset when a story is decoded: only the
index (three numbers per clip) stays in memory.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, BinaryIO

import numpy as np

from auteur_jax.data import examples, tfrecord

ClipKey = tuple[str, np.float32, np.float32]


def index_clips(paths: Sequence[str]) -> dict[ClipKey, tuple[str, int, int]]:
  """(video_id, start, end) as float32 seconds -> (path, data offset, length) of each clip
  record in the TFRecord files `paths`."""
  index = {}
  for path in paths:
    with tfrecord.open_shard(path) as f:
      for offset, length in tfrecord.index_records(path):
        ex = examples.decode_clip(tfrecord.read_record_at(f, path, offset, length), path)
        index[(ex["video_id"], np.float32(ex["start"]), np.float32(ex["end"]))] = (
          path,
          int(offset),
          int(length),
        )
  return index


@dataclasses.dataclass
class StoryKeyframes:
  """Story record -> `stories`' arrays plus `keyframes` [max_steps, *keyframe_shape].

  stories: a pipeline.StoryDecoder (its `arrays(ex)` and `max_steps`).
  clip_paths: every clip shard of the stories' split (a story's clips may be in any).
  keyframe_shape: (h, w, C) of one latent frame; a clip's latents must be [T', h, w, C].
  """

  stories: Any
  clip_paths: Sequence[str]
  keyframe_shape: tuple[int, int, int]

  def __post_init__(self) -> None:
    self._index = index_clips(self.clip_paths)
    self._handles: dict[str, BinaryIO] = {}

  def __call__(self, record: bytes) -> dict[str, np.ndarray]:
    ex = examples.decode_story(record)
    out = self.stories.arrays(ex)
    s = min(ex["num_steps"], self.stories.max_steps)
    keyframes = np.zeros((self.stories.max_steps, *self.keyframe_shape), np.float32)
    for t in range(s):
      keyframes[t] = self._keyframe(ex, t)
    out["keyframes"] = keyframes
    return out

  def _keyframe(self, story: dict, t: int) -> np.ndarray:
    """The last latent frame of step t's clip."""
    vid, start, end = story["video_id"], story["start"][t], story["end"][t]
    where = self._index.get((vid, np.float32(start), np.float32(end)))
    if where is None:
      raise ValueError(
        f"story {vid}: step {t} [{start}, {end}) s has no clip record in the split's clip "
        f"shards ({len(self.clip_paths)} files)"
      )
    path, offset, length = where
    f = self._handles.get(path) or self._handles.setdefault(path, tfrecord.open_shard(path))
    clip = examples.decode_clip(tfrecord.read_record_at(f, path, offset, length), path)
    latents = clip.get("latents")
    if latents is None:
      raise KeyError(
        f"clip {vid}/{clip['clip_id']} has no array 'latents'; run `auteur encode "
        "--config toy/vae` first (keyframes are the clips' last latent frames)"
      )
    if latents.ndim != 4 or tuple(latents.shape[1:]) != tuple(self.keyframe_shape):
      raise ValueError(
        f"clip {vid}/{clip['clip_id']}: latents of shape {tuple(latents.shape)}; expected "
        f"[T', {', '.join(map(str, self.keyframe_shape))}] (config.data.keyframe_shape)"
      )
    return latents[-1]

  def __getstate__(self) -> dict:
    state = dict(self.__dict__)  # Open files stay behind when grain copies this to a worker.
    state["_handles"] = {}
    return state
