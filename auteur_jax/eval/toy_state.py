"""Reads the toy kitchen's world state back from a frame, by pixels, with no learning.

The toy kitchen puts every ingredient in a fixed slot per surface (its group's slot,
see `data/toy_draw.py`), so reading is template matching in fixed boxes: for each
surface and group, the slot's pixels are compared (mean squared difference) with the
rendered slot showing nothing or each ingredient of that group in each form allowed
there, and the nearest template wins. The pot's liquid, the burner and the plate's
herbs are read from the mean / median colour of their free pixels (nearest reference
colour), and the pot templates are drawn on the liquid just read.

Guarantees hold for frames at rest (`Timeline.moving` false: nothing moves, bubbles
aside) at 64 px and up (48 px works too, a little less robust to compression); frames
in motion show items between slots and tools on top and are read on a best-effort
basis. Frames under 48 px are refused.

`state_accuracy` scores per *object*: each ingredient in either state, plus the four
flags (water, heat, pot_seasoned, plate_seasoned); an object is right when it is equal
in both states (an ingredient missing from one side is wrong).

`read_looks` reads what each slot group's sprite *looks like*, whatever it is meant to be
(`ItemLook`: colour, cooked, cut, shape class), for identity checks on generated frames
(eval/keyframe_metrics.py). `read_state` only decides among a group's three ingredients
in the forms allowed in a place; `read_looks` matches every (shape, cut) sprite mask in
any of the twelve ingredients' three form colours, so a tomato drawn blue, square or cut
reads as such.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from auteur_jax.data import toy_draw as td
from auteur_jax.data.toy_world import REST_FORMS, State

FLAGS = ("water", "heat", "pot_seasoned", "plate_seasoned")
MIN_SIZE = 48  # Below this the pot's pieces are ~4 px and the slots leave no free pixels.


class _Slot:
  """One (surface, group) box: float32 templates [C, h, w, 3] and what each one shows."""

  def __init__(self, size: int, location: str, group: int, liquid: str) -> None:
    self.box = td.slot_box(location, group, size, margin=1)
    y0, y1, x0, x1 = self.box
    base = td.surface(size, False, liquid, False)
    self.labels: list[tuple[str, str] | None] = [None]
    patches = [_features(base)[y0:y1, x0:x1]]
    cy, cx = td.SLOTS[location][group]
    for look in td.INGREDIENTS:
      if look.group != group:
        continue
      for form in REST_FORMS[location]:
        img = base.copy()
        td.draw_item(
          img,
          look,
          "whole" if form == "whole" else "chopped",
          td.form_rgb(look, form),
          cy,
          cx,
          td.HALF[location],
        )
        patches.append(_features(img)[y0:y1, x0:x1])
        self.labels.append((look.name, form))
    self.templates = np.stack(patches)

  def read(self, frame: np.ndarray) -> tuple[tuple[str, str] | None, float]:
    """(best label or None for empty, how much better than empty it fits)."""
    y0, y1, x0, x1 = self.box
    d = ((self.templates - frame[y0:y1, x0:x1]) ** 2).mean(axis=(1, 2, 3))
    best = int(np.argmin(d))
    return self.labels[best], float(d[0] - d[best])


@functools.lru_cache(maxsize=8)
def _reader(size: int) -> dict:
  """Per-size templates and reference colours (built once, a few ms)."""
  geo = td.geometry(size)
  slots = {
    (loc, g, liq): _Slot(size, loc, g, liq)
    for loc in td.SLOTS
    for g in range(td.NUM_GROUPS)
    for liq in (td.LIQUIDS if loc == "pot" else ("none",))
  }
  plain = td.surface(size, False, "none", False)[geo.plate_free].mean(0)
  herbs = td.surface(size, False, "none", True)[geo.plate_free].mean(0)
  return {"geo": geo, "slots": slots, "herbs": np.stack([plain, herbs])}


def _features(img: np.ndarray) -> np.ndarray:
  """uint8 [H, W, 3] RGB -> float32 [H, W, 3] (Y, Cb, Cr) with Cb, Cr box-blurred 3 x 3.

  Video and JPEG keep luma sharp but halve chroma resolution (4:2:0): small coloured
  pieces smear into their background. Comparing sharp luma with blurred chroma keeps
  the pieces' shape while ignoring what the codec throws away.
  """
  x = img.astype(np.float32)
  y = x @ _YCC[:, 0]
  cb = x @ _YCC[:, 1]
  cr = x @ _YCC[:, 2]
  return np.concatenate([y[..., None], _blur3(np.stack([cb, cr], -1))], -1)


# RGB -> (Y, Cb, Cr) as a matrix: rgb [.., 3] @ _YCC.
_YCC = np.array(
  [[0.299, -0.1687, 0.5], [0.587, -0.3313, -0.4187], [0.114, 0.5, -0.0813]], np.float32
)


def _blur3(c: np.ndarray) -> np.ndarray:
  """3 x 3 box blur of [H, W, C] with edge padding (linear in c)."""
  c = np.pad(c, ((1, 1), (1, 1), (0, 0)), mode="edge")
  c = c[:-2] + c[1:-1] + c[2:]
  return (c[:, :-2] + c[:, 1:-1] + c[:, 2:]) / 9.0


def _nearest(colour: np.ndarray, refs: Sequence) -> int:
  r = np.asarray(refs, np.float32)
  return int(np.argmin(((r - colour) ** 2).sum(-1)))


def _checked(frame: np.ndarray, who: str) -> np.ndarray:
  """`frame` as an array; ValueError unless it is [S, S, 3], S a multiple of 16, >= 48."""
  frame = np.asarray(frame)
  if frame.ndim != 3 or frame.shape[2] != 3 or frame.shape[0] != frame.shape[1]:
    raise ValueError(f"{who} expects a square [S, S, 3] frame, got {frame.shape}")
  if frame.shape[0] < MIN_SIZE or frame.shape[0] % 16:
    raise ValueError(
      f"{who} reads frames of a multiple of 16 >= {MIN_SIZE} px, got {frame.shape[0]}"
    )
  return frame


def _liquid(frame: np.ndarray) -> str:
  """The pot's liquid (a key of td.LIQUIDS): the median colour of its free pixels."""
  geo = td.geometry(frame.shape[0])
  liquids = list(td.LIQUIDS)
  return liquids[_nearest(np.median(frame[geo.pot_free], axis=0), [td.LIQUIDS[k] for k in liquids])]


def _heat(frame: np.ndarray) -> bool:
  """Is the burner on: the mean colour of its visible ring, nearest of off / on."""
  ring = frame[td.geometry(frame.shape[0]).burner]
  return _nearest(ring.mean(0), [td.BURNER_OFF, td.BURNER_ON]) == 1


def read_state(frame: np.ndarray) -> State:
  """The world state shown in `frame` (uint8 [S, S, 3], S a multiple of 16, >= 48)."""
  frame = _checked(frame, "read_state")
  r = _reader(frame.shape[0])
  geo = r["geo"]
  liquid, heat = _liquid(frame), _heat(frame)
  herbs = _nearest(frame[geo.plate_free].mean(0), r["herbs"]) == 1
  feats = _features(frame)
  ingredients = {}
  for g in range(td.NUM_GROUPS):
    found = []
    for loc in td.SLOTS:
      label, margin = r["slots"][loc, g, liquid if loc == "pot" else "none"].read(feats)
      if label is not None:
        found.append((margin, label[0], loc, label[1]))
    if found:  # At rest an ingredient is in one place; otherwise take the clearest.
      _, name, loc, form = max(found)
      ingredients[name] = (loc, form)
  return State(
    ingredients,
    water=liquid != "none",
    heat=heat,
    pot_seasoned=liquid == "broth",
    plate_seasoned=herbs,
  )


def object_matches(pred: State, true: State) -> dict[str, bool]:
  """Per object (each ingredient in either state, then the flags): equal in both?"""
  names = sorted(set(pred.ingredients) | set(true.ingredients))
  out = {n: pred.ingredients.get(n) == true.ingredients.get(n) for n in names}
  out.update({f: getattr(pred, f) == getattr(true, f) for f in FLAGS})
  return out


def state_accuracy(
  pred_states: Sequence[State], true_states: Sequence[State], which: str = "all"
) -> float:
  """Fraction of objects read exactly, over all pairs of states.

  which: "all" (ingredients and flags) or "ingredients" (ingredient objects only).
  """
  if len(pred_states) != len(true_states):
    raise ValueError(f"{len(pred_states)} predicted vs {len(true_states)} true states")
  if which not in ("all", "ingredients"):
    raise ValueError(f"which must be 'all' or 'ingredients', got {which!r}")
  right = total = 0
  for p, t in zip(pred_states, true_states):
    for key, ok in object_matches(p, t).items():
      if which == "all" or key not in FLAGS:
        right += ok
        total += 1
  return right / max(total, 1)


# What `read_looks` can tell apart: every sprite mask of toy_draw (12 shape classes, whole
# or chopped) in every form colour of the 12 ingredients (whole, chopped, cooked).
SHAPES = tuple(dict.fromkeys(look.shape for look in td.INGREDIENTS))
CUTS = ("whole", "chopped")
SHADES = ("whole", "chopped", "cooked")
# A slot shows a sprite when the best one explains at least this share of the patch's
# squared distance from the empty slot. Measured on the states of 30 recipes: real
# sprites explain >= 99 % clean and >= 87 % through JPEG q90 at 64 px (>= 39 % at 48 px,
# where pot pieces spill into the next pot slot); empty slots <= 26 % (48 px, JPEG).
EXPLAINED = 1 / 3


class ItemLook(NamedTuple):
  """How one ingredient sprite looks, read from pixels (not what it is meant to be).

  colour: the ingredient (its name) one of whose three form colours (toy_draw.form_rgb:
    its own, 25 % lighter for cut faces, 45 % towards brown when cooked) is nearest.
  cooked: that nearest colour is the browned one. Raw whole and raw cut-face colours are
    not told apart (tofu's differ by 2-4 levels); the cut says which applies.
  cut: "whole" (one solid shape) or "chopped" (four pieces with a cross-shaped gap).
  shape: the shape class (toy_draw.Look.shape, e.g. "circle") of a whole sprite; None for
    chopped ones, whose 3-6 px pieces leave classes indistinguishable (circle and ring
    pieces are the same pixels even at 128 px).
  """

  colour: str
  cooked: bool
  cut: str
  shape: str | None


def _look_features(img: np.ndarray) -> np.ndarray:
  """`_features` with chroma blurred twice (a 5 x 5 tent): [H, W, 3] float32.

  Telling twelve colours apart on 3-4 px pieces needs more chroma tolerance than telling a
  group's three: with one 3 x 3 blur, 28 % of (ingredient, story) pairs of true keyframes
  through JPEG q90 read a piece's colour differently in some keyframe (40 stories, 64
  px); with two, 1 of 102 (60 other stories).
  """
  x = _features(img)
  return np.concatenate([x[..., :1], _blur3(x[..., 1:])], -1)


_PALETTE = [
  (look.name, shade, td.form_rgb(look, shade)) for look in td.INGREDIENTS for shade in SHADES
]


class _LookSlot:
  """One (surface, group) box for `read_looks`: each sprite mask's template is linear in
  the colour drawn, so every (mask, colour) pair is scored at once in closed form.

  With features F (`_look_features`, linear in RGB), a sprite of colour c on background bg
  is F(bg with the sprite's pixels black) + ycc(c) * (mask, tent(mask), tent(mask)) =:
  B + c' M, and its squared distance to the patch P is
  sum(c'^2 M^2 + 2 c' M (B - P) + (B - P)^2): [K masks, C colours] from two matmuls.
  """

  def __init__(self, size: int, location: str, group: int, liquid: str, heat: bool) -> None:
    # The sprite's own box: at 48 px a margin would reach into the next pot slot.
    self.box = td.slot_box(location, group, size, margin=0)
    y0, y1, x0, x1 = self.box
    base = td.surface(size, heat, liquid, False)  # The burner shows in the pot's corners.
    self.empty = _look_features(base)[y0:y1, x0:x1].astype(np.float64)
    k = td.scale(size)
    n = td.sprite_px(td.HALF[location], k)
    top, left = td.sprite_origin(*td.SLOTS[location][group], n, k)
    self.labels = [(cut, shape) for cut in CUTS for shape in SHAPES]
    ms, bs = [], []
    for cut, shape in self.labels:
      mask = td.sprite_mask(shape, cut, n)
      full = np.zeros((size, size, 3), np.float32)
      td.blit(full, mask, top, left, (1, 1, 1))
      full = full[..., :1]
      soft = _blur3(_blur3(full))
      m = np.concatenate([full, soft, soft], -1)
      ms.append(m[y0:y1, x0:x1])
      img = base.copy()
      td.blit(img, mask, top, left, (0, 0, 0))
      bs.append(_look_features(img)[y0:y1, x0:x1])
    self.m = np.stack(ms).astype(np.float64)  # [K, h, w, 3]
    self.b = np.stack(bs).astype(np.float64)
    self.m2 = (self.m**2).sum(axis=(1, 2))  # [K, 3]
    self.colours = np.array([rgb for _, _, rgb in _PALETTE], np.float64) @ _YCC  # [C, 3]

  def read(self, feats: np.ndarray) -> tuple[ItemLook | None, float]:
    """(the best look or None, the share of the patch's squared distance from the empty
    slot that the look explains: None unless that is at least EXPLAINED)."""
    y0, y1, x0, x1 = self.box
    p = feats[y0:y1, x0:x1].astype(np.float64)
    d = self.b - p  # [K, h, w, 3]
    cross = (self.m * d).sum(axis=(1, 2))  # [K, 3]
    cost = self.m2 @ (self.colours**2).T + 2.0 * cross @ self.colours.T  # [K, C]
    cost += (d**2).sum(axis=(1, 2, 3))[:, None]
    k, c = np.unravel_index(int(np.argmin(cost)), cost.shape)
    empty = float(((self.empty - p) ** 2).sum())
    share = (empty - float(cost[k, c])) / max(empty, 1e-9)
    if share < EXPLAINED:
      return None, share
    cut, shape = self.labels[k]
    name, shade, _ = _PALETTE[c]
    look = ItemLook(name, shade == "cooked", cut, shape if cut == "whole" else None)
    return look, share


@functools.lru_cache(maxsize=4)
def _look_slots(size: int) -> dict:
  """(location, group, liquid, heat) -> _LookSlot for one frame size (built once, ~0.2 s)."""
  return {
    (loc, g, liq, heat): _LookSlot(size, loc, g, liq, heat)
    for loc in td.SLOTS
    for g in range(td.NUM_GROUPS)
    for liq in (td.LIQUIDS if loc == "pot" else ("none",))
    for heat in ((False, True) if loc == "pot" else (False,))
  }


def read_looks(frame: np.ndarray) -> dict[int, tuple[str, ItemLook]]:
  """Slot group -> (location, look) of the sprite in that group's slots, for each group
  whose slots (on any surface) show one; where several do, the one explained best.

  frame: uint8 [S, S, 3], S a multiple of 16, >= 48. A dish has at most one ingredient
  per group, so a group's sprite is that ingredient however it is drawn. The pot's slots
  are read against the liquid and burner read from the frame. Exact on clean frames at
  rest at 64 px and up, for every ingredient in every place and form (whole in the pot
  too); at 48 px the pot's 2 px pieces are sometimes misread (6 of 432 placements).
  """
  frame = _checked(frame, "read_looks")
  slots = _look_slots(frame.shape[0])
  liquid, heat = _liquid(frame), _heat(frame)
  feats = _look_features(frame)
  out = {}
  for g in range(td.NUM_GROUPS):
    best: tuple[float, str, ItemLook] | None = None
    for loc in td.SLOTS:
      key = (loc, g, liquid, heat) if loc == "pot" else (loc, g, "none", False)
      look, share = slots[key].read(feats)
      if look is not None and (best is None or share > best[0]):
        best = (share, loc, look)
    if best is not None:
      out[g] = (best[1], best[2])
  return out
