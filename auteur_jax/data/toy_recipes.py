"""Random toy-kitchen recipes.

A dish picks 1-4 ingredients (at most one per group) and a route for each:
soup (ends in the pot: cooked, or chopped in cold water for a cold soup), served
(cooked, then on the plate) or garnish (raw chopped on the plate); the steps are a
random order that respects the preconditions.
"""

from __future__ import annotations

import numpy as np

from auteur_jax.data.toy_draw import INGREDIENTS, NUM_GROUPS
from auteur_jax.data.toy_text import INSTRUCTIONS, dish_name, join_names
from auteur_jax.data.toy_world import (
  ROUTES,
  SPLITS,
  Recipe,
  State,
  Step,
  combination_split,
  video_split,
)


def make_recipe(
  rng: np.random.Generator | int,
  min_steps: int = 4,
  max_steps: int = 12,
  split: str | None = None,
  val_fraction: float = 0.2,
) -> Recipe:
  """A random dish with min_steps..max_steps steps (4 <= min <= max <= 12).

  `split` restricts the dish's ingredient set to that split's combinations (None: any).
  Clip durations are 2-4 s in 0.25 s steps. Deterministic for a seed / generator state.
  """
  if not 4 <= min_steps <= max_steps <= 12:
    raise ValueError(f"steps must satisfy 4 <= min <= max <= 12, got {min_steps}..{max_steps}")
  if split not in (None, *SPLITS):
    raise ValueError(f"split must be one of {SPLITS} or None, got {split!r}")
  rng = np.random.default_rng(rng) if isinstance(rng, (int, np.integer)) else rng
  groups = [[look.name for look in INGREDIENTS if look.group == g] for g in range(NUM_GROUPS)]
  for _ in range(20000):
    k = int(rng.choice(4, p=[0.3, 0.35, 0.25, 0.1])) + 1
    chosen = sorted(rng.choice(len(groups), k, replace=False).tolist())
    names = [groups[g][int(rng.integers(len(groups[g])))] for g in chosen]
    routes = [ROUTES[int(rng.choice(3, p=[0.35, 0.35, 0.3]))] for _ in names]
    pot = any(r != "garnish" for r in routes)
    cook = "served" in routes or (pot and bool(rng.random() < 0.75))  # Else a cold soup.
    season = pot and bool(rng.random() < 0.5)
    sprinkle = any(r != "soup" for r in routes) and bool(rng.random() < 0.4)
    n = sum(4 if r == "served" else 3 for r in routes) + pot + 2 * cook + season + sprinkle
    if not min_steps <= n <= max_steps:
      continue
    if split is not None and combination_split(names, val_fraction) != split:
      continue
    steps = _order(rng, names, routes, cook, season, sprinkle)
    return Recipe(
      dish_name(names, routes, cook, season, sprinkle),
      tuple(names),
      tuple(routes),
      tuple(steps),
      combination_split(names, val_fraction),
    )
  raise ValueError(
    f"no {split or 'any'} dish with {min_steps}..{max_steps} steps at val_fraction={val_fraction}"
  )


def _order(
  rng: np.random.Generator,
  names: list[str],
  routes: list[str],
  cook: bool,
  season: bool,
  sprinkle: bool,
) -> list[Step]:
  """A random order of the needed actions, each allowed by the state when taken.

  Beyond the world's preconditions the plan stirs once, after every add, and sprinkles
  after everything has reached the plate, so no action is wasted.
  """
  todo: list[tuple[str, str | None]] = []
  for n, r in zip(names, routes):
    todo += [("place", n), ("chop", n), ("garnish" if r == "garnish" else "add", n)]
    todo += [("serve", n)] if r == "served" else []
  todo += [("pour", None)] if any(r != "garnish" for r in routes) else []
  todo += [("boil", None), ("stir", None)] if cook else []
  todo += [("season", None)] * season + [("sprinkle", None)] * sprinkle
  state, steps = State.initial(names), []
  while todo:
    acts = {a for a, _ in todo}
    ok = [
      t
      for t in todo
      if state.check(*t) is None
      and not (t[0] == "stir" and "add" in acts)
      and not (t[0] == "sprinkle" and acts & {"garnish", "serve"})
    ]
    action, ing = ok[int(rng.integers(len(ok)))]
    todo.remove((action, ing))
    x = ing
    if action == "stir":
      x = join_names(
        [n for n, (loc, f) in state.ingredients.items() if loc == "pot" and f == "chopped"]
      )
    templates = INSTRUCTIONS[action]
    text = templates[int(rng.integers(len(templates)))].format(
      x=x, be="are" if x and " and " in x else "is"
    )
    steps.append(Step(action, ing, text, 2.0 + 0.25 * int(rng.integers(9))))
    state = state.apply(action, ing)
  return steps


def video_recipe(
  seed: int, index: int, val_fraction: float = 0.2, min_steps: int = 4, max_steps: int = 12
) -> tuple[Recipe, np.random.Generator]:
  """Video `index`'s recipe in a data set made with `seed`, and the generator that then
  draws its timestamp noise (seeded by (seed, index))."""
  rng = np.random.default_rng([seed, index])
  split = video_split(index, val_fraction)
  return make_recipe(rng, min_steps, max_steps, split, val_fraction), rng
