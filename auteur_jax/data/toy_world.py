"""The toy kitchen's world: ingredient states, actions and their preconditions, recipes.

World. Twelve ingredients (`toy_draw.INGREDIENTS`, four slot groups of three) live on a
counter with a shelf, a cutting board, a pot on a stove and a plate. An ingredient's
state is (location, form): location in LOCATIONS, form in FORMS. The pot has water /
heat / seasoning flags, the plate a herb flag. Ten action types change the state, each
with a precondition (`State.check`): place (shelf -> board), chop (whole -> chopped on
the board), add (chopped, board -> pot), garnish (chopped, board -> plate), pour (water
into the empty pot), boil (heat on, needs water), season (water -> broth), stir (cooks
every chopped piece in the boiling pot), serve (cooked, pot -> plate), sprinkle (herbs
on a plate that holds food).

A `Recipe` is a dish's ordered steps; random recipes are made in `toy_recipes.py`.

Split. A dish's *combination* is the set of ingredients it uses. Whether a combination
is validation is a fixed hash of the set (`combination_split`), independent of the seed:
validation dishes use ingredient sets, and hence (action, ingredient) pair sets, that no
training dish uses; each single ingredient still occurs in many training sets.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Sequence
from typing import Any

ACTIONS = ("place", "chop", "add", "garnish", "pour", "boil", "season", "stir", "serve", "sprinkle")
INGREDIENT_ACTIONS = ("place", "chop", "add", "garnish", "serve")
LOCATIONS = ("shelf", "board", "pot", "plate")
FORMS = ("whole", "chopped", "cooked")
# Forms an ingredient can have at rest in each location (what the actions leave there).
REST_FORMS = {
  "shelf": ("whole",),
  "board": ("whole", "chopped"),
  "pot": ("chopped", "cooked"),
  "plate": ("chopped", "cooked"),
}
ROUTES = ("soup", "served", "garnish")
SPLITS = ("training", "validation")  # YouCook2's subset names.

# (location, form) an ingredient must have for the action, and what it has after.
_NEEDS = {
  "place": ("shelf", "whole"),
  "chop": ("board", "whole"),
  "add": ("board", "chopped"),
  "garnish": ("board", "chopped"),
  "serve": ("pot", "cooked"),
}
_GIVES = {
  "place": ("board", "whole"),
  "chop": ("board", "chopped"),
  "add": ("pot", "chopped"),
  "garnish": ("plate", "chopped"),
  "serve": ("plate", "cooked"),
}


class PreconditionError(ValueError):
  """An action was applied to a state that does not allow it."""


@dataclasses.dataclass(frozen=True)
class State:
  """The world at rest. Treat as immutable (`apply` returns a new State).

  Attributes:
    ingredients: name -> (location, form) for the dish's ingredients.
    water, heat, pot_seasoned: the pot holds water / the burner is on / it is broth.
    plate_seasoned: herbs sprinkled on the plate.
  """

  ingredients: dict[str, tuple[str, str]]
  water: bool = False
  heat: bool = False
  pot_seasoned: bool = False
  plate_seasoned: bool = False

  @classmethod
  def initial(cls, names: Sequence[str]) -> State:
    return cls({n: ("shelf", "whole") for n in names})

  def check(self, action: str, ingredient: str | None = None) -> str | None:
    """Why `action` is not allowed now, or None if it is."""
    if action in INGREDIENT_ACTIONS:
      if ingredient not in self.ingredients:
        return f"{action}: {ingredient!r} is not in the kitchen"
      need, have = _NEEDS[action], self.ingredients[ingredient]
      if have != need:
        return f"{action} {ingredient} needs it {need[1]} on the {need[0]}, it is {have}"
      return None
    if ingredient is not None:
      return f"{action} takes no ingredient, got {ingredient!r}"
    in_pot = [f for loc, f in self.ingredients.values() if loc == "pot"]
    on_plate = any(loc == "plate" for loc, _ in self.ingredients.values())
    reason = {
      "pour": "the pot already holds water" if self.water else None,
      "boil": (
        "the pot has no water"
        if not self.water
        else "the stove is already on"
        if self.heat
        else None
      ),
      "season": (
        "the pot has no water"
        if not self.water
        else "the pot is already seasoned"
        if self.pot_seasoned
        else None
      ),
      "stir": (
        None
        if self.heat and self.water and "chopped" in in_pot
        else "stirring cooks chopped pieces in boiling water; there are none"
      ),
      "sprinkle": (
        "the plate is empty"
        if not on_plate
        else "the plate already has herbs"
        if self.plate_seasoned
        else None
      ),
    }
    if action not in reason:
      raise ValueError(f"unknown action {action!r}; expected one of {ACTIONS}")
    return reason[action]

  def apply(self, action: str, ingredient: str | None = None) -> State:
    """The state after `action`; raises PreconditionError if it is not allowed."""
    why = self.check(action, ingredient)
    if why:
      raise PreconditionError(why)
    ings = dict(self.ingredients)
    if action in INGREDIENT_ACTIONS:
      assert ingredient is not None  # check() requires one.
      ings[ingredient] = _GIVES[action]
      return dataclasses.replace(self, ingredients=ings)
    if action == "stir":
      ings = {n: (loc, "cooked" if loc == "pot" else f) for n, (loc, f) in ings.items()}
      return dataclasses.replace(self, ingredients=ings)
    flag = {
      "pour": "water",
      "boil": "heat",
      "season": "pot_seasoned",
      "sprinkle": "plate_seasoned",
    }[action]
    changes: dict[str, Any] = {flag: True}
    return dataclasses.replace(self, **changes)

  def to_json(self) -> dict[str, Any]:
    return {
      "ingredients": {n: {"location": loc, "form": f} for n, (loc, f) in self.ingredients.items()},
      "water": self.water,
      "heat": self.heat,
      "pot_seasoned": self.pot_seasoned,
      "plate_seasoned": self.plate_seasoned,
    }

  @classmethod
  def from_json(cls, d: dict[str, Any]) -> State:
    return cls(
      {n: (v["location"], v["form"]) for n, v in d["ingredients"].items()},
      d["water"],
      d["heat"],
      d["pot_seasoned"],
      d["plate_seasoned"],
    )


@dataclasses.dataclass(frozen=True)
class Step:
  """One step: the action, its ingredient (None for pot/plate actions), the instruction
  text and the clip's duration in seconds."""

  action: str
  ingredient: str | None
  text: str
  duration: float


@dataclasses.dataclass(frozen=True)
class Recipe:
  """A dish: name, ingredients (by group), route per ingredient, ordered steps, split."""

  dish: str
  ingredients: tuple[str, ...]
  routes: tuple[str, ...]
  steps: tuple[Step, ...]
  split: str

  def states(self) -> list[State]:
    """[len(steps) + 1] states: the initial one, then the state after each step."""
    out = [State.initial(self.ingredients)]
    for s in self.steps:
      out.append(out[-1].apply(s.action, s.ingredient))
    return out


def combination_split(ingredients: Sequence[str], val_fraction: float) -> str:
  """training | validation for a dish's ingredient set: a stable hash against the fraction.

  A set held out at fraction f is also held out at any larger f.
  """
  key = "+".join(sorted(ingredients)).encode()
  u = int.from_bytes(hashlib.sha256(key).digest()[:8], "big") / 2.0**64
  return "validation" if u < val_fraction else "training"


def video_split(index: int, val_fraction: float) -> str:
  """The split of video `index`: every 1/f-th video is validation (exact counts)."""
  lo, hi = math.floor(index * val_fraction + 1e-9), math.floor((index + 1) * val_fraction + 1e-9)
  return "validation" if hi > lo else "training"
