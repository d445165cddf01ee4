"""`auteur demo`: the embedded default end to end — data, four trainings, two stories.

  auteur demo [--plan default|long|longer|quick] [--from-scratch] [--out demo_out]
              [--director interleaved|language]

1. data   (demo/data.py): a toy-kitchen data set through import -> build -> tokenizer.
2. models: the toy configs (auteur_jax/configs/toy/) trained in the README's chain, with the
   demo's step counts (PLANS) and these overrides, stated in metrics.json:
     vae       batch 4 (CPU time), then `auteur encode` -> latents [3, 8, 8, 16]
     clip      then `auteur encode` -> visual_embedding [16, 64] per clip and story step
     director  on the stories of the first Plan.director_videos toy videos (the demo's
               and more, demo/data.py) with embeddings; batch 4, text segments cut to
               the toy texts' lengths (16 action, 72 caption tokens)
     dit       on the clips with latents and embeddings
   and with --director language (plans.KEYFRAME_TASKS):
     keyframe      the keyframe renderer on the stories with each step's last latent frame
     dit_keyframe  the keyframe-conditioned DiT, from the dit's params widened
   With Plan.stills the VAE first trains on dense toy stills (data/toy_stills.py: single
   frames crowded with pieces; OVERRIDES['vae_stills']) in OUT/runs/vae_stills, and
   its clip run starts from those params inflated to video (config.init.inflate): on
   the clips alone a pixel loss draws the backgrounds for thousands of steps before the
   small pieces.
   Each run goes to OUT/runs/<task>; a run that already reached its steps is kept
   (the trainer resumes a shorter one), so a second `auteur demo` only re-renders.
   Without --from-scratch, a model of Plan.shipped whose params ship in SHIPPED (see
   auteur_jax/assets/checkpoints/toy/README.md) starts from them instead of training.
3. stories (sample/story.py): two validation stories written by the director from their
   dish name and rendered by the DiT and VAE -> OUT/stories/<id>/ (clips, story.mp4,
   story.json, embeddings.npy), OUT/<id>.mp4 and OUT/<id>.gif, OUT/contact_sheet.png.
   With --director language the videos and the contact sheet are the language-centric
   director's (keyframes drawn by the renderer, clips by the keyframe DiT), the sheet
   with the rendered keyframes beside the true ones.
4. metrics (demo/evaluate.py) -> OUT/metrics.json (with --director language also the
   keyframe metrics and the keyframe vs embedding video state agreement).

Plans and the per-task config overrides: demo/plans.py.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time

import jax
import ml_collections

from auteur_jax.checkpoint.layout import step_dir_of
from auteur_jax.demo import data as demo_data
from auteur_jax.demo import evaluate as demo_eval
from auteur_jax.demo.plans import (
  ALL_TASKS,
  OVERRIDES,
  PLANS,
  SHIPPED,
  TASKS,
  Plan,
  task_config,
)
from auteur_jax.parallel.mesh import make_mesh


def _mesh(config: ml_collections.ConfigDict) -> jax.sharding.Mesh:
  """Data parallel over as many devices as divide the batch (all of them, usually)."""
  n = math.gcd(jax.device_count(), config.data.batch_size)
  return make_mesh({"data": n, "fsdp": 1, "tensor": 1}, jax.devices()[:n])


def trained_steps(workdir: str) -> int:
  """The step of the run's latest checkpoint (0: none)."""
  step = step_dir_of(workdir)
  return int(os.path.basename(step)) if step and os.path.basename(step).isdigit() else 0


def train_chain(
  plan: Plan,
  paths: dict,
  runs: str,
  from_scratch: bool,
  progress: bool = True,
  tasks: tuple[str, ...] = TASKS,
) -> dict:
  """Trains (or takes from SHIPPED) the models of `tasks` (TASKS, then any of
  KEYFRAME_TASKS) and writes the encoded data sets.

  Returns per task: workdir, source ("trained" | "shipped" | "kept"), steps, seconds,
  the last logged metrics. Sets paths["director_enc"] when it makes the director's data.
  """
  from auteur_jax.sample.encode import encode_dataset

  out: dict[str, dict] = {}
  shipped = {
    t: not from_scratch and t in plan.shipped and bool(step_dir_of(os.path.join(SHIPPED, t)))
    for t in ALL_TASKS
  }
  all_shipped = all(shipped[t] for t in TASKS)  # Then only the validation split is encoded.
  for task in tasks:
    config = task_config(task, plan, paths)
    workdir = os.path.join(runs, task)
    t0 = time.perf_counter()
    if from_scratch:
      shutil.rmtree(workdir, ignore_errors=True)
    info = {
      "workdir": workdir,
      "steps": plan.steps[task],
      "data": config.data.dir,
      "overrides": {**OVERRIDES[task], **plan.overrides.get(task, {})},
    }
    if shipped[task]:
      workdir = os.path.join(SHIPPED, task)
      info.update(source="shipped", workdir=workdir)
    elif trained_steps(workdir) >= plan.steps[task]:
      info["source"] = "kept"
    else:
      if task == "vae" and plan.stills:
        info["stills"] = _vae_stills(plan, paths, runs, from_scratch, progress)
        config.init.checkpoint, config.init.inflate = info["stills"]["workdir"], True
      if task in plan.continues and not from_scratch and step_dir_of(os.path.join(SHIPPED, task)):
        config.init.checkpoint = info["init"] = os.path.join(SHIPPED, task)  # Trains on.
      elif task == "dit_keyframe":  # The chain's DiT widened (config.init.widen_inputs).
        config.init.checkpoint = info["init"] = out["dit"]["workdir"]
      info.update(train_model(config, workdir, f"{task} for {plan.steps[task]} steps", progress))
    if task in ("vae", "clip"):  # Encode the data set for the next models.
      enc = config.copy_and_resolve_references()
      enc.init.checkpoint = workdir
      if all_shipped:  # Nothing trains: only the validation split is scored.
        enc.encode.splits = ("val",)
      if from_scratch or info["source"] != "kept":
        shutil.rmtree(enc.encode.out_dir, ignore_errors=True)
      info["encode"] = {
        k: v
        for k, v in encode_dataset(enc, progress=progress).items()
        if k in ("field", "shape", "out_dir")
      }
      if task == "clip" and plan.director_videos and not shipped["director"]:
        paths["director_enc"] = _director_data(plan, paths, enc, progress)
    info["seconds"] = round(time.perf_counter() - t0, 1)
    out[task] = info
  return out


def train_model(config: ml_collections.ConfigDict, workdir: str, what: str, progress: bool) -> dict:
  """Trains `config` in `workdir` -> {"source": "trained", "last": the last logged numbers}."""
  from auteur_jax.train.trainer import train

  if progress:
    print(f"demo: training {what} -> {workdir}", flush=True)
  last = train(config, workdir, progress=progress, mesh=_mesh(config))
  return {
    "source": "trained",
    "last": {k: v for k, v in last.items() if isinstance(v, (int, float))},
  }


def _vae_stills(plan: Plan, paths: dict, runs: str, from_scratch: bool, progress: bool) -> dict:
  """The VAE's image stage: writes plan.stills dense stills to paths["stills"] (kept
  when made with the same count and seed), trains on them; returns the run's info."""
  from auteur_jax.data.toy_stills import write_stills

  t0 = time.perf_counter()
  workdir, steps = os.path.join(runs, "vae_stills"), plan.steps["vae_stills"]
  if from_scratch:
    shutil.rmtree(workdir, ignore_errors=True)
  info = {
    "workdir": workdir,
    "steps": steps,
    "data": paths["stills"],
    "overrides": OVERRIDES["vae_stills"],
  }
  if trained_steps(workdir) >= steps:
    info["source"] = "kept"
  else:
    made = os.path.join(paths["stills"], "dataset.json")
    want = {"num": plan.stills, "seed": plan.seed}
    if not os.path.exists(made) or {k: json.load(open(made))["stills"][k] for k in want} != want:
      shutil.rmtree(paths["stills"], ignore_errors=True)
      write_stills(paths["stills"], plan.stills, plan.seed, progress=progress)
    info.update(
      train_model(
        task_config("vae_stills", plan, paths),
        workdir,
        f"the VAE on {plan.stills} stills for {steps} steps",
        progress,
      )
    )
  info["seconds"] = round(time.perf_counter() - t0, 1)
  return info


def _director_data(
  plan: Plan, paths: dict, clip_config: ml_collections.ConfigDict, progress: bool
) -> str:
  """Makes the director's data set (demo/data.py) and encodes it with the CLIP of
  clip_config; returns the encoded folder."""
  from auteur_jax.sample.encode import encode_dataset

  work = os.path.join(os.path.dirname(paths["tfrecords"]), "director")
  made = demo_data.prepare(
    work, plan.director_videos, plan.seed, progress=progress, tokenizer=paths["tokenizer"]
  )
  c = clip_config.copy_and_resolve_references()
  c.encode.in_dir, c.encode.out_dir = made["tfrecords"], os.path.join(work, "tfrecords_enc")
  c.encode.splits = ("train",)
  shutil.rmtree(c.encode.out_dir, ignore_errors=True)
  encode_dataset(c, progress=progress)
  return c.encode.out_dir


def prepare(work: str, plan: Plan, progress: bool = True) -> dict:
  """The plan's toy-kitchen data set in `work` (demo/data.py) -> its paths, with those
  the chain writes: vae (clips with latents), enc (and embeddings), stills."""
  paths = demo_data.prepare(work, plan.videos, plan.seed, progress=progress)
  paths.update(
    vae=os.path.join(work, "tfrecords_vae"),
    enc=os.path.join(work, "tfrecords_enc"),
    stills=os.path.join(work, "stills"),
  )
  return paths


def run(
  out_dir: str = "demo_out",
  plan_name: str = "default",
  from_scratch: bool = False,
  progress: bool = True,
  director: str = "interleaved",
) -> dict:
  """The whole demo (see the module docstring) with PLANS[plan_name] and the director
  "interleaved" or "language"; returns the metrics written."""
  if plan_name not in PLANS:
    raise ValueError(f"plan must be one of {sorted(PLANS)}, got {plan_name!r}")
  if director not in ("interleaved", "language"):
    raise ValueError(f"director must be 'interleaved' or 'language', got {director!r}")
  plan = PLANS[plan_name]
  out_dir = os.path.abspath(out_dir)  # orbax restores absolute paths only.
  t0 = time.perf_counter()
  work = os.path.join(out_dir, "work")
  timings = {}
  if from_scratch:
    shutil.rmtree(work, ignore_errors=True)
  paths = prepare(work, plan, progress)
  timings["data"] = round(time.perf_counter() - t0, 1)
  tasks = ALL_TASKS if director == "language" else TASKS
  models = train_chain(plan, paths, os.path.join(out_dir, "runs"), from_scratch, progress, tasks)
  timings.update({t: m["seconds"] for t, m in models.items()})
  metrics = demo_eval.evaluate(
    plan, paths, models, out_dir, timings, progress=progress, director=director
  )
  metrics["timings_s"]["total"] = round(time.perf_counter() - t0, 1)
  metrics["plan"] = dict(
    dataclasses.asdict(plan), name=plan_name, from_scratch=from_scratch, director=director
  )
  metrics["models"] = models
  path = os.path.join(out_dir, "metrics.json")
  tmp = f"{path}.tmp-{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(metrics, f, indent=1)
  os.replace(tmp, path)
  return metrics


def ship(runs: str, dst: str = SHIPPED, tasks: tuple[str, ...] = TASKS) -> dict:
  """Writes the params of runs/<task> to dst/<task> in bfloat16, without optimizer state
  (restored into the float32 models): the files that a default `auteur demo` starts
  from (KEYFRAME_TASKS: `--director language`), under 20 MB in all. Returns bytes per
  task."""
  from auteur_jax.convert.reshard import reshard

  sizes = {}
  for task in tasks:
    shutil.rmtree(os.path.join(dst, task), ignore_errors=True)  # reshard makes it anew.
    src, out = (os.path.abspath(os.path.join(d, task)) for d in (runs, dst))
    r = reshard(src, out, {"data": 1}, drop_optimizer=True, dtype="bfloat16")
    sizes[task] = r["bytes"]
  return sizes
