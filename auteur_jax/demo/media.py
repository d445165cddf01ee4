"""The demo's pictures: a GIF of a story and the contact sheet (ground truth vs generated)."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def write_gif(path: str, frames: np.ndarray, fps: float, scale: int = 2) -> None:
  """uint8 [T, H, W, 3] -> an endlessly looping GIF at `fps`, each pixel scale x scale."""
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3 or not len(frames):
    raise ValueError(f"write_gif: expected frames [T, H, W, 3], got {frames.shape}")
  size = (frames.shape[2] * scale, frames.shape[1] * scale)
  images = [Image.fromarray(f).resize(size, Image.Resampling.NEAREST) for f in frames]
  images[0].save(
    path,
    save_all=True,
    append_images=images[1:],
    loop=0,
    duration=int(round(1000 / fps)),
    optimize=False,
  )


def contact_sheet(stories: Sequence[dict], tile: int = 128, text_width: int = 520) -> Image.Image:
  """One block per story: a row per step with the true keyframe, (optionally the
  rendered keyframe,) the last frame of the generated clip and the texts (generated
  action and caption, true action).

  stories: dicts with `title`, `true_frames` and `generated_frames` (uint8 [S, H, W, 3]),
  `actions`, `captions` (generated, S each), `true_actions` (S), optional `notes` (S
  short strings, e.g. the state reader's verdict), optional `keyframes` (uint8 [S, H, W,
  3]: the language director's rendered keyframes, shown between the two; all stories
  or none).
  """
  font = ImageFont.load_default()
  line_h, pad = 12, 6
  wrap = max(20, text_width // 6)
  row_h = max(tile, 9 * line_h) + pad
  height = sum(2 * line_h + 2 * pad + len(s["actions"]) * row_h for s in stories) + pad
  keys: tuple[str, ...] = ("true_frames", "keyframes", "generated_frames")
  keys = keys if stories and stories[0].get("keyframes") is not None else keys[::2]
  heads = {"true_frames": "ground truth", "keyframes": "keyframe", "generated_frames": "generated"}
  cols = len(keys)
  sheet = Image.new("RGB", (cols * tile + text_width + (cols + 2) * pad, height), (255, 255, 255))
  draw = ImageDraw.Draw(sheet)
  y = pad
  for s in stories:
    draw.text((pad, y), s["title"], fill=(0, 0, 0), font=font)
    y += line_h + 2
    for col, key in enumerate(keys):
      draw.text((pad + col * (tile + pad), y), heads[key], fill=(90, 90, 90), font=font)
    y += line_h + pad
    notes = s.get("notes") or [""] * len(s["actions"])
    for t in range(len(s["actions"])):
      for col, key in enumerate(keys):
        img = Image.fromarray(np.asarray(s[key][t])).resize((tile, tile), Image.Resampling.NEAREST)
        sheet.paste(img, (pad + col * (tile + pad), y))
      text = [f"step {t + 1}: {s['actions'][t]}"]
      text += textwrap.wrap(s["captions"][t], wrap)[:5]
      text += textwrap.wrap(f"true: {s['true_actions'][t]} {notes[t]}", wrap)[:2]
      draw.multiline_text(
        ((cols + 1) * pad + cols * tile, y), "\n".join(text), fill=(0, 0, 0), font=font, spacing=2
      )
      y += row_h
    y += pad
  return sheet
