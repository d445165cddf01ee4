"""Animation of the toy kitchen: clips, whole stories and their per-frame truth.

`render_clip` animates one step: static frames, then motion over the middle 60 % of the
clip, then static frames again. `render_story` puts a recipe's clips back to back and
returns a `Timeline`, the true state of every frame; `contact_sheet` shows one keyframe
per step. Layout and drawing of frames at rest are in `toy_draw.py`.
"""

from __future__ import annotations

import dataclasses
import math
import textwrap
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from auteur_jax.data.toy_draw import (
  BURNER_OFF,
  BURNER_ON,
  HALF,
  HERBS,
  LIQUIDS,
  LOOKS,
  PLATE_CENTRE,
  POT_CENTRE,
  POT_INNER,
  SLOTS,
  Geometry,
  Look,
  draw_bubbles,
  draw_dot,
  draw_item,
  draw_items,
  draw_line,
  draw_rect,
  form_rgb,
  geometry,
  mix,
  pot_liquid,
  scale,
  scene,
  surface,
)

if TYPE_CHECKING:  # Only for annotations.
  from auteur_jax.data.toy_world import Recipe, State


def motion_window(n: int) -> tuple[int, int]:
  """Frames [a, b) of an n-frame clip in motion; the rest are at rest (n >= 3)."""
  a = min(max(1, int(round(0.2 * n))), n - 2)
  b = max(min(n - 1, int(round(0.8 * n))), a + 1)
  return a, b


def _ease(p: float) -> float:
  """0..1 -> 0..1, half linear, half cosine: starts and stops softly but visibly."""
  p = min(max(p, 0.0), 1.0)
  return 0.5 * p + 0.25 - 0.25 * math.cos(math.pi * p)


def _lerp(a: tuple[float, float], b: tuple[float, float], t: float) -> tuple[float, float]:
  return a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t


def _knife(img: np.ndarray, cy: float, cx: float, vertical: bool) -> None:
  if vertical:  # Blade from (cy - 6) to (cy + 6), handle above it.
    draw_rect(img, cy - 6, cy + 6, cx - 0.75, cx + 0.75, (215, 220, 228))
    draw_rect(img, cy - 12, cy - 6, cx - 1.0, cx + 1.0, (70, 45, 30))
  else:
    draw_rect(img, cy - 0.75, cy + 0.75, cx - 6, cx + 6, (215, 220, 228))
    draw_rect(img, cy - 1.0, cy + 1.0, cx + 6, cx + 12, (70, 45, 30))


def _shaker(img: np.ndarray, cy: float, cx: float) -> None:
  draw_rect(img, cy - 3, cy + 3, cx - 2, cx + 2, (245, 245, 245))
  draw_rect(img, cy - 4, cy - 2.5, cx - 2, cx + 2, (110, 110, 120))


def _spoon(img: np.ndarray, cy: float, cx: float, hy: float, hx: float) -> None:
  draw_line(img, cy, cx, hy, hx, 1.0, (190, 150, 95))
  draw_dot(img, cy, cx, 2.0, (225, 195, 140))


def render_clip(
  size: int,
  before: State,
  after: State,
  action: str,
  ingredient: str | None,
  n: int,
  first_frame: int = 0,
) -> np.ndarray:
  """Animates one step from `before` to `after` over n frames -> uint8 [n, S, S, 3].

  Frames outside `motion_window(n)` show `before` (start) or `after` (end) at rest;
  bubbles move in every frame while the pot boils. `first_frame` is the clip's offset
  in the story (it seeds the bubble pattern so the story is deterministic).
  """
  a, b = motion_window(n)
  out = np.empty((n, size, size, 3), np.uint8)
  rest = (scene(size, before), scene(size, after))
  geo = geometry(size)
  look = LOOKS[ingredient] if ingredient else None
  moving_base = scene(size, before, skip=ingredient) if ingredient else None
  for f in range(n):
    boiling = before.heat and before.water
    if f < a or f >= b:
      img = out[f]
      img[:] = rest[f >= b]
      if (after.heat and after.water) if f >= b else boiling:
        draw_bubbles(img, first_frame + f)
      continue
    p = (f - a + 0.5) / (b - a)
    s = _ease(p)
    if ingredient:
      assert moving_base is not None and look is not None  # Set for an ingredient.
      img = moving_base.copy()
      if boiling:
        draw_bubbles(img, first_frame + f)
      _move_item(img, action, look, before, p, s)
    else:
      img = surface(size, before.heat, pot_liquid(before), before.plate_seasoned).copy()
      _pot_effect(img, geo, action, before, after, p, s, first_frame + f)
    out[f] = img
  return out


def _move_item(img: np.ndarray, action: str, look: Look, before: State, p: float, s: float) -> None:
  """Moving-ingredient actions: place, chop, add, garnish, serve."""
  g = look.group
  if action == "chop":
    cy, cx = SLOTS["board"][g]
    cut = "whole" if p < 0.3 else "halved" if p < 0.7 else "chopped"
    draw_item(
      img,
      look,
      cut,
      form_rgb(look, "chopped" if cut == "chopped" else "whole"),
      cy,
      cx,
      HALF["board"],
    )
    if p < 0.5:  # First cut: the blade slides down the vertical cut line.
      x = cx + 30 * max(0.0, 0.1 - p) / 0.1
      _knife(img, cy - 7 + 14 * min(1.0, max(0.0, (p - 0.1) / 0.35)), x, True)
    else:  # Second cut across, then the knife leaves to the right.
      x = cx - 7 + 14 * min(1.0, (p - 0.5) / 0.35) + 30 * max(0.0, p - 0.88) / 0.12
      _knife(img, cy, x, False)
    return
  src, form_from, form_to = {
    "place": ("shelf", "whole", "whole"),
    "add": ("board", "chopped", "chopped"),
    "garnish": ("board", "chopped", "chopped"),
    "serve": ("pot", "cooked", "cooked"),
  }[action]
  dst = {"place": "board", "add": "pot", "garnish": "plate", "serve": "plate"}[action]
  cy, cx = _lerp(SLOTS[src][g], SLOTS[dst][g], s)
  half = HALF[src] + (HALF[dst] - HALF[src]) * s
  lift = 1.0 + 0.25 * math.sin(math.pi * s)  # Lifted items look a little bigger.
  if action == "serve":
    _spoon(img, cy, cx, cy - 9, cx + 6)
  draw_item(
    img,
    look,
    "whole" if form_from == "whole" else "chopped",
    form_rgb(look, form_to),
    cy,
    cx,
    half * lift,
  )


def _pot_effect(
  img: np.ndarray,
  geo: Geometry,
  action: str,
  before: State,
  after: State,
  p: float,
  s: float,
  frame_index: int,
) -> None:
  """Whole-pot and plate actions: pour, boil, season, stir, sprinkle (img = surface)."""
  py, px = POT_CENTRE
  if action == "pour":  # Water spreads from the middle of the pot.
    img[geo.pot_interior & (geo.pot_dist < POT_INNER * s)] = LIQUIDS["water"]
  elif action == "boil":
    img[geo.burner] = mix(BURNER_OFF, BURNER_ON, s)
  elif action == "season":
    img[geo.pot_interior] = mix(LIQUIDS["water"], LIQUIDS["broth"], s)
  elif action == "sprinkle":  # Herbs land progressively from left to right.
    k = scale(img.shape[0])
    cols = np.nonzero(geo.herbs)[1]
    sel = geo.herbs.copy()
    sel[geo.herbs] = cols < (2 + 60 * s) * k
    img[sel] = HERBS
  bubbles = after.heat and after.water and (action != "boil" or s > 0.3)
  if bubbles:
    draw_bubbles(img, frame_index, 5 if action != "boil" else int(5 * s))
  draw_items(img, before, cooking=s if action == "stir" else 0.0)
  if action == "pour":
    jy, jx = _lerp((4.0, 70.0), (py - 12, px + 9), min(1.0, 3 * p) * (1 - max(0.0, 3 * p - 2)))
    if 0.3 < p < 0.75:
      draw_line(img, jy + 2, jx - 3, py, px, 1.5, LIQUIDS["water"])
    draw_rect(img, jy - 4, jy + 4, jx - 3.5, jx + 3.5, (225, 235, 245))
    draw_rect(img, jy - 4, jy - 2, jx - 3.5, jx + 3.5, (60, 100, 190))
  elif action == "stir":
    ang = 4 * math.pi * s
    sy, sx = py + 7 * math.sin(ang), px + 7 * math.cos(ang)
    _spoon(img, sy, sx, sy - 10 * math.sin(ang + 0.6), sx - 10 * math.cos(ang + 0.6) + 12)
  elif action in ("season", "sprinkle"):
    if action == "season":
      cy, cx = py - 8 + 2 * math.sin(8 * math.pi * p), px + 3 * math.sin(6 * math.pi * p)
    else:
      cy, cx = PLATE_CENTRE[0] - 8 + 2 * math.sin(8 * math.pi * p), 2 + 60 * s
    for j in range(3):  # Falling grains below the shaker.
      draw_dot(img, cy + 4 + ((3 * j + 5 * p * 10) % 6), cx - 1.5 + 1.5 * j, 0.5, (40, 40, 40))
    _shaker(img, cy, cx)


@dataclasses.dataclass(frozen=True)
class Timeline:
  """The truth of every frame of a rendered story (T frames, steps s = 0..N-1).

  Attributes:
    states: [N + 1] the recipe's states; states[s + 1] is the state after step s.
    state_index: int [T], the index into `states` of each frame's true state. Inside a
      clip it switches from s to s + 1 at the middle of the motion window.
    moving: bool [T], whether something moves (an ingredient or a tool) in the frame.
      Frames not moving show their state exactly at rest (bubbles aside).
    clips: [N] (first, end) frame range of each step's clip.
    motion: [N] (first, end) frame range of each clip's motion window.
  """

  states: list[State]
  state_index: np.ndarray
  moving: np.ndarray
  clips: list[tuple[int, int]]
  motion: list[tuple[int, int]]

  def frame_state(self, t: int) -> State:
    return self.states[int(self.state_index[t])]


def clip_frames(duration: float, fps: float) -> int:
  """Frames in a clip of `duration` seconds at `fps` (at least 3: rest, motion, rest)."""
  return max(3, int(round(duration * fps)))


def render_story(recipe: Recipe, size: int = 64, fps: float = 8.0) -> tuple[np.ndarray, Timeline]:
  """All clips of `recipe` back to back -> (uint8 [T, size, size, 3], Timeline)."""
  states = recipe.states()
  counts = [clip_frames(step.duration, fps) for step in recipe.steps]
  frames = np.empty((sum(counts), size, size, 3), np.uint8)
  index = np.empty(len(frames), np.int32)
  moving = np.zeros(len(frames), bool)
  clips, motion, f0 = [], [], 0
  for s, (step, n) in enumerate(zip(recipe.steps, counts)):
    frames[f0 : f0 + n] = render_clip(
      size, states[s], states[s + 1], step.action, step.ingredient, n, first_frame=f0
    )
    a, b = motion_window(n)
    index[f0 : f0 + n] = s
    index[f0 + (a + b) // 2 : f0 + n] = s + 1
    moving[f0 + a : f0 + b] = True
    clips.append((f0, f0 + n))
    motion.append((f0 + a, f0 + b))
    f0 += n
  return frames, Timeline(states, index, moving, clips, motion)


def contact_sheet(
  frames: np.ndarray,
  timeline: Timeline,
  labels: list[str],
  title: str,
  columns: int = 4,
  tile: int = 160,
) -> Image.Image:
  """One keyframe per step (its clip's last frame, at rest) with its label underneath."""
  n = len(timeline.clips)
  columns = min(columns, n)
  rows = -(-n // columns)
  font = ImageFont.load_default()
  wrap = max(10, tile // 6)
  text_h = 12 * 4 + 6
  sheet = Image.new(
    "RGB", (columns * (tile + 8) + 8, 24 + rows * (tile + text_h + 8)), (255, 255, 255)
  )
  draw = ImageDraw.Draw(sheet)
  draw.text((8, 6), title, fill=(0, 0, 0), font=font)
  for i, ((_, end), label) in enumerate(zip(timeline.clips, labels)):
    x, y = 8 + (i % columns) * (tile + 8), 24 + (i // columns) * (tile + text_h + 8)
    img = Image.fromarray(frames[end - 1]).resize((tile, tile), Image.Resampling.NEAREST)
    sheet.paste(img, (x, y))
    lines = textwrap.wrap(f"{i + 1}. {label}", wrap)[:4]
    draw.multiline_text((x, y + tile + 3), "\n".join(lines), fill=(0, 0, 0), font=font, spacing=2)
  return sheet
