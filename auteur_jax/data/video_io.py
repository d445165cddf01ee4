"""Video and image I/O: probe, decode time ranges, encode H.264, JPEG bytes.

Times are seconds from the start of the video stream (the first frame's time is 0 for
ordinary files). A frame is shown from its timestamp until the next frame's, so the
frame for time t is the latest one whose timestamp is <= t ("nearest previous").
Frames are HxWx3 uint8 RGB arrays throughout.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import tempfile
from collections.abc import Iterator, Sequence
from fractions import Fraction
from typing import cast

import av
import numpy as np
from PIL import Image

# Keyframe requests further apart than this re-seek instead of decoding forward.
_RESEEK_GAP_S = 2.0
# Tolerance (s) for float round-off when comparing sample times with frame times.
_EPS = 1e-6


class VideoError(IOError):
  """A video or image could not be read or written; the message names the file."""


@dataclasses.dataclass(frozen=True)
class VideoInfo:
  """What `probe` reports. duration in seconds, fps in frames per second."""

  duration: float
  fps: float
  num_frames: int
  width: int
  height: int


def _open(path: str) -> av.container.InputContainer:
  if not os.path.isfile(path):
    raise VideoError(f"{path}: no such video file")
  try:
    container = av.open(path)
  except (av.FFmpegError, ValueError) as e:
    raise VideoError(f"{path}: not a readable video ({e})") from e
  if not container.streams.video:
    container.close()
    raise VideoError(f"{path}: has no video stream")
  return container


def _info(path: str, container: av.container.InputContainer) -> VideoInfo:
  stream = container.streams.video[0]
  rate = stream.average_rate or stream.guessed_rate or stream.base_rate
  fps = float(rate) if rate else 0.0
  if stream.duration is not None and stream.time_base is not None:
    duration = float(stream.duration * stream.time_base)
  elif container.duration is not None:  # e.g. mkv/webm keep it on the container.
    duration = container.duration / av.time_base
  else:
    duration = stream.frames / fps if fps and stream.frames else 0.0
  num_frames = stream.frames or round(duration * fps)
  if duration <= 0 or fps <= 0:
    raise VideoError(
      f"{path}: cannot tell the video's duration/fps (duration={duration}, fps={fps})"
    )
  return VideoInfo(
    duration, fps, num_frames, stream.codec_context.width, stream.codec_context.height
  )


def probe(path: str) -> VideoInfo:
  """Duration (s), frame rate, frame count and size of `path`'s first video stream."""
  path = os.fspath(path)
  with _open(path) as container:
    return _info(path, container)


def sample_times(start: float, end: float, fps: float) -> np.ndarray:
  """Sample times (s) at `fps` inside [start, end): t_i = start + (i + 0.5) / fps.

  Each sample sits in the middle of its 1/fps slot, so a clip [start, end) gives
  floor((end - start) * fps + 0.5) samples and none falls on a boundary shared with
  the neighbouring clip. Returns float64 [N], possibly empty.
  """
  if fps <= 0:
    raise ValueError(f"sample fps must be > 0, got {fps}")
  n = max(0, math.ceil((end - start) * fps - 0.5 - _EPS))
  return start + (np.arange(n, dtype=np.float64) + 0.5) / fps


Size = int | tuple[int, int]  # A square side, or (height, width), in pixels.


def resize_center_crop(frame: np.ndarray, size: Size) -> np.ndarray:
  """HxWx3 uint8 -> [height, width, 3] of `size` (a side: square): resized to cover that
  box (for a square, the short side to `size`), then centre crop.

  Downscaling uses PIL's antialiased bilinear filter (a triangle filter widened by the
  scale factor, so it averages like an area filter instead of aliasing).
  """
  th, tw = (size, size) if isinstance(size, int) else size
  h, w = frame.shape[:2]
  scale = max(th / h, tw / w)
  new_w, new_h = max(tw, round(w * scale)), max(th, round(h * scale))
  if (new_h, new_w) != (h, w):
    image = Image.fromarray(frame).resize((new_w, new_h), Image.Resampling.BILINEAR)
    frame = np.asarray(image)
  top, left = (new_h - th) // 2, (new_w - tw) // 2
  return np.ascontiguousarray(frame[top : top + th, left : left + tw])


def _decode(
  container: av.container.InputContainer, times: np.ndarray, path: str
) -> Iterator[tuple[int, av.VideoFrame]]:
  """Yields (i, frame) for sorted `times`: the nearest-previous frame of times[i].

  Seeks (to the keyframe before) for the first time and whenever the next time is
  more than _RESEEK_GAP_S past the decoding position; otherwise decodes forward.
  """
  stream = container.streams.video[0]
  tb, t0 = stream.time_base, stream.start_time or 0
  if tb is None:
    raise VideoError(f"{path}: the video stream has no time base")
  i, n = 0, len(times)
  while i < n:
    container.seek(t0 + int(times[i] / tb), stream=stream, backward=True)
    prev, served = None, False
    for frame in container.decode(stream):
      if frame.pts is None:
        raise VideoError(f"{path}: frame without a timestamp near {times[i]:.3f} s")
      t = float((frame.pts - t0) * tb)
      # Every pending time before this frame is served by the previous frame; if the
      # seek landed after times[i] (time before the first frame) use this frame.
      while i < n and times[i] < t - _EPS:
        yield i, prev if prev is not None else frame
        i, served = i + 1, True
      if i == n or (served and times[i] - t > _RESEEK_GAP_S):
        break
      prev = frame
    else:  # End of stream: the last frame is shown until the end of the video.
      if prev is None:
        raise VideoError(f"{path}: no frame decoded at or after {times[i]:.3f} s")
      while i < n:
        yield i, prev
        i += 1


def _read(
  path: str, times: np.ndarray, size: Size | None, what: str, drop_past_end: bool
) -> np.ndarray:
  """Frames for sorted `times` [N] (s) -> uint8 [N', H, W, 3].

  Times at or past the end of the video are dropped if `drop_past_end` (N' <= N),
  else refused. `what` describes the request for error messages.
  """
  with _open(path) as container:
    info = _info(path, container)
    if drop_past_end:
      times = times[times < info.duration]
    if len(times) == 0 or times[0] < -_EPS or times[-1] >= info.duration + _EPS:
      raise VideoError(
        f"{path}: {what} yields no frame inside the video (duration {info.duration:.3f} s)"
      )
    container.streams.video[0].thread_type = "AUTO"  # Frame + slice threads.
    out: list[np.ndarray | None] = [None] * len(times)
    last_frame, last_array = None, None
    try:
      for i, frame in _decode(container, times, path):
        if frame is not last_frame:  # Convert each decoded frame once.
          last_frame, last_array = frame, frame.to_ndarray(format="rgb24")
          if size is not None:
            last_array = resize_center_crop(last_array, size)
        out[i] = last_array
    except av.FFmpegError as e:
      raise VideoError(f"{path}: decoding failed for {what} ({e})") from e
  return np.stack(cast(list[np.ndarray], out))  # _decode serves every time.


def read_frames(
  path: str, start: float, end: float, fps: float, size: Size | None = None
) -> np.ndarray:
  """Frames of [start, end) (s) sampled at `fps` (see `sample_times`).

  Only the needed part is decoded: seek to the keyframe before `start`, decode
  forward. Sample times at or past the end of the video are dropped (annotations often
  overshoot the last frame by a little).

  Returns:
    uint8 [T, H, W, 3], or resized and cropped to `size` when it is given.
  """
  path = os.fspath(path)
  what = f"range [{start:.3f}, {end:.3f}) s at {fps} fps"
  return _read(path, sample_times(start, end, fps), size, what, drop_past_end=True)


def read_frames_at(
  path: str, times: Sequence[float] | np.ndarray, size: Size | None = None
) -> np.ndarray:
  """Nearest-previous frames at arbitrary `times` (s), in the given order.

  Every time must lie inside [0, duration). Returns uint8 [len(times), H, W, 3].
  """
  path = os.fspath(path)
  ts = np.asarray(times, dtype=np.float64).reshape(-1)
  if len(ts) == 0:
    raise ValueError(f"{path}: read_frames_at needs at least one time")
  order = np.argsort(ts, kind="stable")
  what = f"times [{ts.min():.3f} .. {ts.max():.3f}] s"
  frames = _read(path, ts[order], size, what, drop_past_end=False)
  out = np.empty_like(frames)
  out[order] = frames
  return out


def write_video(
  path: str,
  frames: np.ndarray,
  fps: float,
  codec: str = "libx264",
  crf: int = 18,
  preset: str = "veryfast",
) -> None:
  """Writes uint8 [T, H, W, 3] RGB frames as an mp4 (yuv420p) at `fps`.

  H and W must be even (4:2:0 chroma is subsampled by 2). The file appears atomically:
  it is written to a temporary file in the same folder, then renamed. `crf` (quality,
  lower is better) and `preset` (x264 speed) apply to libx264/libx265 only.
  """
  path = os.fspath(path)
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
    raise ValueError(
      f"{path}: frames must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}"
    )
  t, h, w, _ = frames.shape
  if t == 0 or h % 2 or w % 2:
    raise ValueError(f"{path}: frames {frames.shape} need T >= 1 and even H, W for yuv420p")
  if not fps > 0:
    raise ValueError(f"{path}: fps must be > 0, got {fps}")
  folder, name = os.path.split(os.path.abspath(path))
  ext = os.path.splitext(name)[1] or ".mp4"
  fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=f".tmp{ext}", dir=folder)
  os.close(fd)
  try:
    with av.open(tmp, "w") as container:  # Container format from the extension.
      stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
      if not isinstance(stream, av.VideoStream):
        raise ValueError(f"{codec} is not a video codec")
      stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
      if codec in ("libx264", "libx265"):
        stream.options = {"crf": str(crf), "preset": preset}
      # Threads only pay off for frames bigger than ~256^2; tiny clips start faster.
      stream.codec_context.thread_count = 1 if h * w <= 256 * 256 else 0
      for i in range(t):
        # The encoder converts rgb24 -> yuv420p with one cached scaler; converting
        # each frame ourselves would build a new scaler per frame (~30x slower).
        frame = av.VideoFrame.from_ndarray(frames[i], format="rgb24")
        frame.pts = i
        container.mux(stream.encode(frame))
      container.mux(stream.encode())  # Flush delayed frames.
    os.replace(tmp, path)
  except BaseException as e:
    if os.path.exists(tmp):
      os.remove(tmp)
    if isinstance(e, (av.FFmpegError, ValueError)):  # e.g. an unknown codec name.
      raise VideoError(f"{path}: writing {codec} video failed ({e})") from e
    raise


def encode_jpeg(frame: np.ndarray, quality: int = 90) -> bytes:
  """HxWx3 uint8 -> JPEG bytes (4:2:0 chroma, `quality` in 1..95)."""
  if frame.ndim != 3 or frame.shape[-1] != 3 or frame.dtype != np.uint8:
    raise ValueError(f"encode_jpeg expects uint8 [H, W, 3], got {frame.dtype} {frame.shape}")
  buf = io.BytesIO()
  Image.fromarray(frame).save(buf, format="JPEG", quality=quality)
  return buf.getvalue()


def decode_jpeg(data: bytes, out: np.ndarray | None = None) -> np.ndarray:
  """JPEG bytes -> HxWx3 uint8 RGB (grey images are expanded to 3 channels).

  With `out` (uint8 [H, W, 3]), decodes into it and returns it: no new array, which
  matters on the data pipeline's hot path (fresh pages cost more than the copy).
  """
  try:
    image: Image.Image = Image.open(io.BytesIO(data))
    image.load()  # Decode now so corrupt data fails here, not later.
  except (OSError, SyntaxError, ValueError) as e:
    raise VideoError(f"<jpeg bytes, {len(data)} B>: not a decodable image ({e})") from e
  if image.mode != "RGB":
    image = image.convert("RGB")
  if out is None:
    return np.array(image)  # Writable (np.asarray of a PIL image is read-only).
  if out.shape != (image.height, image.width, 3):
    raise VideoError(
      f"<jpeg bytes, {len(data)} B>: image is {image.width}x{image.height}, "
      f"expected {out.shape[1]}x{out.shape[0]}"
    )
  out[...] = np.asarray(image)
  return out
