"""`auteur ablate`: the paper's ablation tables on the toy kitchen, resumable.

  auteur ablate --table 3|4|5|6|7|13|all [--seeds 3] [--quick] [--out DIR]

For each table, each seed (outer loop: a stopped run has whole seeds), each variant:
trains the variant's runs (ablate/runs.py; a finished run is kept, an interrupted one
resumes), renders and scores the validation stories (ablate/measure.py) and writes
DIR/measures/<measure>__<runs>/seed_<s>.json. A rerun skips every finished measurement,
and variants of other tables with the same runs and measure reuse it. After each table:
DIR/<table>.json, DIR/<table>.png and DIR/REPORT.md (every table finished so far).
--quick: one table of 2 variants, 1 seed, a few steps (checks the machinery, not the
paper).
"""

from __future__ import annotations

import json
import os
import time

from auteur_jax.ablate import report
from auteur_jax.ablate.runs import models_for, prepare_data, train_run
from auteur_jax.ablate.tables import (
  BUDGETS,
  ORDER,
  QUICK_TABLE,
  TABLES,
  AblateError,
  Budget,
  Table,
  Variant,
)


def tables_for(names: list[str], quick: bool) -> list[Table]:
  """--table values -> tables in run order; unknown names raise AblateError."""
  if quick:
    return [QUICK_TABLE]
  picked = []
  for name in names:
    if name == "all":
      picked += [t for t in ORDER if t not in picked]
    elif name in TABLES:
      picked += [] if name in picked else [name]
    else:
      raise AblateError(f"--table {name!r}: expected one of {[*ORDER, 'all']}")
  return [TABLES[t] for t in picked]


def _measure_path(out: str, variant: Variant, seed: int) -> str:
  key = f"{variant.measure}__{'+'.join(variant.runs)}"
  return os.path.join(out, "measures", key, f"seed_{seed}.json")


def _write_json(path: str, obj: dict) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = f"{path}.tmp-{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=1)
  os.replace(tmp, path)


def ablate(
  names: list[str],
  seeds: int = 3,
  quick: bool = False,
  out: str = "ablate_out",
  progress: bool = True,
  budget: Budget | None = None,
) -> dict:
  """Runs the tables (module docstring) -> {table id: its summary}. budget: instead of
  BUDGETS["quick" if quick else "full"] (tests: every table at the quick budget)."""
  from auteur_jax.ablate.measure import Context, measure

  tables = tables_for(names, quick)
  if seeds < 1:
    raise AblateError(f"--seeds must be >= 1, got {seeds}")
  budget = budget or BUDGETS["quick" if quick else "full"]
  out = os.path.abspath(out)
  say = print if progress else (lambda *a, **k: None)
  paths = prepare_data(out, budget, progress)
  ctx = None
  done = {}
  for table in tables:
    t0 = time.perf_counter()
    per_seed: dict[str, dict[int, dict]] = {v.name: {} for v in table.variants}
    train_seconds = 0.0
    for seed in range(seeds):
      for v in table.variants:
        path = _measure_path(out, v, seed)
        if not os.path.exists(path):
          runs = {r: train_run(out, r, budget, paths, seed, progress) for r in v.runs}
          if ctx is None:
            ctx = Context.load(budget, paths)
          scores = measure(ctx, v, models_for(out, v.runs, seed), seed)
          _write_json(path, {"scores": scores, "runs": runs, "seed": seed})
          say(f"ablate: table {table.id}, {v.name}, seed {seed}: {scores}", flush=True)
        with open(path) as f:
          rec = json.load(f)
        per_seed[v.name][seed] = rec["scores"]
        train_seconds += sum(r.get("seconds", 0.0) for r in rec["runs"].values())
    summary = report.summarize(table, per_seed, _budget_note(table, budget))
    report.write_table(out, summary, train_seconds)
    write_report(out)  # After every table: a stopped run keeps the report of those done.
    done[table.id] = summary
    say(f"ablate: table {table.id} written ({time.perf_counter() - t0:.0f} s)", flush=True)
  return done


def _budget_note(table: Table, budget: Budget) -> dict:
  from auteur_jax.ablate.tables import RUNS

  kinds = {RUNS[r].kind for v in table.variants for r in v.runs}
  steps = {k: getattr(budget, k) for k in sorted(kinds)}
  return {
    "steps": steps,
    "validation_stories": budget.stories,
    "sample_steps": budget.sample_steps,
    "director_videos": budget.director_videos,
  }


def write_report(out: str) -> str:
  """DIR/REPORT.md from every DIR/<table>.json there (in ORDER)."""
  parts = [
    "# VideoAuteur's ablations on the toy kitchen (`auteur ablate`)",
    "",
    "Means +- 95 % intervals over seeds; a claim holds when the interval of the paired "
    "(same seed) difference is on the paper's side of 0, does not hold when it is on the "
    "other side, and is not resolved otherwise. Director runs train from scratch, DiT and "
    "renderer runs fine-tune the shipped toy models (steps below). ^: higher is better, "
    "v: lower is better. Metrics: auteur_jax/ablate/tables.py.",
    "",
  ]
  summaries = []
  for tid in (*ORDER, QUICK_TABLE.id):
    path = os.path.join(out, f"{tid}.json")
    if os.path.exists(path):
      with open(path) as f:
        summaries.append(json.load(f))
  if summaries:
    parts.append(report.claims_table(summaries))
  for s in summaries:
    parts.append(report.markdown(s, s.get("train_seconds", 0.0)))
    parts.append(f"![{s['title']}]({s['table']}.png)\n")
  text = "\n".join(parts)
  path = os.path.join(out, "REPORT.md")
  with open(path, "w") as f:
    f.write(text)
  return path
