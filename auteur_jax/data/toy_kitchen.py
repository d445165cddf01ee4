"""The toy kitchen: a procedural cooking world, its recipes and the raw data set it writes.

World. Twelve ingredients (`toy_render.INGREDIENTS`, four slot groups of three) live on a
counter with a shelf, a cutting board, a pot on a stove and a plate. An ingredient's
state is (location, form): location in LOCATIONS, form in FORMS. The pot has water /
heat / seasoning flags, the plate a herb flag. Ten action types change the state, each
with a precondition (`State.check`): place (shelf -> board), chop (whole -> chopped on
the board), add (chopped, board -> pot), garnish (chopped, board -> plate), pour (water
into the empty pot), boil (heat on, needs water), season (water -> broth), stir (cooks
every chopped piece in the boiling pot), serve (cooked, pot -> plate), sprinkle (herbs
on a plate that holds food).

Recipes. A dish picks 1-4 ingredients (at most one per group) and a route for each:
soup (ends in the pot: cooked, or chopped in cold water for a cold soup), served
(cooked, then on the plate) or garnish (raw chopped on the plate); the steps are a
random order that respects the preconditions.

Split. A dish's *combination* is the set of ingredients it uses. Whether a combination
is validation is a fixed hash of the set (`combination_split`), independent of the seed:
validation dishes use ingredient sets, and hence (action, ingredient) pair sets, that no
training dish uses; each single ingredient still occurs in many training sets.

Text. Actions are short instructions (5-13 words; real YouCook2 steps are 10-25 words).
Captions describe the clip's final state and what changed, 30-70 words.

Output of `generate_dataset` (in out_dir): videos/<id>.mp4, youcook2_annotations.json,
captions.jsonl, states/<id>.json and optionally preview.png; see `generate_dataset`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import multiprocessing
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from tqdm import tqdm

from auteur_jax.data import toy_render, video_io
from auteur_jax.data.toy_render import INGREDIENTS, LOOKS, Timeline, render_story  # noqa: F401

ACTIONS = ("place", "chop", "add", "garnish", "pour", "boil", "season", "stir", "serve",
           "sprinkle")
INGREDIENT_ACTIONS = ("place", "chop", "add", "garnish", "serve")
LOCATIONS = ("shelf", "board", "pot", "plate")
FORMS = ("whole", "chopped", "cooked")
ROUTES = ("soup", "served", "garnish")
SPLITS = ("training", "validation")  # YouCook2's subset names.

# (location, form) an ingredient must have for the action, and what it has after.
_NEEDS = {"place": ("shelf", "whole"), "chop": ("board", "whole"),
          "add": ("board", "chopped"), "garnish": ("board", "chopped"),
          "serve": ("pot", "cooked")}
_GIVES = {"place": ("board", "whole"), "chop": ("board", "chopped"),
          "add": ("pot", "chopped"), "garnish": ("plate", "chopped"),
          "serve": ("plate", "cooked")}


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
        "boil": ("the pot has no water" if not self.water else
                 "the stove is already on" if self.heat else None),
        "season": ("the pot has no water" if not self.water else
                   "the pot is already seasoned" if self.pot_seasoned else None),
        "stir": (None if self.heat and self.water and "chopped" in in_pot else
                 "stirring cooks chopped pieces in boiling water; there are none"),
        "sprinkle": ("the plate is empty" if not on_plate else
                     "the plate already has herbs" if self.plate_seasoned else None),
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
      ings[ingredient] = _GIVES[action]
      return dataclasses.replace(self, ingredients=ings)
    if action == "stir":
      ings = {n: (loc, "cooked" if loc == "pot" else f) for n, (loc, f) in ings.items()}
      return dataclasses.replace(self, ingredients=ings)
    flag = {"pour": "water", "boil": "heat", "season": "pot_seasoned",
            "sprinkle": "plate_seasoned"}[action]
    return dataclasses.replace(self, **{flag: True})

  def to_json(self) -> dict[str, Any]:
    return {"ingredients": {n: {"location": loc, "form": f}
                            for n, (loc, f) in self.ingredients.items()},
            "water": self.water, "heat": self.heat, "pot_seasoned": self.pot_seasoned,
            "plate_seasoned": self.plate_seasoned}

  @classmethod
  def from_json(cls, d: dict[str, Any]) -> State:
    return cls({n: (v["location"], v["form"]) for n, v in d["ingredients"].items()},
               d["water"], d["heat"], d["pot_seasoned"], d["plate_seasoned"])


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
  u = int.from_bytes(hashlib.sha256(key).digest()[:8], "big") / 2.0 ** 64
  return "validation" if u < val_fraction else "training"


def video_split(index: int, val_fraction: float) -> str:
  """The split of video `index`: every 1/f-th video is validation (exact counts)."""
  lo, hi = math.floor(index * val_fraction + 1e-9), math.floor((index + 1) * val_fraction + 1e-9)
  return "validation" if hi > lo else "training"


_TEXT = {
    "place": ("Take the {x} from the shelf and put it on the cutting board.",
              "Move the whole {x} onto the cutting board.", "Place the {x} on the board."),
    "chop": ("Chop the {x} into small pieces.", "Cut the {x} into four pieces with a knife.",
             "Slice the {x} on the cutting board."),
    "add": ("Add the chopped {x} to the pot.", "Put the {x} pieces into the pot.",
            "Transfer the chopped {x} from the board to the pot."),
    "garnish": ("Put the chopped {x} on the plate.", "Arrange the raw {x} pieces on the plate.",
                "Move the chopped {x} onto the plate as a garnish."),
    "pour": ("Pour water into the pot.", "Fill the pot with water from the jug."),
    "boil": ("Turn on the stove and bring the pot to a boil.",
             "Heat the pot until the water boils."),
    "season": ("Season the water with salt and spices.", "Add salt to the pot to make a broth."),
    "stir": ("Stir the pot until the {x} {be} cooked.",
             "Stir and cook the {x} in the boiling pot."),
    "serve": ("Serve the cooked {x} onto the plate.",
              "Ladle the cooked {x} from the pot onto the plate."),
    "sprinkle": ("Sprinkle herbs over the plate.", "Garnish the plate with chopped herbs."),
}


def _join(names: Sequence[str]) -> str:
  return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def dish_name(ingredients: Sequence[str], routes: Sequence[str], cooked: bool,
              pot_seasoned: bool, plate_seasoned: bool) -> str:
  """E.g. 'seasoned tomato soup with boiled carrot and corn garnish'."""
  by = {r: [n for n, rr in zip(ingredients, routes) if rr == r] for r in ROUTES}
  parts = []
  if by["soup"]:
    parts.append(("seasoned " if pot_seasoned else "") + ("" if cooked else "cold ")
                 + _join(by["soup"]) + " soup")
  if by["served"]:
    boiled = ("seasoned boiled " if pot_seasoned and not by["soup"] else "boiled ")
    parts.append(boiled + _join(by["served"]))
  if by["garnish"]:
    parts.append(_join(by["garnish"]) + (" garnish" if parts else " salad"))
  name = " with ".join([parts[0], " and ".join(parts[1:])] if len(parts) > 1 else parts)
  return ("herbed " if plate_seasoned else "") + name


def make_recipe(rng: np.random.Generator | int, min_steps: int = 4, max_steps: int = 12,
                split: str | None = None, val_fraction: float = 0.2) -> Recipe:
  """A random dish with min_steps..max_steps steps (4 <= min <= max <= 12).

  `split` restricts the dish's ingredient set to that split's combinations (None: any).
  Clip durations are 2-4 s in 0.25 s steps. Deterministic for a seed / generator state.
  """
  if not 4 <= min_steps <= max_steps <= 12:
    raise ValueError(f"steps must satisfy 4 <= min <= max <= 12, got {min_steps}..{max_steps}")
  if split not in (None, *SPLITS):
    raise ValueError(f"split must be one of {SPLITS} or None, got {split!r}")
  rng = np.random.default_rng(rng) if isinstance(rng, (int, np.integer)) else rng
  groups = [[look.name for look in INGREDIENTS if look.group == g]
            for g in range(toy_render.NUM_GROUPS)]
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
    return Recipe(dish_name(names, routes, cook, season, sprinkle), tuple(names),
                  tuple(routes), tuple(steps), combination_split(names, val_fraction))
  raise ValueError(f"no {split or 'any'} dish with {min_steps}..{max_steps} steps at "
                   f"val_fraction={val_fraction}")


def _order(rng: np.random.Generator, names: list[str], routes: list[str], cook: bool,
           season: bool, sprinkle: bool) -> list[Step]:
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
    ok = [t for t in todo if state.check(*t) is None
          and not (t[0] == "stir" and "add" in acts)
          and not (t[0] == "sprinkle" and acts & {"garnish", "serve"})]
    action, ing = ok[int(rng.integers(len(ok)))]
    todo.remove((action, ing))
    x = ing
    if action == "stir":
      x = _join([n for n, (loc, f) in state.ingredients.items() if loc == "pot" and f == "chopped"])
    templates = _TEXT[action]
    text = templates[int(rng.integers(len(templates)))].format(
        x=x, be="are" if x and " and " in x else "is")
    steps.append(Step(action, ing, text, 2.0 + 0.25 * int(rng.integers(9))))
    state = state.apply(action, ing)
  return steps


def _describe(name: str, form: str, detailed: bool) -> str:
  words = LOOKS[name].words + " " if detailed else ""
  return {"whole": f"a whole {words}{name}", "chopped": f"chopped {words}{name} pieces",
          "cooked": f"cooked {name} pieces"}[form]


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
    x = _join([n for n, (loc, f) in before.ingredients.items() if loc == "pot" and f == "chopped"])
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
  at = {loc: [_describe(n, f, detailed) for n, (where, f) in s.ingredients.items()
              if where == loc] for loc in LOCATIONS}
  out = [f"The shelf holds {_join(at['shelf'])}." if at["shelf"] else "The shelf is empty.",
         f"The cutting board holds {_join(at['board'])}." if at["board"]
         else "The cutting board is empty."]
  stove = "lit" if s.heat else "cold"
  liquid = ("boiling " if s.heat else "") + ("cream broth" if s.pot_seasoned else "water")
  if s.water or at["pot"]:
    inside = [liquid] * s.water + ([_join(at["pot"])] if at["pot"] else [])
    out.append(f"The pot on the {stove} stove holds {' with '.join(inside)}.")
  else:
    out.append(f"The empty pot sits on the {stove} stove.")
  herbs = ", sprinkled with green herbs" if s.plate_seasoned else ""
  out.append(f"The blue plate holds {_join(at['plate'])}{herbs}." if at["plate"]
             else "The blue plate is empty.")
  return out


def noisy_segments(clips: Sequence[tuple[float, float]], duration: float, noise: float,
                   rng: np.random.Generator) -> list[tuple[float, float]]:
  """ASR-like action times: each clip's [start, end] shifted, extended or shrunk.

  Each boundary moves by at most `noise` x the clip's length: a common shift of up to
  half that plus an independent jitter of up to half. Clamped to [0, duration]; a
  segment keeps at least 20 % of its clip's length. Times in seconds, 3 decimals.
  """
  out = []
  for start, end in clips:
    length = end - start
    shift, ds, de = rng.uniform(-0.5, 0.5, 3) * noise * length
    s = min(max(start + shift + ds, 0.0), duration)
    e = min(max(end + shift + de, s + 0.2 * length), duration)
    s = min(s, e - 0.2 * length)
    out.append((round(s, 3), round(e, 3)))
  return out


@dataclasses.dataclass(frozen=True)
class _Job:
  out_dir: str
  index: int
  seed: int
  size: int
  fps: float
  noise: float
  val_fraction: float
  min_steps: int
  max_steps: int


def video_recipe(seed: int, index: int, val_fraction: float = 0.2, min_steps: int = 4,
                 max_steps: int = 12) -> tuple[Recipe, np.random.Generator]:
  """Video `index`'s recipe in a data set made with `seed`, and the generator that then
  draws its timestamp noise (seeded by (seed, index))."""
  rng = np.random.default_rng([seed, index])
  split = video_split(index, val_fraction)
  return make_recipe(rng, min_steps, max_steps, split, val_fraction), rng


def _write_json(path: str, obj: Any) -> None:
  """JSON written atomically: a temporary file in the same folder, then a rename."""
  tmp = f"{path}.tmp-{os.getpid()}"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(obj, f, separators=(",", ":"))
  os.replace(tmp, path)


def _make_video(job: _Job) -> dict[str, Any]:
  """Renders, encodes and describes one video; writes its mp4 and states JSON."""
  vid = f"toy_{job.index:06d}"
  recipe, rng = video_recipe(job.seed, job.index, job.val_fraction, job.min_steps,
                             job.max_steps)
  frames, tl = toy_render.render_story(recipe, job.size, job.fps)
  video_io.write_video(os.path.join(job.out_dir, "videos", f"{vid}.mp4"), frames, job.fps)
  duration = len(frames) / job.fps
  clips = [(f0 / job.fps, f1 / job.fps) for f0, f1 in tl.clips]
  segments = noisy_segments(clips, duration, job.noise, rng) if job.noise > 0 else clips
  steps = []
  for i, (step, (f0, f1), (a, b)) in enumerate(zip(recipe.steps, tl.clips, tl.motion)):
    steps.append({"index": i, "action": step.action, "ingredient": step.ingredient,
                  "text": step.text, "start": clips[i][0], "end": clips[i][1],
                  "frames": [f0, f1], "motion": [a, b], "state": i + 1})
  _write_json(os.path.join(job.out_dir, "states", f"{vid}.json"), {
      "video_id": vid, "dish": recipe.dish, "split": recipe.split, "fps": job.fps,
      "size": job.size, "num_frames": len(frames), "duration": duration,
      "ingredients": list(recipe.ingredients), "routes": list(recipe.routes),
      "states": [s.to_json() for s in tl.states], "steps": steps,
      "frames": {"state": tl.state_index.tolist(), "moving": tl.moving.astype(int).tolist()}})
  annotation = {
      "duration": duration, "subset": recipe.split, "recipe_type": recipe.dish,
      "annotations": [{"segment": [s, e], "id": i, "sentence": step.text}
                      for i, ((s, e), step) in enumerate(zip(segments, recipe.steps))],
      "video_url": f"videos/{vid}.mp4"}
  captions = [{"video_id": vid, "start": s, "end": e,
               "caption": caption(tl.states[i], tl.states[i + 1], recipe.steps[i])}
              for i, (s, e) in enumerate(clips)]
  return {"video_id": vid, "annotation": annotation, "captions": captions,
          "split": recipe.split, "steps": len(recipe.steps), "frames": len(frames)}


def generate_dataset(out_dir: str, num_videos: int, seed: int = 0, size: int = 64,
                     fps: float = 8.0, noise: float = 0.0, val_fraction: float = 0.2,
                     workers: int = 0, preview: bool = False, progress: bool = True,
                     min_steps: int = 4, max_steps: int = 12) -> dict[str, Any]:
  """Writes the raw toy-kitchen data set into `out_dir`.

  Files:
    videos/<video_id>.mp4: one story per video (H.264, size x size, `fps`).
    youcook2_annotations.json: {"database": {video_id: {"duration": s, "subset":
      "training" | "validation", "recipe_type": dish, "annotations": [{"segment":
      [start, end], "id": i, "sentence": action}], "video_url": "videos/<id>.mp4"}}};
      segments are the true clip times, jittered when noise > 0 (`noisy_segments`).
    captions.jsonl: per clip {"video_id", "start", "end", "caption"}, true times.
    states/<video_id>.json: dish, split, fps, size, num_frames, duration, ingredients,
      routes, "states" ([N + 1] State.to_json; [0] is the initial state), "steps" (per
      step: index, action, ingredient, text, start, end, frames [f0, f1), motion [a, b),
      state = index into "states" after the step) and "frames" ({"state": [T] index
      into "states", "moving": [T] 0/1}).
    preview.png (preview=True): contact sheet of video 0.

  Video i uses the seed (seed, i) and is validation every 1/val_fraction-th index, so
  a video does not depend on num_videos or workers. workers: 0 = one process per CPU,
  1 = in this process. Returns a summary (counts per split, paths, seconds).
  """
  if num_videos < 1:
    raise ValueError(f"num_videos must be >= 1, got {num_videos}")
  if size % 16 or not 16 <= size <= 256:
    raise ValueError(f"size must be a multiple of 16 in [16, 256], got {size}")
  if not 4 <= min_steps <= max_steps <= 12:
    raise ValueError(f"steps must satisfy 4 <= min <= max <= 12, got {min_steps}..{max_steps}")
  if not fps > 0 or not 0 <= noise <= 1 or not 0 <= val_fraction < 1:
    raise ValueError(f"need fps > 0, 0 <= noise <= 1, 0 <= val_fraction < 1; got fps={fps}, "
                     f"noise={noise}, val_fraction={val_fraction}")
  t0 = time.perf_counter()
  for sub in ("videos", "states"):
    os.makedirs(os.path.join(out_dir, sub), exist_ok=True)
  jobs = [_Job(out_dir, i, seed, size, fps, noise, val_fraction, min_steps, max_steps)
          for i in range(num_videos)]
  workers = min(workers or os.cpu_count() or 1, num_videos)
  bar = tqdm(total=num_videos, desc="toy kitchen", unit="video", disable=not progress)
  results = []
  if workers == 1:
    for job in jobs:
      results.append(_make_video(job))
      bar.update()
  else:  # spawn: safe even when the caller has started threads (JAX, grain).
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
      chunk = max(1, min(16, num_videos // (4 * workers)))
      for r in pool.imap(_make_video, jobs, chunksize=chunk):  # In order: deterministic.
        results.append(r)
        bar.update()
  bar.close()
  ann_path = os.path.join(out_dir, "youcook2_annotations.json")
  _write_json(ann_path, {"database": {r["video_id"]: r["annotation"] for r in results}})
  cap_path = os.path.join(out_dir, "captions.jsonl")
  tmp = f"{cap_path}.tmp-{os.getpid()}"
  with open(tmp, "w", encoding="utf-8") as f:
    for r in results:
      for c in r["captions"]:
        f.write(json.dumps(c) + "\n")
  os.replace(tmp, cap_path)
  preview_path = None
  if preview:
    recipe, _ = video_recipe(seed, 0, val_fraction, min_steps, max_steps)
    frames, tl = toy_render.render_story(recipe, size, fps)
    preview_path = os.path.join(out_dir, "preview.png")
    toy_render.contact_sheet(frames, tl, [s.text for s in recipe.steps],
                             f"{results[0]['video_id']}: {recipe.dish}").save(preview_path)
  return {"out_dir": out_dir, "videos": num_videos,
          "training": sum(r["split"] == "training" for r in results),
          "validation": sum(r["split"] == "validation" for r in results),
          "steps": sum(r["steps"] for r in results),
          "frames": sum(r["frames"] for r in results),
          "annotations": ann_path, "captions": cap_path,
          "videos_dir": os.path.join(out_dir, "videos"),
          "states_dir": os.path.join(out_dir, "states"), "preview": preview_path,
          "seconds": time.perf_counter() - t0}
