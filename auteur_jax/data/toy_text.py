"""The toy kitchen's text: instructions, dish names and dense captions.

Actions are short instructions (5-13 words; real YouCook2 steps are 10-25 words).
Captions describe the clip's final state and what changed, 30-70 words.
"""

from __future__ import annotations

from collections.abc import Sequence

from auteur_jax.data.toy_draw import LOOKS
from auteur_jax.data.toy_world import LOCATIONS, ROUTES, State, Step

# Instruction templates per action; {x} is the ingredient(s), {be} is / are.
INSTRUCTIONS = {
  "place": (
    "Take the {x} from the shelf and put it on the cutting board.",
    "Move the whole {x} onto the cutting board.",
    "Place the {x} on the board.",
  ),
  "chop": (
    "Chop the {x} into small pieces.",
    "Cut the {x} into four pieces with a knife.",
    "Slice the {x} on the cutting board.",
  ),
  "add": (
    "Add the chopped {x} to the pot.",
    "Put the {x} pieces into the pot.",
    "Transfer the chopped {x} from the board to the pot.",
  ),
  "garnish": (
    "Put the chopped {x} on the plate.",
    "Arrange the raw {x} pieces on the plate.",
    "Move the chopped {x} onto the plate as a garnish.",
  ),
  "pour": ("Pour water into the pot.", "Fill the pot with water from the jug."),
  "boil": ("Turn on the stove and bring the pot to a boil.", "Heat the pot until the water boils."),
  "season": ("Season the water with salt and spices.", "Add salt to the pot to make a broth."),
  "stir": ("Stir the pot until the {x} {be} cooked.", "Stir and cook the {x} in the boiling pot."),
  "serve": (
    "Serve the cooked {x} onto the plate.",
    "Ladle the cooked {x} from the pot onto the plate.",
  ),
  "sprinkle": ("Sprinkle herbs over the plate.", "Garnish the plate with chopped herbs."),
}


def join_names(names: Sequence[str]) -> str:
  """'a', 'a and b', 'a, b and c'."""
  return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def dish_name(
  ingredients: Sequence[str],
  routes: Sequence[str],
  cooked: bool,
  pot_seasoned: bool,
  plate_seasoned: bool,
) -> str:
  """E.g. 'seasoned tomato soup with boiled carrot and corn garnish'."""
  by = {r: [n for n, rr in zip(ingredients, routes) if rr == r] for r in ROUTES}
  parts = []
  if by["soup"]:
    parts.append(
      ("seasoned " if pot_seasoned else "")
      + ("" if cooked else "cold ")
      + join_names(by["soup"])
      + " soup"
    )
  if by["served"]:
    boiled = "seasoned boiled " if pot_seasoned and not by["soup"] else "boiled "
    parts.append(boiled + join_names(by["served"]))
  if by["garnish"]:
    parts.append(join_names(by["garnish"]) + (" garnish" if parts else " salad"))
  name = " with ".join([parts[0], " and ".join(parts[1:])] if len(parts) > 1 else parts)
  return ("herbed " if plate_seasoned else "") + name


def _describe(name: str, form: str, detailed: bool) -> str:
  words = LOOKS[name].words + " " if detailed else ""
  return {
    "whole": f"a whole {words}{name}",
    "chopped": f"chopped {words}{name} pieces",
    "cooked": f"cooked {name} pieces",
  }[form]


_CHANGE = {
  "place": "A whole {w} {x} slides from the shelf onto the wooden cutting board.",
  "chop": "A knife cuts the {w} {x} on the cutting board into four pieces.",
  "add": "The chopped {x} pieces move from the cutting board into the pot.",
  "garnish": "The raw chopped {x} pieces move from the cutting board onto the blue plate.",
  "serve": "A ladle carries the cooked {x} pieces from the pot onto the blue plate.",
  "pour": "A jug pours water into the pot, which fills with blue water.",
  "boil": "The burner under the pot glows orange and the water starts to bubble.",
  "season": "A shaker seasons the water, which turns into a pale cream broth.",
  "stir": "A wooden spoon stirs the pot and the {x} pieces darken as they cook.",
  "sprinkle": "A shaker scatters green herbs across the plate.",
}


def caption(before: State, after: State, step: Step) -> str:
  """A 30-70 word dense caption: what changed in the clip and where everything lies."""
  x = step.ingredient
  if step.action == "stir":
    x = join_names(
      [n for n, (loc, f) in before.ingredients.items() if loc == "pot" and f == "chopped"]
    )
  change = _CHANGE[step.action].format(x=x, w=LOOKS[x].words if x in LOOKS else "")
  for detailed, opening in ((True, True), (False, True), (False, False)):
    parts = ["Top-down view of a kitchen counter."] * opening + [change]
    parts += _where(after, detailed)
    text = " ".join(parts)
    if len(text.split()) <= 70:
      break
  if len(text.split()) < 30:
    text += " Nothing else is on the grey counter, and the scene stays still."
  return text


def _where(s: State, detailed: bool) -> list[str]:
  at = {
    loc: [_describe(n, f, detailed) for n, (where, f) in s.ingredients.items() if where == loc]
    for loc in LOCATIONS
  }
  out = [
    f"The shelf holds {join_names(at['shelf'])}." if at["shelf"] else "The shelf is empty.",
    f"The cutting board holds {join_names(at['board'])}."
    if at["board"]
    else "The cutting board is empty.",
  ]
  stove = "lit" if s.heat else "cold"
  liquid = ("boiling " if s.heat else "") + ("cream broth" if s.pot_seasoned else "water")
  if s.water or at["pot"]:
    inside = [liquid] * s.water + ([join_names(at["pot"])] if at["pot"] else [])
    out.append(f"The pot on the {stove} stove holds {' with '.join(inside)}.")
  else:
    out.append(f"The empty pot sits on the {stove} stove.")
  herbs = ", sprinkled with green herbs" if s.plate_seasoned else ""
  out.append(
    f"The blue plate holds {join_names(at['plate'])}{herbs}."
    if at["plate"]
    else "The blue plate is empty."
  )
  return out
