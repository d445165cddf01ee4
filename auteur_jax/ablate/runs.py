"""The ablations' data set and trainings: one toy-kitchen data set for every table, and
each run of tables.RUNS trained once per seed in OUT/runs/<run>/seed_<s>.

Data: the demo's toy-kitchen set (demo/data.py: Budget.videos videos, validation stories with
ingredient sets no training story uses) encoded with the shipped toy VAE and CLIP
(train and validation splits), and the director's larger set (Budget.director_videos
videos) encoded with the same CLIP: demo/pipeline.train_chain with VAE and CLIP shipped;
that set's clips also encoded by the VAE (Table 13's director regresses their latents).
"""

from __future__ import annotations

import json
import os
import shutil
import time

import ml_collections

from auteur_jax.ablate.tables import RUNS, Budget, Run
from auteur_jax.demo import pipeline as demo_pipeline
from auteur_jax.demo.plans import ALL_TASKS, PLANS, SHIPPED, Plan, task_config
from auteur_jax.sample.encode import encode_dataset

DATA_SEED = 0  # The toy world's seed: the same data for every seed of every variant.


def plan_for(budget: Budget, seed: int = DATA_SEED) -> Plan:
  """The demo Plan the ablations read their data paths, configs and sampling from."""
  steps = {t: 1 for t in ("vae_stills", *ALL_TASKS)}
  steps.update(director=budget.director, dit=budget.dit, dit_keyframe=budget.dit)
  steps["keyframe"] = budget.keyframe
  return Plan(
    videos=budget.videos,
    steps=steps,
    director_videos=budget.director_videos,
    sample_steps=budget.sample_steps,
    score=budget.stories,
    seed=seed,
    shipped=tuple(t for t in ALL_TASKS if t != "director"),  # The director's data is made.
    overrides=PLANS["default"].overrides,  # The demo's sampling guidance scales.
  )


def prepare_data(out: str, budget: Budget, progress: bool = True) -> dict:
  """The data sets in OUT/work (made once: OUT/work/ablate_data.json records their
  paths; delete it to make them again) -> paths as demo/pipeline.prepare gives them."""
  work = os.path.join(out, "work")
  record = os.path.join(work, "ablate_data.json")
  want = {"videos": budget.videos, "director_videos": budget.director_videos, "seed": DATA_SEED}
  plan = plan_for(budget)
  made = {}
  if os.path.exists(record):
    with open(record) as f:
      made = json.load(f)
  if made.get("made_with") == want:
    paths = made["paths"]
  else:
    t0 = time.perf_counter()
    paths = demo_pipeline.prepare(work, plan, progress)
    demo_pipeline.train_chain(
      plan, paths, os.path.join(work, "runs"), False, progress, tasks=("vae", "clip")
    )
    if "director_enc" not in paths:
      raise RuntimeError("the director's data set was not made (demo/pipeline.train_chain)")
    made = {"made_with": want, "paths": paths, "seconds": round(time.perf_counter() - t0, 1)}
  if "director_vae" not in paths:  # Also for sets made before Table 13 needed it.
    paths["director_vae"] = _director_latents(plan, paths, progress)
  tmp = f"{record}.tmp-{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(made, f)
  os.replace(tmp, record)
  return paths


def _director_latents(plan: Plan, paths: dict, progress: bool) -> str:
  """The director's stories with VAE latents in their clips (Table 13's targets): its raw
  clips encoded by the shipped VAE -> the folder."""
  vae = task_config("vae", plan, paths)
  vae.init.checkpoint = os.path.join(SHIPPED, "vae")
  director_dir = os.path.dirname(paths["director_enc"])
  vae.encode.in_dir = os.path.join(director_dir, "tfrecords")
  vae.encode.out_dir = os.path.join(director_dir, "tfrecords_vae")
  vae.encode.splits = ("train",)
  shutil.rmtree(vae.encode.out_dir, ignore_errors=True)
  encode_dataset(vae, progress=progress)
  return vae.encode.out_dir


def run_config(
  run: Run, budget: Budget, paths: dict, seed: int
) -> tuple[ml_collections.ConfigDict, int]:
  """The training config of `run` for `seed` (the demo's data paths and overrides, the
  run's own, its steps from `budget`) and its step count."""
  steps = getattr(budget, run.kind)
  config = task_config(run.task, plan_for(budget), paths, name=run.config)
  for key, value in run.overrides:
    section, _, leaf = key.rpartition(".")
    node = config
    for part in section.split("."):
      node = node[part]
    node[leaf] = value
  config.train.steps = steps
  config.train.log_every = max(1, min(50, steps))
  config.train.checkpoint_every = max(1, min(500, steps))
  config.train.seed = seed  # Init (from scratch), noise, times, condition dropout.
  config.data.seed = seed  # And the order of the examples.
  if run.init is not None:
    config.init.checkpoint = os.path.join(SHIPPED, run.init)
  if run.data is not None:
    config.data.dir = paths[run.data]
  return config, steps


def workdir_of(out: str, name: str, seed: int) -> str:
  return os.path.join(out, "runs", name, f"seed_{seed}")


def train_run(
  out: str, name: str, budget: Budget, paths: dict, seed: int, progress: bool = True
) -> dict:
  """Trains RUNS[name] for `seed` in its workdir unless it already reached its steps (an
  interrupted run resumes from its last checkpoint) -> {"workdir", "steps", "seconds",
  "source": "trained" | "kept", "config": the run's config name and overrides}."""
  run = RUNS[name]
  config, steps = run_config(run, budget, paths, seed)
  workdir = workdir_of(out, name, seed)
  info = {
    "workdir": workdir,
    "steps": steps,
    "config": run.config,
    "overrides": dict(run.overrides),
    "init": run.init,
  }
  t0 = time.perf_counter()
  if demo_pipeline.trained_steps(workdir) >= steps:
    return {**info, "source": "kept", "seconds": 0.0}
  what = f"{name} (seed {seed}) for {steps} steps"
  result = demo_pipeline.train_model(config, workdir, what, progress)
  return {**info, **result, "seconds": round(time.perf_counter() - t0, 1)}


def models_for(out: str, runs: tuple[str, ...], seed: int) -> dict:
  """{sampler section: {"workdir"}}: the shipped toy models, with the given runs' (for
  `seed`) in their sections, where "run" names the run."""
  models = {t: {"workdir": os.path.join(SHIPPED, t)} for t in ALL_TASKS}
  for name in runs:
    models[RUNS[name].task] = {"workdir": workdir_of(out, name, seed), "run": name}
  return models
