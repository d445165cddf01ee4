"""Folders of videos for FVD: read them, check their sizes, pick frames.

A folder holds videos as .mp4 / .gif / .webm / .mov / .mkv files (decoded with PyAV
through data/video_io.py, every frame at the file's rate) or .npy arrays uint8
[T, H, W, 3]; other files are not read. Videos are uint8 [T, H, W, 3] RGB throughout.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np

from auteur_jax.data import video_io

VIDEO_EXTS = (".mp4", ".gif", ".webm", ".mov", ".mkv")
ARRAY_EXT = ".npy"


class VideoSetError(ValueError):
  """A video folder or file cannot serve: the message names it and what was expected."""


def read_video(path: str) -> np.ndarray:
  """One video file or .npy array -> uint8 [T, H, W, 3]."""
  if path.endswith(ARRAY_EXT):
    try:
      x = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
      raise VideoSetError(f"{path}: not a readable .npy array ({e})") from None
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] != 3 or not x.shape[0]:
      raise VideoSetError(
        f"{path}: array {x.dtype} {x.shape}; expected uint8 [T >= 1, H, W, 3] (RGB frames)"
      )
    return x
  try:
    info = video_io.probe(path)
    return video_io.read_frames(path, 0.0, info.duration, info.fps)
  except video_io.VideoError as e:
    raise VideoSetError(str(e)) from None


def read_folder(folder: str, min_videos: int = 2) -> dict[str, np.ndarray]:
  """{path: uint8 [T, H, W, 3]} of the folder's videos in name order; at least
  `min_videos` of them (a covariance needs 2)."""
  if not os.path.isdir(folder):
    raise VideoSetError(f"{folder}: not a folder (expected a folder of videos)")
  names = sorted(n for n in os.listdir(folder) if n.lower().endswith((*VIDEO_EXTS, ARRAY_EXT)))
  if len(names) < min_videos:
    raise VideoSetError(
      f"{folder}: {len(names)} videos; expected at least {min_videos} "
      f"({', '.join((*VIDEO_EXTS, ARRAY_EXT))} files)"
    )
  return {os.path.join(folder, n): read_video(os.path.join(folder, n)) for n in names}


def check_same_size(sets: Mapping[str, Mapping[str, np.ndarray]]) -> tuple[int, int]:
  """Every video of every set has the first one's frame size (H, W); returns it."""
  first = None
  for videos in sets.values():
    for path, v in videos.items():
      if first is None:
        first = (path, v.shape[1:3])
      elif v.shape[1:3] != first[1]:
        raise VideoSetError(
          f"{path}: frames {v.shape[2]}x{v.shape[1]} (WxH); expected "
          f"{first[1][1]}x{first[1][0]} like {first[0]} (one frame size for both sets)"
        )
  if first is None:
    raise VideoSetError("no videos to compare")
  return first[1]


def check_frames(sets: Mapping[str, Mapping[str, np.ndarray]], need: int | None) -> None:
  """Every video has at least `need` frames (None: any number)."""
  for videos in sets.values():
    for path, v in videos.items():
      if need is not None and v.shape[0] < need:
        raise VideoSetError(f"{path}: {v.shape[0]} frames; expected at least {need}")


def take_frames(video: np.ndarray, n: int | None) -> np.ndarray:
  """n frames of video [T, ...] evenly spaced from the first to the last (all if None)."""
  if n is None or n == video.shape[0]:
    return video
  if n < 1 or n > video.shape[0]:
    raise VideoSetError(f"cannot take {n} frames of a video of {video.shape[0]}")
  return video[np.round(np.linspace(0, video.shape[0] - 1, n)).astype(int)]
