"""Tests for the toy kitchen: world rules, recipes, split, rendering and the data set files."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from auteur_jax.data import toy_draw as td
from auteur_jax.data import toy_kitchen as tk
from auteur_jax.data import toy_recipes as trc
from auteur_jax.data import toy_render as tr
from auteur_jax.data import toy_world as tw
from auteur_jax.data import video_io
from auteur_jax.data.matching import MatchRule, match_clips_to_actions


def _clip_spans(recipe: tw.Recipe, fps: float) -> list[tuple[float, float]]:
  f = np.cumsum([0] + [tr.clip_frames(s.duration, fps) for s in recipe.steps])
  return [(a / fps, b / fps) for a, b in zip(f[:-1], f[1:])]


def test_vocabulary_is_distinct():
  assert len(td.INGREDIENTS) >= 10
  assert len({(look.rgb, look.shape) for look in td.INGREDIENTS}) == len(td.INGREDIENTS)
  assert len({look.rgb for look in td.INGREDIENTS}) == len(td.INGREDIENTS)
  assert len(tw.ACTIONS) >= 8


def test_world_refuses_actions_out_of_order():
  s = tw.State.initial(["tomato"])
  for action, ing in [
    ("chop", "tomato"),
    ("add", "tomato"),
    ("serve", "tomato"),
    ("boil", None),
    ("stir", None),
    ("season", None),
    ("sprinkle", None),
    ("place", "carrot"),
    ("pour", "tomato"),
  ]:
    with pytest.raises(tw.PreconditionError):
      s.apply(action, ing)
  s = s.apply("place", "tomato").apply("chop", "tomato").apply("add", "tomato")
  with pytest.raises(tw.PreconditionError, match="cooked"):
    s.apply("serve", "tomato")  # Cook before serve.
  s = s.apply("pour").apply("boil").apply("stir")
  assert s.ingredients["tomato"] == ("pot", "cooked")
  s = s.apply("serve", "tomato").apply("sprinkle")
  assert s == tw.State.from_json(json.loads(json.dumps(s.to_json())))
  assert s.ingredients["tomato"] == ("plate", "cooked") and s.plate_seasoned


@pytest.mark.parametrize("bounds", [(4, 12), (8, 8), (4, 5), (11, 12)])
def test_preconditions_hold_in_every_recipe(bounds):
  """Checked against the step order directly, not through State.apply."""
  seen = set()
  for seed in range(300):
    r = trc.make_recipe(seed, *bounds)
    assert bounds[0] <= len(r.steps) <= bounds[1], r
    assert len(r.ingredients) == len({td.LOOKS[n].group for n in r.ingredients})
    at = {}  # (action, ingredient) -> step index
    for i, s in enumerate(r.steps):
      assert (s.action, s.ingredient) not in at, f"repeated step in {r}"
      at[s.action, s.ingredient] = i
      assert 2.0 <= s.duration <= 4.0 and s.text
      seen.add(s.action)
    for n, route in zip(r.ingredients, r.routes):
      assert at["place", n] < at["chop", n]
      if route == "garnish":
        assert at["chop", n] < at["garnish", n]
        continue
      assert at["chop", n] < at["add", n] and at["pour", None] >= 0
      if route == "served":
        assert at["add", n] < at["stir", None] < at["serve", n]  # Cook before serve.
      if ("stir", None) in at:
        assert at["add", n] < at["stir", None]
    if ("boil", None) in at:
      assert at["pour", None] < at["boil", None] < at["stir", None]
    if ("season", None) in at:
      assert at["pour", None] < at["season", None]
    if ("sprinkle", None) in at:
      plated = [at[a, n] for (a, n) in at if a in ("garnish", "serve")]
      assert plated and min(plated) < at["sprinkle", None]
    final = r.states()[-1]  # Also replays the steps through the world's rules.
    for n, route in zip(r.ingredients, r.routes):
      want = {
        "garnish": ("plate", "chopped"),
        "served": ("plate", "cooked"),
        "soup": ("pot", "cooked" if final.heat else "chopped"),
      }[route]
      assert final.ingredients[n] == want
  if bounds == (4, 12):
    assert seen == set(tw.ACTIONS)


def test_recipes_are_deterministic():
  a, b = trc.make_recipe(123), trc.make_recipe(123)
  assert a == b
  assert [trc.make_recipe(s).dish for s in range(20)] != [a.dish] * 20
  fa, ta = tr.render_story(a, 64, 8.0)
  fb, tb = tr.render_story(b, 64, 8.0)
  assert fa.tobytes() == fb.tobytes()
  assert np.array_equal(ta.state_index, tb.state_index)


def test_validation_split_holds_out_combinations():
  train = [trc.make_recipe(s, split="training") for s in range(400)]
  val = [trc.make_recipe(s, split="validation") for s in range(400)]
  assert all(r.split == "training" for r in train) and all(r.split == "validation" for r in val)
  sets = lambda rs: {frozenset(r.ingredients) for r in rs}  # noqa: E731
  pairs = lambda rs: {frozenset((s.action, s.ingredient) for s in r.steps) for r in rs}  # noqa: E731
  assert len(sets(val)) >= 20
  assert not sets(val) & sets(train)
  assert not pairs(val) & pairs(train)
  # Generalisation is over combinations: every single validation ingredient is trained on.
  assert set().union(*sets(val)) <= set().union(*sets(train))
  # The split is a fixed function of the set, nested in the fraction.
  for r in val:
    assert tw.combination_split(r.ingredients, 0.3) == "validation"
  assert [tw.video_split(i, 0.2) for i in range(10)].count("validation") == 2


def test_timeline_and_motion():
  r = trc.make_recipe(7, 8, 8)
  frames, tl = tr.render_story(r, 64, 8.0)
  assert frames.shape == (tl.clips[-1][1], 64, 64, 3) and frames.dtype == np.uint8
  for s, ((f0, f1), (a, b)) in enumerate(zip(tl.clips, tl.motion)):
    assert f0 < a < b < f1 and 16 <= f1 - f0 <= 32
    assert tl.state_index[f0] == s and tl.state_index[f1 - 1] == s + 1
    assert not tl.moving[f0] and tl.moving[a] and not tl.moving[f1 - 1]
    # Motion, not slides: nearly every moving frame changes, and only a little.
    changed = [
      np.mean(np.abs(frames[t].astype(int) - frames[t + 1]).sum(-1) > 0) for t in range(a - 1, b)
    ]
    assert np.mean(np.array(changed) > 0) >= 0.75, (r.steps[s].action, changed)
    assert max(changed) < 0.12, (r.steps[s].action, changed)


def test_noisy_segments_and_matching_recover_pairs():
  rule = MatchRule()
  rates = {}
  for noise in (0.0, 0.25, 0.5):
    ok = total = 0
    for seed in range(300):
      r = trc.make_recipe(seed)
      clips = _clip_spans(r, 8.0)
      duration = clips[-1][1]
      segs = tk.noisy_segments(clips, duration, noise, np.random.default_rng(seed))
      if noise == 0:
        assert segs == [(round(a, 3), round(b, 3)) for a, b in clips]
      for (s, e), (cs, ce) in zip(segs, clips):
        assert 0 <= s < e <= duration
        tol = noise * (ce - cs) + 1e-3
        assert abs(s - cs) <= tol and abs(e - ce) <= tol
      got = match_clips_to_actions(clips, segs, rule)
      ok += sum(j == i for i, j in enumerate(got))
      total += len(got)
    rates[noise] = ok / total
  assert rates[0.0] == 1.0
  assert rates[0.25] >= 0.99, rates
  assert rates[0.5] >= 0.95, rates  # Measured 0.97: boundaries move up to half a clip.


def test_generate_dataset_files(tmp_path):
  out = str(tmp_path / "toy")
  summary = tk.generate_dataset(out, 6, seed=3, noise=0.3, workers=2, preview=True, progress=False)
  assert summary["videos"] == 6 and summary["training"] == 5 and summary["validation"] == 1
  db = json.load(open(os.path.join(out, "youcook2_annotations.json")))["database"]
  captions = [json.loads(line) for line in open(os.path.join(out, "captions.jsonl"))]
  assert sorted(db) == [f"toy_{i:06d}" for i in range(6)]
  for vid, v in db.items():
    assert set(v) == {"duration", "subset", "recipe_type", "annotations", "video_url"}
    assert v["subset"] in ("training", "validation") and v["recipe_type"]
    info = video_io.probe(os.path.join(out, v["video_url"]))
    states = json.load(open(os.path.join(out, "states", f"{vid}.json")))
    assert info.width == info.height == 64 and info.num_frames == states["num_frames"]
    assert abs(info.duration - v["duration"]) < 1e-6 and states["split"] == v["subset"]
    assert len(states["frames"]["state"]) == states["num_frames"]
    assert len(states["states"]) == len(states["steps"]) + 1 == len(v["annotations"]) + 1
    mine = [c for c in captions if c["video_id"] == vid]
    assert len(mine) == len(v["annotations"])
    for i, (a, c, st) in enumerate(zip(v["annotations"], mine, states["steps"])):
      assert a["id"] == i and a["sentence"] == st["text"]
      assert 0 <= a["segment"][0] < a["segment"][1] <= v["duration"]
      assert (c["start"], c["end"]) == (st["start"], st["end"])
      assert 30 <= len(c["caption"].split()) <= 70, c["caption"]
      assert st["frames"][0] == round(c["start"] * 8) and st["frames"][1] == round(c["end"] * 8)
      assert states["frames"]["state"][st["frames"][1] - 1] == st["state"] == i + 1
  assert captions[-1]["end"] == db["toy_000005"]["duration"]
  with Image.open(summary["preview"]) as im:
    assert im.format == "PNG" and im.width > 4 * 64
  assert not [f for f in os.listdir(out) if ".tmp" in f]


def test_generate_dataset_is_deterministic(tmp_path):
  """Same seed, in-process vs worker pool: the same bytes in every file."""
  a, b = str(tmp_path / "a"), str(tmp_path / "b")
  tk.generate_dataset(a, 3, seed=5, noise=0.2, workers=1, progress=False)
  tk.generate_dataset(b, 3, seed=5, noise=0.2, workers=2, progress=False)
  for rel in [
    "youcook2_annotations.json",
    "captions.jsonl",
    "states/toy_000002.json",
    "videos/toy_000001.mp4",
  ]:
    assert open(os.path.join(a, rel), "rb").read() == open(os.path.join(b, rel), "rb").read(), rel
  c = str(tmp_path / "c")
  tk.generate_dataset(c, 3, seed=6, noise=0.2, workers=1, progress=False)
  assert (
    open(os.path.join(a, "captions.jsonl")).read() != open(os.path.join(c, "captions.jsonl")).read()
  )


def test_bad_arguments():
  with pytest.raises(ValueError, match="multiple of 16"):
    tk.generate_dataset("/nonexistent", 1, size=60)
  with pytest.raises(ValueError, match="steps"):
    trc.make_recipe(0, 3, 12)
  with pytest.raises(ValueError, match="split"):
    trc.make_recipe(0, split="val")
