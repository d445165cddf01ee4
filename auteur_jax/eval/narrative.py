"""Narrative metrics on toy-kitchen stories: the director's steps and the rendered clips.

(a) Director.
  `step_top1`: for each predicted visual state z_hat_t [K, D] of a story, the nearest of
  that story's ground-truth keyframe embeddings z_1..z_S (by mean per-token cosine
  similarity, the similarity the director is trained on) must be z_t. Chance is 1 / S.
  `action_match`: a predicted action text against the true one, twice: `exact` (equal
  after lower-casing and collapsing punctuation and spaces) and `parsed` (the same toy
  action type and ingredients, read back through the toy kitchen's instruction
  templates; the toy writes each instruction in one of 1-3 phrasings drawn at random,
  which no model can guess, so `exact` understates what the director got right).
(b) Video.
  `state_agreement`: the toy state reader (eval/toy_state.py) on the last frame of a
  generated clip against the true state after the step the clip was meant to show:
  the fraction of objects (each ingredient, then the four pot / plate flags) read equal,
  and whether the whole state is equal.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from auteur_jax.data.toy_draw import LOOKS
from auteur_jax.data.toy_text import INSTRUCTIONS
from auteur_jax.data.toy_world import State
from auteur_jax.eval.toy_state import object_matches, read_state


def token_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Mean per-token cosine similarity: a [N, K, D], b [M, K, D] -> [N, M]."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if a.ndim != 3 or b.ndim != 3 or a.shape[1:] != b.shape[1:]:
    raise ValueError(f"token_cosine: expected [N, K, D] and [M, K, D], got {a.shape} and {b.shape}")
  unit = lambda x: x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)  # noqa: E731
  return np.einsum("nkd,mkd->nm", unit(a), unit(b)) / a.shape[1]


def step_top1(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
  """pred, true [S, K, D] of one story -> bool [S]: is step t's nearest true state z_t?"""
  pred, true = np.asarray(pred), np.asarray(true)
  if pred.shape != true.shape:
    raise ValueError(f"step_top1: predicted {pred.shape} vs true {true.shape} embeddings")
  return np.argmax(token_cosine(pred, true), axis=1) == np.arange(len(pred))


def normalize_text(text: str) -> str:
  """Lower case, punctuation to spaces, single spaces."""
  return " ".join(re.sub(r"[^a-z0-9]+", " ", text.lower()).split())


@functools.lru_cache(maxsize=1)
def _patterns() -> list[tuple[str, re.Pattern]]:
  out = []
  for action, templates in INSTRUCTIONS.items():
    for t in templates:  # Placeholders survive normalisation as plain words.
      body = normalize_text(t.format(x="xslot", be="beslot"))
      body = body.replace("xslot", "(?P<x>[a-z ]+?)").replace("beslot", "(?:is|are)")
      out.append((action, re.compile(f"^{body}$")))
  return out


def parse_action(text: str) -> tuple[str, frozenset[str]] | None:
  """(action type, ingredient names) of a toy instruction, or None if it is not one."""
  norm = normalize_text(text)
  for action, pattern in _patterns():
    m = pattern.match(norm)
    if m is None:
      continue
    x = m.groupdict().get("x")
    if x is None:
      return action, frozenset()
    names = [n.strip() for n in re.split(r"\band\b", x.replace(",", " ")) if n.strip()]
    names = [" ".join(n.split()) for n in names]
    if all(n in LOOKS for n in names):
      return action, frozenset(names)
  return None


def action_match(pred: str, true: str) -> dict[str, bool]:
  """{"exact": normalised texts equal, "parsed": same action type and ingredients}."""
  p = parse_action(pred)
  return {
    "exact": normalize_text(pred) == normalize_text(true),
    "parsed": p is not None and p == parse_action(true),
  }


def state_agreement(frame: np.ndarray, true: State, before: State | None = None) -> dict:
  """The state read from `frame` (uint8 [S, S, 3]) against `true`: object accuracy in
  [0, 1] and exact (1.0 if every object is equal); given the state `before` the step,
  also `changed`: per object the step changes, whether it was read right."""
  matches = object_matches(read_state(frame), true)
  right = sum(matches.values())
  out: dict[str, Any] = {
    "objects": right / max(len(matches), 1),
    "exact": float(right == len(matches)),
  }
  if before is not None:
    out["changed"] = [
      matches.get(k, False) for k, ok in object_matches(before, true).items() if not ok
    ]
  return out


def mean(values: Sequence[float]) -> float | None:
  """The mean, or None for no values (reported as null, never as 0)."""
  return float(np.mean(values)) if len(values) else None
