"""Tests for auteur_jax.data.video_io on a synthetic moving-square video."""

from __future__ import annotations

import os

import numpy as np
import pytest

from auteur_jax.data import video_io

FPS, SECONDS, H, W, SQ = 10, 3, 48, 64, 8


def square_x(t: float) -> int:
  """Left edge (px) of the square in the frame shown at time t (s)."""
  return 2 * int(round(t * FPS))


def make_frames() -> np.ndarray:
  """[30, 48, 64, 3]: grey background, a red square moving 2 px right per frame."""
  frames = np.full((FPS * SECONDS, H, W, 3), 40, np.uint8)
  for i in range(len(frames)):
    x = square_x(i / FPS)
    frames[i, 20 : 20 + SQ, x : x + SQ] = (230, 30, 30)
  return frames


def measured_x(frame: np.ndarray) -> float:
  """Left edge of the red square, from the red-channel column profile."""
  red = (frame[..., 0].astype(int) - frame[..., 1]) > 100
  cols = np.nonzero(red.any(axis=0))[0]
  return float(cols.min())


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> str:
  path = str(tmp_path_factory.mktemp("video") / "square.mp4")
  video_io.write_video(path, make_frames(), fps=FPS)
  return path


def test_probe(video):
  info = video_io.probe(video)
  assert info.duration == pytest.approx(SECONDS, abs=0.05)
  assert info.fps == pytest.approx(FPS)
  assert info.num_frames == FPS * SECONDS
  assert (info.width, info.height) == (W, H)


def test_sample_times_are_slot_centres():
  np.testing.assert_allclose(video_io.sample_times(1.0, 2.0, 5), [1.1, 1.3, 1.5, 1.7, 1.9])
  assert len(video_io.sample_times(0.0, 3.0, 10)) == 30
  assert len(video_io.sample_times(2.0, 2.0, 10)) == 0


def test_read_frames_middle_range(video):
  frames = video_io.read_frames(video, 1.0, 2.0, fps=5)
  assert frames.shape == (5, H, W, 3) and frames.dtype == np.uint8
  for t, frame in zip(video_io.sample_times(1.0, 2.0, 5), frames):
    # Nearest previous frame of t=1.1 is the one at 1.1 (or 1.0 under round-off).
    expected = square_x(np.floor(t * FPS + 1e-6) / FPS)
    assert abs(measured_x(frame) - expected) <= 1, (t, measured_x(frame), expected)


def test_read_frames_resized(video):
  frames = video_io.read_frames(video, 0.0, 1.0, fps=10, size=32)
  assert frames.shape == (10, 32, 32, 3)


def test_read_frames_drops_times_past_end(video):
  frames = video_io.read_frames(video, 2.5, 4.0, fps=10)
  assert len(frames) == 5  # 2.55 .. 2.95; times >= 3 s are past the last frame.


def test_read_frames_at_keeps_order(video):
  times = [2.5, 0.05, 1.2, 1.2]
  frames = video_io.read_frames_at(video, times)
  assert frames.shape == (4, H, W, 3)
  for t, frame in zip(times, frames):
    assert abs(measured_x(frame) - square_x(np.floor(t * FPS + 1e-6) / FPS)) <= 1


def test_out_of_range_names_file_and_duration(video):
  with pytest.raises(video_io.VideoError, match=r"square\.mp4.*\[5\.000, 6\.000\).*3\.000"):
    video_io.read_frames(video, 5.0, 6.0, fps=5)
  with pytest.raises(video_io.VideoError, match="square.mp4"):
    video_io.read_frames_at(video, [0.5, 10.0])


def test_unreadable_and_missing_files(tmp_path):
  junk = tmp_path / "junk.mp4"
  junk.write_bytes(np.random.default_rng(0).bytes(4096))
  with pytest.raises(video_io.VideoError, match="junk.mp4"):
    video_io.probe(str(junk))
  with pytest.raises(video_io.VideoError, match="junk.mp4"):
    video_io.read_frames(str(junk), 0, 1, 5)
  with pytest.raises(video_io.VideoError, match="missing.mp4"):
    video_io.probe(str(tmp_path / "missing.mp4"))


def test_resize_center_crop_centres_wide_frame():
  frame = np.zeros((100, 200, 3), np.uint8)
  frame[:, 50:150] = 255  # Bright centre half; the crop should keep exactly it.
  out = video_io.resize_center_crop(frame, 50)
  assert out.shape == (50, 50, 3) and out.dtype == np.uint8
  assert out[:, 2:-2].min() == 255
  tall = video_io.resize_center_crop(np.zeros((90, 30, 3), np.uint8), 16)
  assert tall.shape == (16, 16, 3)


def test_resize_center_crop_to_a_wide_box():
  """(height, width): a 1280 x 720 frame goes to 72 x 128 whole; a square one is scaled to
  the box's width and its middle rows kept."""
  wide = np.zeros((720, 1280, 3), np.uint8)
  wide[:, :640] = 255  # Left half bright: the resize keeps the whole picture.
  out = video_io.resize_center_crop(wide, (72, 128))
  assert out.shape == (72, 128, 3)
  assert out[:, :62].min() == 255 and out[:, 66:].max() == 0
  square = np.zeros((100, 100, 3), np.uint8)
  square[:15] = 255  # The top rows fall outside a 16:9 crop.
  out = video_io.resize_center_crop(square, (36, 64))
  assert out.shape == (36, 64, 3) and out.max() < 255


def test_write_video_refuses_odd_dims(tmp_path):
  with pytest.raises(ValueError, match=r"\(2, 5, 6, 3\)"):
    video_io.write_video(str(tmp_path / "odd.mp4"), np.zeros((2, 5, 6, 3), np.uint8), 10)
  assert not os.listdir(tmp_path)


def test_write_video_is_atomic_and_fractional_fps(tmp_path):
  path = tmp_path / "clip.mp4"
  video_io.write_video(str(path), make_frames()[:8, :32, :32], fps=29.97)
  assert os.listdir(tmp_path) == ["clip.mp4"]  # No temporary file left behind.
  assert video_io.probe(str(path)).fps == pytest.approx(29.97, abs=0.01)


def test_jpeg_round_trip():
  frame = make_frames()[7]
  data = video_io.encode_jpeg(frame, quality=95)
  assert data[:2] == b"\xff\xd8"
  back = video_io.decode_jpeg(data)
  assert back.shape == frame.shape and back.dtype == np.uint8
  assert np.abs(back.astype(int) - frame).mean() < 3
  back[0, 0] = 0  # Writable.
  with pytest.raises(video_io.VideoError, match="jpeg"):
    video_io.decode_jpeg(b"not a jpeg at all")
