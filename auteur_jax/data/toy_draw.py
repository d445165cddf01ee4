"""Look and layout of the toy kitchen, and fast numpy drawing of its frames at rest.

Geometry is in *units*: a frame is 64 x 64 units at any pixel size (size / 64 pixels per
unit), y down, x right. Every ingredient has a fixed *slot* on each surface, set by its
group (0..3); a dish uses at most one ingredient per group, so nothing overlaps at rest
and the state reader (`eval/toy_state.py`) looks in fixed places.

  shelf   y 1..15, x 1..63        4 slots in a row: whole ingredients waiting
  board   y 18..46, x 2..30       2 x 2 slots (cutting board)
  stove   y 17..47, x 33..63      burner ring around the pot: grey (off) / orange (on)
  pot     centre (32, 48)         interior radius 11.5, 2 x 2 slots; empty / water / broth
  plate   ellipse at (56, 32)     radii 7 x 29.5, 4 slots in a row; herbs when sprinkled

Forms: whole (solid shape), chopped (four pieces with a cross-shaped gap, 25 % lighter:
the cut faces), cooked (the same pieces, 45 % towards brown).

Drawing is vectorised: sprites are cached boolean masks blitted with one fancy-index
assignment; surfaces are cached per (size, flags). Animation is in `toy_render.py`.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

if TYPE_CHECKING:  # Only for annotations: toy_world imports nothing from here.
  from auteur_jax.data.toy_world import State

UNITS = 64.0
RGB = tuple[int, int, int]


class Look(NamedTuple):
  """An ingredient's name, slot group and appearance (colour words are for captions)."""

  name: str
  group: int
  rgb: RGB
  shape: str
  words: str  # e.g. "round red": the caption's description of the whole ingredient.


# Within a group the colours are far apart (the reader decides among a group's three);
# across all twelve, colour + shape pairs are distinct.
INGREDIENTS: tuple[Look, ...] = (
  Look("tomato", 0, (215, 35, 35), "circle", "round red"),
  Look("broccoli", 0, (35, 140, 45), "cross", "green cross-shaped"),
  Look("fish", 0, (70, 130, 220), "hellipse", "blue oval"),
  Look("carrot", 1, (245, 125, 20), "triangle", "orange triangular"),
  Look("cucumber", 1, (20, 170, 150), "wide", "long teal"),
  Look("eggplant", 1, (120, 45, 160), "vellipse", "tall purple"),
  Look("corn", 2, (245, 215, 30), "tall", "tall yellow"),
  Look("beet", 2, (185, 20, 110), "diamond", "magenta diamond-shaped"),
  Look("tofu", 2, (248, 248, 240), "square", "square white"),
  Look("pepper", 3, (140, 215, 40), "hexagon", "lime-green hexagonal"),
  Look("shrimp", 3, (250, 140, 160), "ring", "pink ring-shaped"),
  Look("mushroom", 3, (140, 95, 60), "mushroom", "brown"),
)
LOOKS = {look.name: look for look in INGREDIENTS}
NUM_GROUPS = 4

COUNTER, SHELF, BOARD, BOARD_EDGE = (160, 165, 170), (85, 90, 105), (215, 170, 115), (185, 140, 90)
STOVE, BURNER_OFF, BURNER_ON = (50, 50, 56), (85, 85, 92), (240, 100, 30)
POT_RIM = (175, 180, 188)
LIQUIDS = {"none": (62, 62, 70), "water": (60, 125, 215), "broth": (232, 218, 175)}
PLATE, PLATE_RIM, HERBS = (178, 198, 218), (150, 170, 195), (35, 95, 35)
BROWN, WHITE, BUBBLE = (105, 55, 20), (255, 255, 255), (240, 248, 255)

POT_CENTRE, POT_INNER, POT_OUTER = (32.0, 48.0), 11.5, 12.5
BURNER_RADII = (12.5, 14.5)
PLATE_CENTRE, PLATE_RADII = (56.0, 32.0), (7.0, 29.5)

# Slot centres (y, x) in units per surface and group, and sprite half-sizes (units).
SLOTS: dict[str, tuple[tuple[float, float], ...]] = {
  "shelf": tuple((8.0, 8.0 + 16.0 * g) for g in range(NUM_GROUPS)),
  "board": ((25.0, 9.0), (25.0, 23.0), (39.0, 9.0), (39.0, 23.0)),
  "pot": tuple(
    (POT_CENTRE[0] + dy, POT_CENTRE[1] + dx) for dy in (-4.5, 4.5) for dx in (-4.5, 4.5)
  ),
  "plate": tuple((56.0, 14.0 + 12.0 * g) for g in range(NUM_GROUPS)),
}
HALF = {"shelf": 5.5, "board": 5.5, "pot": 3.75, "plate": 4.5}
CUT_GAP = 0.25  # Half-width of the cut gap in sprite coordinates (-1..1).

_SHAPES = {
  "circle": lambda u, v: u * u + v * v <= 1.0,
  "square": lambda u, v: np.maximum(abs(u), abs(v)) <= 0.85,
  "triangle": lambda u, v: (v >= -0.95) & (v <= 0.85) & (abs(u) <= (v + 0.95) * 0.5),
  "diamond": lambda u, v: abs(u) + abs(v) <= 1.0,
  "cross": lambda u, v: ((abs(u) <= 0.4) | (abs(v) <= 0.4)) & (np.maximum(abs(u), abs(v)) <= 0.95),
  "tall": lambda u, v: (abs(u) <= 0.5) & (abs(v) <= 0.95),
  "wide": lambda u, v: (abs(u) <= 0.95) & (abs(v) <= 0.5),
  "vellipse": lambda u, v: (u / 0.62) ** 2 + v * v <= 1.0,
  "hellipse": lambda u, v: u * u + (v / 0.6) ** 2 <= 1.0,
  "ring": lambda u, v: (u * u + v * v <= 1.0) & (u * u + v * v >= 0.2),
  "hexagon": lambda u, v: (abs(v) <= 0.85) & (abs(u) * 0.866 + abs(v) * 0.5 <= 0.9),
  "mushroom": lambda u, v: (
    ((u * u + (v + 0.05) ** 2 <= 0.9) & (v <= 0.05)) | ((abs(u) <= 0.3) & (v >= 0.0) & (v <= 0.95))
  ),
}


def mix(a: RGB, b: RGB, t: float) -> RGB:
  """The colour a fraction `t` of the way from `a` to `b`."""
  r, g, b_ = (int(round((1.0 - t) * x + t * y)) for x, y in zip(a, b))
  return r, g, b_


def form_rgb(look: Look, form: str) -> RGB:
  """The colour of `look` in `form` (whole, halved, chopped, cooked)."""
  if form in ("whole", "halved"):
    return look.rgb
  if form == "chopped":
    return mix(look.rgb, WHITE, 0.25)
  if form == "cooked":
    return mix(look.rgb, BROWN, 0.45)
  raise ValueError(f"unknown form {form!r}")


def scale(size: int) -> float:
  """Pixels per unit."""
  return size / UNITS


def sprite_px(half: float, k: float) -> int:
  """Side (px) of a sprite with half-size `half` units at `k` px per unit."""
  return max(3, int(round(2.0 * half * k)))


def sprite_origin(cy: float, cx: float, n: int, k: float) -> tuple[int, int]:
  """Top-left pixel of an n-px sprite centred at (cy, cx) units."""
  return int(math.floor(cy * k - n / 2 + 0.5)), int(math.floor(cx * k - n / 2 + 0.5))


@functools.lru_cache(maxsize=4096)
def sprite_mask(shape: str, cut: str, n: int) -> np.ndarray:
  """Bool [n, n] mask of `shape`; cut: whole | halved (one vertical cut) | chopped.

  A cut moves each piece outward (the piece's own coordinates are rescaled into its
  quadrant) and leaves a gap of CUT_GAP on either side of the cut line.
  """
  c = (np.arange(n) + 0.5) / (n / 2.0) - 1.0  # Pixel centres in -1..1.
  v, u = np.meshgrid(c, c, indexing="ij")
  s = CUT_GAP
  # Pieces are the shape plus a central disc, so thin shapes (corn, rings) still give
  # chunky pieces that survive compression.
  piece = lambda a, b: _SHAPES[shape](a, b) | (a * a + b * b <= 0.6)  # noqa: E731
  if cut == "whole":
    mask = _SHAPES[shape](u, v)
  elif cut == "halved":
    mask = piece((u - np.sign(u) * s) / (1 - s), v) & (abs(u) >= s)
  elif cut == "chopped":
    mask = (
      piece((u - np.sign(u) * s) / (1 - s), (v - np.sign(v) * s) / (1 - s))
      & (abs(u) >= s)
      & (abs(v) >= s)
    )
  else:
    raise ValueError(f"unknown cut {cut!r}")
  mask.flags.writeable = False  # Cached and shared.
  return mask


def blit(img: np.ndarray, mask: np.ndarray, top: int, left: int, rgb: RGB) -> None:
  """Paints `rgb` where `mask` [h, w] is set, at pixel (top, left); clipped to img."""
  h, w = mask.shape
  size_y, size_x = img.shape[:2]
  y0, x0, y1, x1 = max(top, 0), max(left, 0), min(top + h, size_y), min(left + w, size_x)
  if y0 >= y1 or x0 >= x1:
    return
  img[y0:y1, x0:x1][mask[y0 - top : y1 - top, x0 - left : x1 - left]] = rgb


def draw_item(
  img: np.ndarray, look: Look, cut: str, rgb: RGB, cy: float, cx: float, half: float
) -> None:
  """Draws an ingredient sprite centred at (cy, cx) units with half-size `half` units."""
  k = scale(img.shape[0])
  n = sprite_px(half, k)
  top, left = sprite_origin(cy, cx, n, k)
  blit(img, sprite_mask(look.shape, cut, n), top, left, rgb)


def draw_rect(img: np.ndarray, y0: float, y1: float, x0: float, x1: float, rgb: RGB) -> None:
  """Fills the rectangle [y0, y1) x [x0, x1) in units (clipped to the frame)."""
  k = scale(img.shape[0])
  r = [int(round(t * k)) for t in (y0, y1, x0, x1)]
  img[max(r[0], 0) : max(r[1], 0), max(r[2], 0) : max(r[3], 0)] = rgb


def draw_dot(img: np.ndarray, cy: float, cx: float, radius: float, rgb: RGB) -> None:
  """A filled disc of `radius` units (at least one pixel)."""
  k = scale(img.shape[0])
  n = max(1, int(round(2 * radius * k)))
  top, left = sprite_origin(cy, cx, n, k)
  blit(img, sprite_mask("circle", "whole", n) if n >= 3 else np.ones((n, n), bool), top, left, rgb)


def draw_line(
  img: np.ndarray, y0: float, x0: float, y1: float, x1: float, width: float, rgb: RGB
) -> None:
  """A straight stroke of `width` units from (y0, x0) to (y1, x1)."""
  k = scale(img.shape[0])
  n = max(2, int(math.hypot(y1 - y0, x1 - x0) * k * 2))
  w = max(1, int(round(width * k)))
  ys = np.round(np.linspace(y0, y1, n) * k - w / 2).astype(int)
  xs = np.round(np.linspace(x0, x1, n) * k - w / 2).astype(int)
  ys = (ys[:, None, None] + np.arange(w)[None, :, None]).repeat(w, 2).ravel()
  xs = (xs[:, None, None] + np.arange(w)[None, None, :]).repeat(w, 1).ravel()
  ok = (ys >= 0) & (ys < img.shape[0]) & (xs >= 0) & (xs < img.shape[1])
  img[ys[ok], xs[ok]] = rgb


class Geometry(NamedTuple):
  """Per-size pixel masks of the fixed regions (bool [S, S] unless noted)."""

  pot_interior: np.ndarray
  burner: np.ndarray  # Burner ring pixels left visible around the pot.
  pot_free: np.ndarray  # Pot interior outside every (dilated) slot box: liquid shows.
  plate: np.ndarray  # Whole plate incl. rim.
  plate_inner: np.ndarray  # Plate without its rim.
  plate_free: np.ndarray  # Plate interior outside the slot boxes: where herbs go.
  herbs: np.ndarray  # The herb speck pixels (subset of plate_free).
  bubbles: np.ndarray  # int [N, 2] candidate bubble pixels (inside pot_free).
  pot_dist: np.ndarray  # float [S, S] distance (units) from the pot centre.


def slot_box(location: str, group: int, size: int, margin: int = 1) -> tuple[int, int, int, int]:
  """Pixel box (y0, y1, x0, x1) of a slot's sprite, grown by `margin` px, clipped."""
  k = scale(size)
  n = sprite_px(HALF[location], k)
  top, left = sprite_origin(*SLOTS[location][group], n, k)
  return (
    max(top - margin, 0),
    min(top + n + margin, size),
    max(left - margin, 0),
    min(left + n + margin, size),
  )


@functools.lru_cache(maxsize=16)
def geometry(size: int) -> Geometry:
  """The region masks of a `size` x `size` frame (cached)."""
  k = scale(size)
  c = (np.arange(size) + 0.5) / k
  yy, xx = np.meshgrid(c, c, indexing="ij")
  d = np.hypot(yy - POT_CENTRE[0], xx - POT_CENTRE[1])
  interior = d < POT_INNER
  burner = (d >= POT_OUTER) & (d < BURNER_RADII[1])
  e = ((yy - PLATE_CENTRE[0]) / PLATE_RADII[0]) ** 2 + (
    (xx - PLATE_CENTRE[1]) / PLATE_RADII[1]
  ) ** 2
  plate = e <= 1.0
  plate_in = e <= 0.88**2
  slots = {loc: np.zeros((size, size), bool) for loc in ("pot", "plate")}
  for loc in slots:
    for g in range(NUM_GROUPS):
      y0, y1, x0, x1 = slot_box(loc, g, size, margin=max(1, int(round(k))))
      slots[loc][y0:y1, x0:x1] = True
  pot_free = interior & ~slots["pot"] & (d < POT_INNER - 0.8)
  plate_free = plate_in & ~slots["plate"]
  iy, ix = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
  herbs = plate_free & (((iy * 7 + ix * 13) // max(1, int(round(k)))) % 5 == 0)
  bubbles = np.argwhere(pot_free & (d < POT_INNER - 1.5))
  geo = Geometry(interior, burner, pot_free, plate, plate_in, plate_free, herbs, bubbles, d)
  for a in geo:
    a.flags.writeable = False  # Cached and shared.
  return geo


@functools.lru_cache(maxsize=64)
def surface(size: int, heat: bool, liquid: str, herbs: bool) -> np.ndarray:
  """The counter, shelf, board, stove, pot and plate without ingredients. Read-only."""
  if size % 16 or not 16 <= size <= 256:
    raise ValueError(f"frame size must be a multiple of 16 in [16, 256], got {size}")
  geo = geometry(size)
  img = np.empty((size, size, 3), np.uint8)
  img[:] = COUNTER
  draw_rect(img, 1, 15, 1, 63, SHELF)
  draw_rect(img, 18, 46, 2, 30, BOARD_EDGE)
  draw_rect(img, 19, 45, 3, 29, BOARD)
  draw_rect(img, 17, 47, 33, 63, STOVE)
  img[geo.burner] = BURNER_ON if heat else BURNER_OFF
  img[(geo.pot_dist < POT_OUTER) & ~geo.pot_interior] = POT_RIM
  img[geo.pot_interior] = LIQUIDS[liquid]
  img[geo.plate] = PLATE_RIM
  img[geo.plate_inner] = PLATE
  if herbs:
    img[geo.herbs] = HERBS
  img.flags.writeable = False
  return img


def pot_liquid(state: State) -> str:
  """The pot's liquid: none, water or broth (seasoned water)."""
  return "broth" if state.pot_seasoned else "water" if state.water else "none"


def scene(size: int, state: State, skip: str | None = None) -> np.ndarray:
  """A frame of `state` at rest (no bubbles), leaving out ingredient `skip`. [S, S, 3]."""
  img = surface(size, state.heat, pot_liquid(state), state.plate_seasoned).copy()
  draw_items(img, state, skip)
  return img


def draw_items(
  img: np.ndarray, state: State, skip: str | None = None, cooking: float = 0.0
) -> None:
  """Draws every ingredient of `state` at its slot except `skip`.

  `cooking` in 0..1 blends chopped pieces in the pot towards their cooked colour (stir).
  """
  for name, (loc, form) in state.ingredients.items():
    if name == skip:
      continue
    look = LOOKS[name]
    cy, cx = SLOTS[loc][look.group]
    rgb = form_rgb(look, form)
    if cooking and loc == "pot" and form == "chopped":
      rgb = mix(rgb, form_rgb(look, "cooked"), cooking)
    draw_item(img, look, "whole" if form == "whole" else "chopped", rgb, cy, cx, HALF[loc])


def draw_bubbles(img: np.ndarray, frame_index: int, count: int = 5) -> None:
  """A few boiling bubbles at positions that change every frame (deterministic)."""
  cand = geometry(img.shape[0]).bubbles
  if count <= 0 or len(cand) == 0:
    return
  pick = cand[(frame_index * 7919 + np.arange(count) * 104729) % len(cand)]
  img[pick[:, 0], pick[:, 1]] = BUBBLE
