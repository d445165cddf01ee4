"""Keyframe metrics on toy-kitchen stories: state agreement and identity consistency.

Both take `frames`, a list of stories, each a list of rendered keyframes uint8 [S, S, 3]
(one per step: the state the step ends in), and `states`, the true `State` after each
step of each story (same lengths). Call them once per set of keyframes (e.g. rendered
with and without rolling context) to compare the sets.

`keyframe_state_agreement`: the toy state reader (eval/toy_state.read_state) on each
keyframe against the true state after its step, as `narrative.state_agreement` scores a
clip's last frame: per keyframe the fraction of objects (each ingredient in either
state, then the four pot / plate flags) read equal, and exact (1.0 when all are). Means
per story and over all keyframes (each keyframe weighs the same), with counts.

`identity_consistency`: whether each ingredient keeps its look from keyframe to keyframe
of a story, where the true states say its look did not change. The look is what
`toy_state.read_looks` reads in the ingredient's slot group (a dish has one ingredient
per group; of the group's slots on the shelf, board, pot and plate, the best explained),
an `ItemLook` (colour: which ingredient's colour family; cooked: browned or not; cut: whole
or chopped; shape: the shape class, read on whole sprites only). An ingredient *appears*
in a keyframe when one of its group's slots shows a sprite. Over the keyframes it
appears in, these must be equal (comparing only what the truth keeps the same):
  colour  in every appearance (no action changes what an ingredient is);
  cut     between appearances whose true forms have the same cut (whole vs chopped or
          cooked: chopping legitimately changes it, cooking does not);
  cooked  between appearances whose true forms are both cooked or both not (stirring
          legitimately browns the pieces);
  shape   between appearances whose true form is whole (pieces do not show the class).
Consistency is not correctness: a tomato drawn as a blue circle in every keyframe is
consistent (state agreement counts it wrong). A pair (ingredient, story) is scored when
the ingredient appears in at least two keyframes; the others are counted as `absent`
(no appearance) or `single` (one).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from auteur_jax.data.toy_draw import LOOKS
from auteur_jax.data.toy_world import State
from auteur_jax.eval import narrative
from auteur_jax.eval.toy_state import ItemLook, read_looks

COMPONENTS = ("colour", "cut", "cooked", "shape")


def _check(frames: Sequence[Sequence[np.ndarray]], states: Sequence[Sequence[State]]) -> None:
  """ValueError unless there are stories, as many of frames as of states, and each story
  has steps and one keyframe per true state."""
  if len(frames) == 0:
    raise ValueError("no stories: expected a list of stories, each a list of keyframes")
  if len(frames) != len(states):
    raise ValueError(f"{len(frames)} stories of keyframes but {len(states)} of true states")
  for i, (f, s) in enumerate(zip(frames, states)):
    if len(s) == 0:
      raise ValueError(f"story {i}: no steps (expected at least 1 true state and keyframe)")
    if len(f) != len(s):
      raise ValueError(
        f"story {i}: {len(f)} keyframes but {len(s)} true states; expected {len(s)} "
        "keyframes, one per step"
      )


def _at(i: int, t: int, fn, frame: np.ndarray):
  """fn(frame), with the story and step named in a ValueError (e.g. a wrong frame shape)."""
  try:
    return fn(frame)
  except ValueError as e:
    raise ValueError(f"story {i}, step {t}: {e}") from e


def keyframe_state_agreement(
  frames: Sequence[Sequence[np.ndarray]], states: Sequence[Sequence[State]]
) -> dict[str, Any]:
  """State reader on each keyframe vs the true state after its step (module docstring).

  frames: per story, keyframes uint8 [S, S, 3] (S a multiple of 16, >= 48), one per step.
  states: per story, the true State after each step.
  Returns {"objects", "exact": means over all keyframes in [0, 1], "keyframes",
  "stories": counts, "per_story": [{"objects", "exact", "keyframes"}]}.
  """
  _check(frames, states)
  per_story, objects, exact = [], [], []
  for i, (fs, ss) in enumerate(zip(frames, states)):
    scores = [
      _at(i, t, lambda x, s=s: narrative.state_agreement(x, s), f)
      for t, (f, s) in enumerate(zip(fs, ss))
    ]
    o, e = [x["objects"] for x in scores], [x["exact"] for x in scores]
    per_story.append(
      {"objects": narrative.mean(o), "exact": narrative.mean(e), "keyframes": len(scores)}
    )
    objects += o
    exact += e
  return {
    "objects": narrative.mean(objects),
    "exact": narrative.mean(exact),
    "keyframes": len(objects),
    "stories": len(per_story),
    "per_story": per_story,
  }


def _broken(looks: list[ItemLook], forms: list[str]) -> list[str]:
  """The look components (COMPONENTS) that differ where the true forms keep them equal."""

  def varies(component: str, key) -> bool:
    seen: dict[Any, Any] = {}
    for look, form in zip(looks, forms):
      k = key(form)
      if k is None:
        continue
      if seen.setdefault(k, getattr(look, component)) != getattr(look, component):
        return True
    return False

  keys = {
    "colour": lambda f: 0,
    "cut": lambda f: f == "whole",
    "cooked": lambda f: f == "cooked",
    "shape": lambda f: 0 if f == "whole" else None,
  }
  return [c for c in COMPONENTS if varies(c, keys[c])]


def _story_identity(i: int, frames: Sequence[np.ndarray], states: Sequence[State]) -> dict:
  names = list(dict.fromkeys(n for s in states for n in s.ingredients))
  groups: dict[int, str] = {}
  for n in names:
    g = LOOKS[n].group
    if g in groups:
      raise ValueError(
        f"story {i}: {groups[g]} and {n} share slot group {g}; the reader cannot tell "
        "them apart (a dish has at most one ingredient per group)"
      )
    groups[g] = n
  reads = [_at(i, t, read_looks, f) for t, f in enumerate(frames)]
  out: dict[str, Any] = {"ingredients": {}, "absent": 0, "single": 0}
  for n in names:
    g = LOOKS[n].group
    seen = [
      (r[g][1], s.ingredients[n][1]) for r, s in zip(reads, states) if g in r and n in s.ingredients
    ]
    row: dict[str, Any] = {"appearances": len(seen), "consistent": None, "broken": []}
    if len(seen) < 2:
      out["absent" if not seen else "single"] += 1
    else:
      row["broken"] = _broken([look for look, _ in seen], [form for _, form in seen])
      row["consistent"] = not row["broken"]
    out["ingredients"][n] = row
  scored = [r["consistent"] for r in out["ingredients"].values() if r["consistent"] is not None]
  out["consistent"] = narrative.mean([float(c) for c in scored])
  out["pairs"] = len(scored)
  return out


def identity_consistency(
  frames: Sequence[Sequence[np.ndarray]], states: Sequence[Sequence[State]]
) -> dict[str, Any]:
  """Per (ingredient, story): does its read look stay the same where the truth keeps it?

  frames: per story, keyframes uint8 [S, S, 3] (S a multiple of 16, >= 48), one per step.
  states: per story, the true State after each step (whose ingredients are the dish's).
  Returns {"consistent": fraction of scored pairs (None if none), "pairs": scored pairs,
  "absent", "single": unscored pairs, "broken": {component: pairs where it changed},
  "stories", "per_story": [{"consistent", "pairs", "absent", "single", "ingredients":
  {name: {"appearances", "consistent" (None when unscored), "broken": [components]}}}]}.
  See the module docstring for what the look is and when it must stay the same.
  """
  _check(frames, states)
  per_story = [_story_identity(i, f, s) for i, (f, s) in enumerate(zip(frames, states))]
  rows = [r for s in per_story for r in s["ingredients"].values() if r["consistent"] is not None]
  return {
    "consistent": narrative.mean([float(r["consistent"]) for r in rows]),
    "pairs": len(rows),
    "absent": sum(s["absent"] for s in per_story),
    "single": sum(s["single"] for s in per_story),
    "broken": {c: sum(c in r["broken"] for r in rows) for c in COMPONENTS},
    "stories": len(per_story),
    "per_story": per_story,
  }
