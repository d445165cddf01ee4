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
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

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
  y = x @ np.array([0.299, 0.587, 0.114], np.float32)
  cb = x @ np.array([-0.1687, -0.3313, 0.5], np.float32)
  cr = x @ np.array([0.5, -0.4187, -0.0813], np.float32)
  c = np.pad(np.stack([cb, cr], -1), ((1, 1), (1, 1), (0, 0)), mode="edge")
  c = c[:-2] + c[1:-1] + c[2:]
  c = (c[:, :-2] + c[:, 1:-1] + c[:, 2:]) / 9.0
  return np.concatenate([y[..., None], c], -1)


def _nearest(colour: np.ndarray, refs: Sequence) -> int:
  r = np.asarray(refs, np.float32)
  return int(np.argmin(((r - colour) ** 2).sum(-1)))


def read_state(frame: np.ndarray) -> State:
  """The world state shown in `frame` (uint8 [S, S, 3], S a multiple of 16, >= 48)."""
  frame = np.asarray(frame)
  if frame.ndim != 3 or frame.shape[2] != 3 or frame.shape[0] != frame.shape[1]:
    raise ValueError(f"read_state expects a square [S, S, 3] frame, got {frame.shape}")
  if frame.shape[0] < MIN_SIZE or frame.shape[0] % 16:
    raise ValueError(
      f"read_state reads frames of a multiple of 16 >= {MIN_SIZE} px, got {frame.shape[0]}"
    )
  r = _reader(frame.shape[0])
  geo = r["geo"]
  liquids = list(td.LIQUIDS)
  liquid = liquids[
    _nearest(np.median(frame[geo.pot_free], axis=0), [td.LIQUIDS[k] for k in liquids])
  ]
  heat = _nearest(frame[geo.burner].mean(0), [td.BURNER_OFF, td.BURNER_ON]) == 1
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
