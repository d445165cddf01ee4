"""Tests for the toy-kitchen state reader on clean, JPEG and mp4-decoded frames."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from auteur_jax.data import toy_draw as td
from auteur_jax.data import toy_kitchen as tk
from auteur_jax.data import toy_recipes as trc
from auteur_jax.data import toy_render as tr
from auteur_jax.data import toy_world as tw
from auteur_jax.data import video_io
from auteur_jax.eval import toy_state as ts

_ALLOWED = {
  "shelf": ("whole",),
  "board": ("whole", "chopped"),
  "pot": ("chopped", "cooked"),
  "plate": ("chopped", "cooked"),
}


def _stories(n: int, size: int = 64, seed0: int = 0):
  for seed in range(seed0, seed0 + n):
    r = trc.make_recipe(seed)
    frames, tl = tr.render_story(r, size, 8.0)
    yield r, frames, tl


def test_every_ingredient_in_every_place():
  """Each ingredient, alone and with a neighbour in every other group, in each
  (location, form) it can have at rest, on every pot liquid, with and without herbs."""
  rng = np.random.default_rng(0)
  preds, trues = [], []
  for look in td.INGREDIENTS:
    for loc, forms in _ALLOWED.items():
      for form in forms:
        for water, seasoned in [(False, False), (True, False), (True, True)]:
          ings = {look.name: (loc, form)}
          for other in td.INGREDIENTS:  # A random neighbour per other group.
            if other.group != look.group and rng.random() < 0.5:
              if not any(td.LOOKS[n].group == other.group for n in ings):
                oloc = ("shelf", "board", "pot", "plate")[rng.integers(4)]
                ings[other.name] = (oloc, _ALLOWED[oloc][rng.integers(len(_ALLOWED[oloc]))])
          state = tw.State(
            ings,
            water=water,
            heat=water and rng.random() < 0.5,
            pot_seasoned=seasoned,
            plate_seasoned=bool(rng.random() < 0.5),
          )
          img = td.scene(64, state)
          if state.heat:
            td.draw_bubbles(img, int(rng.integers(1000)))
          preds.append(ts.read_state(img))
          trues.append(state)
  assert ts.state_accuracy(preds, trues) == 1.0
  assert ts.state_accuracy(preds, trues, "ingredients") == 1.0


def test_clean_rest_frames_at_least_99_percent():
  """All frames where nothing moves, across 25 stories (about 2,000 frames)."""
  preds, trues = [], []
  for _, frames, tl in _stories(25):
    for t in np.nonzero(~tl.moving)[0]:
      preds.append(ts.read_state(frames[t]))
      trues.append(tl.frame_state(t))
  assert len(preds) > 1500
  assert ts.state_accuracy(preds, trues) >= 0.99
  assert ts.state_accuracy(preds, trues, "ingredients") >= 0.99


@pytest.mark.parametrize("size", [48, 128])
def test_other_sizes(size):
  preds, trues = [], []
  for _, frames, tl in _stories(4, size, seed0=100):
    for t in np.nonzero(~tl.moving)[0][::3]:
      preds.append(ts.read_state(frames[t]))
      trues.append(tl.frame_state(t))
  assert ts.state_accuracy(preds, trues, "ingredients") >= 0.99


def test_jpeg_and_mp4_frames(tmp_path):
  """Floors under compression. Measured on 60 stories: JPEG q90 and mp4 (crf 18) both
  1.000 per object at 64 px; the floors leave room for codec-version differences."""
  jp, mp, trues = [], [], []
  for i, (_, frames, tl) in enumerate(_stories(12, seed0=200)):
    path = str(tmp_path / f"{i}.mp4")
    video_io.write_video(path, frames, 8.0)
    decoded = video_io.read_frames(path, 0.0, len(frames) / 8.0, 8.0)
    assert decoded.shape == frames.shape
    for t in np.nonzero(~tl.moving)[0][::2]:
      jp.append(ts.read_state(video_io.decode_jpeg(video_io.encode_jpeg(frames[t], 90))))
      mp.append(ts.read_state(decoded[t]))
      trues.append(tl.frame_state(t))
  for preds in (jp, mp):
    assert ts.state_accuracy(preds, trues) >= 0.98
    assert ts.state_accuracy(preds, trues, "ingredients") >= 0.97


def test_reader_is_not_fooled_by_the_empty_kitchen():
  empty = tw.State({})
  assert ts.read_state(td.scene(64, empty)) == empty
  assert ts.read_state(td.scene(64, tw.State({}, water=True))) == tw.State({}, water=True)


def test_state_accuracy_counts_objects():
  true = tw.State({"tomato": ("board", "whole"), "corn": ("pot", "chopped")}, water=True)
  pred = tw.State({"tomato": ("board", "chopped"), "fish": ("pot", "chopped")}, water=True)
  m = ts.object_matches(pred, true)
  assert m == {
    "corn": False,
    "fish": False,
    "tomato": False,
    "water": True,
    "heat": True,
    "pot_seasoned": True,
    "plate_seasoned": True,
  }
  assert ts.state_accuracy([pred], [true]) == pytest.approx(4 / 7)
  assert ts.state_accuracy([pred], [true], "ingredients") == 0.0
  assert ts.state_accuracy([true, true], [true, true]) == 1.0
  with pytest.raises(ValueError):
    ts.state_accuracy([true], [])


def test_rejects_unreadable_frames():
  with pytest.raises(ValueError, match=">= 48"):
    ts.read_state(np.zeros((32, 32, 3), np.uint8))
  with pytest.raises(ValueError, match="square"):
    ts.read_state(np.zeros((64, 48, 3), np.uint8))


def test_reads_a_generated_video(tmp_path):
  """The written files alone suffice: mp4 + states JSON -> exact rest-frame states."""
  out = str(tmp_path)
  tk.generate_dataset(out, 2, seed=9, workers=1, progress=False)
  for vid in ("toy_000000", "toy_000001"):
    truth = json.load(open(os.path.join(out, "states", f"{vid}.json")))
    frames = video_io.read_frames(
      os.path.join(out, "videos", f"{vid}.mp4"), 0.0, truth["duration"], truth["fps"]
    )
    states = [tw.State.from_json(s) for s in truth["states"]]
    idx, moving = truth["frames"]["state"], truth["frames"]["moving"]
    rest = [t for t in range(len(frames)) if not moving[t]]
    preds = [ts.read_state(frames[t]) for t in rest]
    assert ts.state_accuracy(preds, [states[idx[t]] for t in rest]) >= 0.98
