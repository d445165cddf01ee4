"""The demo's plans (how big each run is) and the toy configs each task trains with.

Plans: "default" (from the shipped checkpoints, which it made: minutes); "long" (the
default with the VAE and the DiT trained here, CLIP and director shipped: README gives
its time); "longer" (the shipped models with the DiT trained on: Plan.continues);
"quick" (the same path with a tiny data set and a few steps per model: CI; the numbers
are then meaningless, the files and keys are not).

The language-centric director (`auteur demo --director language`) also needs
KEYFRAME_TASKS: the keyframe renderer (toy/keyframe) and the keyframe-conditioned DiT
(toy/dit:keyframe, started from the chain's DiT with its new input channels zero).
"""

from __future__ import annotations

import dataclasses
import os

import ml_collections

from auteur_jax.config import load_config

# Params of the four toy models, if shipped (package data).
SHIPPED = os.path.join(
  os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets", "checkpoints", "toy"
)
TASKS = ("vae", "clip", "director", "dit")
KEYFRAME_TASKS = ("keyframe", "dit_keyframe")  # The language director's two models.
ALL_TASKS = TASKS + KEYFRAME_TASKS


KEYFRAME_STEPS, DIT_KEYFRAME_STEPS = 900, 5000


@dataclasses.dataclass(frozen=True)
class Plan:
  """How big the demo is: data, train steps per task, what is rendered and scored."""

  videos: int
  steps: dict  # task -> train steps
  director_videos: int  # The director's data set: the first N videos (0: the demo's own).
  sample_steps: int  # Flow-matching steps per clip.
  render: int = 2  # Validation stories shown (videos, contact sheet).
  score: int | None = None  # Validation stories scored (None: all).
  seed: int = 0
  stills: int = 0  # Dense stills for the VAE's image stage (steps["vae_stills"]); 0: none.
  shipped: tuple[str, ...] = ALL_TASKS  # Taken from SHIPPED when there (no --from-scratch).
  # Tasks trained here for steps[task] more, starting from their SHIPPED params when there
  # (config.init.checkpoint; no --from-scratch).
  continues: tuple[str, ...] = ()
  overrides: dict = dataclasses.field(default_factory=dict)  # task -> more config overrides.


_DEFAULT = Plan(
  videos=120,
  steps={
    "vae_stills": 1500,
    "vae": 500,
    "clip": 600,
    "director": 2000,
    "dit": 40000,
    # The shipped ones' steps (assets/checkpoints/toy/provenance.json): CPU time.
    "keyframe": KEYFRAME_STEPS,
    "dit_keyframe": DIT_KEYFRAME_STEPS,
  },
  director_videos=600,
  sample_steps=30,
  stills=6000,
  # The toy config's CFG 5 / 3 overdraws the pieces (README); the keyframe DiT samples
  # with the same scales, so that the two conditionings compare at one setting.
  overrides={
    "dit": {"sample.text_scale": 2.0, "sample.visual_scale": 1.5},
    "dit_keyframe": {"sample.text_scale": 2.0, "sample.visual_scale": 1.5},
  },
)
PLANS = {
  "default": _DEFAULT,  # Starts from SHIPPED (its README: how they were made).
  "long": dataclasses.replace(_DEFAULT, shipped=("clip", "director")),  # Trains VAE + DiT.
  # The shipped DiT trained on for 20,000 steps, the lr decayed from 1e-4 to 0 (README).
  "longer": dataclasses.replace(
    _DEFAULT,
    steps={**_DEFAULT.steps, "dit": 20000},
    shipped=("vae", "clip", "director"),
    continues=("dit",),
    overrides={
      **_DEFAULT.overrides,
      "dit": {**_DEFAULT.overrides["dit"], "train.schedule": "cosine", "train.warmup_steps": 200},
    },
  ),
  "quick": Plan(
    videos=10,
    steps={
      "vae_stills": 2,
      "vae": 2,
      "clip": 2,
      "director": 2,
      "dit": 2,
      "keyframe": 2,
      "dit_keyframe": 2,
    },
    director_videos=12,
    sample_steps=2,
    score=2,
    stills=32,
  ),
}

# Per-task overrides of the toy configs (besides paths and steps), all in metrics.json.
OVERRIDES: dict[str, dict[str, object]] = {
  "vae": {"data.batch_size": 4},
  "clip": {},
  # Toy actions are <= 14 tokens, captions <= 67 (the demo's BPE): shorter blocks.
  "director": {
    "data.batch_size": 4,
    "data.max_action_tokens": 16,
    "data.max_caption_tokens": 72,
    "sample.max_action_tokens": 16,
    "sample.max_caption_tokens": 72,
  },
  # The toy DiT config evaluates during training; the demo scores its own way.
  "dit": {"eval.every": 0, "eval.video_every": 0},
  "keyframe": {},
  # The keyframe DiT's new input channels start at zero (config.init.widen_inputs) from
  # the chain's DiT (train_chain sets config.init.checkpoint).
  "dit_keyframe": {"eval.every": 0, "eval.video_every": 0},
  # The VAE's image stage (toy/vae on dense stills): one frame per example.
  "vae_stills": {"data.num_frames": 1, "data.batch_size": 16, "train.lr": 1e-3},
}


def task_config(
  task: str, plan: Plan, paths: dict, name: str | None = None
) -> ml_collections.ConfigDict:
  """toy/<task> (or the packaged config `name`, e.g. "toy/director:caption_visual") with
  the demo's data paths, step count and overrides ("vae_stills": the VAE's image stage,
  toy/vae on paths["stills"]; "dit_keyframe": toy/dit:keyframe)."""
  data_dir = {
    "vae": paths["tfrecords"],
    "clip": paths["tfrecords"],
    "director": paths.get("director_enc", paths["enc"]),
    "dit": paths["enc"],
    "vae_stills": paths.get("stills"),
    "keyframe": paths["vae"],  # Stories with each step's last latent frame.
    "dit_keyframe": paths["enc"],
  }[task]
  steps = plan.steps[task]
  values = {
    "data.dir": data_dir,
    "train.steps": steps,
    "train.log_every": max(1, min(25, steps)),
    "train.checkpoint_every": max(1, steps),
    "train.keep_last": 1,
    **OVERRIDES[task],
    **plan.overrides.get(task, {}),
  }
  if task not in ("vae", "vae_stills"):
    values["data.tokenizer"] = paths["tokenizer"]
  if task == "vae":
    values.update({"encode.in_dir": paths["tfrecords"], "encode.out_dir": paths["vae"]})
  if task == "clip":
    values.update({"encode.in_dir": paths["vae"], "encode.out_dir": paths["enc"]})
  name = name or "toy/" + {"vae_stills": "vae", "dit_keyframe": "dit:keyframe"}.get(task, task)
  return load_config(name, [f"--config.{k}={v}" for k, v in values.items()])
