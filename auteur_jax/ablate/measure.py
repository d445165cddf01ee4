"""Scores one variant of one seed on the validation stories (tables.METRICS).

The stories, their true clips, states and keyframes, the toy CLIP scorer and the true
clips' FVD features are read once (`Context`); each variant then renders the first
Budget.stories validation stories with its models (demo/evaluate.py's sampler configs,
sampling seed = the seed) and is scored against them:

  video scores      the clips' last frames vs the true states (state_agreement,
                    changed_objects), CLIP-T of each clip with its step's true caption,
                    FVD of the clips to the true clips (eval/fvd.py, toy CLIP features)
  director scores   demo/evaluate.director_scores: free-run step top-1 and action exact,
                    teacher-forced step top-1
  keyframe scores   eval/keyframe_metrics on the keyframes (the language path's drawn
                    ones; the interleaved director's clips' last frames), CLIP-T of each
                    keyframe with its caption, FID of the keyframes to the true ones
                    (Frechet distance of their toy CLIP image embeddings)
"""

from __future__ import annotations

import dataclasses
import os
import time

import ml_collections
import numpy as np
from flax import nnx

from auteur_jax.ablate.runs import plan_for, run_config
from auteur_jax.ablate.tables import RUNS, Budget, Variant
from auteur_jax.demo import evaluate as demo_eval
from auteur_jax.demo.plans import SHIPPED, task_config
from auteur_jax.eval import keyframe_metrics as km
from auteur_jax.eval import narrative, video_features
from auteur_jax.eval.clip_score import ClipScorer, load_clip
from auteur_jax.eval.fvd import frechet_distance
from auteur_jax.sample.keyframes import KeyframeSampler
from auteur_jax.sample.story import StoryResult, StorySampler


@dataclasses.dataclass
class Context:
  """What every variant is scored against (read once per process)."""

  budget: Budget
  paths: dict
  stories: list[dict]  # The scored validation stories (demo/evaluate.read_val).
  captions: list[str]  # Their steps' true captions, in story order.
  before: list  # True State before / after each step, in story order.
  after: list
  scorer: ClipScorer
  features: video_features.VideoFeatures  # Toy CLIP video features for FVD.
  real_clips: np.ndarray  # Features of the true clips [N, F].
  real_keyframes: np.ndarray  # CLIP image embeddings of the true keyframes [N, P].

  @classmethod
  def load(cls, budget: Budget, paths: dict) -> Context:
    stories, clips = demo_eval.read_val(paths)
    stories = stories[: budget.stories]
    true = [demo_eval.clip_of(clips, s, t) for s in stories for t in range(len(s["actions"]))]
    clip_cfg = task_config("clip", plan_for(budget), paths)
    model = load_clip(clip_cfg, os.path.join(SHIPPED, "clip"))
    tokenizer = _tokenizer(paths)
    scorer = ClipScorer(model, tokenizer, clip_cfg.data.max_text_len)
    features = video_features.get("clip", model=model)
    per_step = lambda key: [x for s in stories for x in s[key]]  # noqa: E731
    return cls(
      budget,
      paths,
      stories,
      per_step("captions"),
      per_step("before"),
      per_step("after"),
      scorer,
      features,
      features([c["frames"] for c in true]),
      scorer.image_embeddings(np.stack([c["keyframe"] for c in true])),
    )


def _tokenizer(paths: dict):
  from auteur_jax.data.tokenizer import Tokenizer

  return Tokenizer.load(paths["tokenizer"])


def _sampler_config(
  ctx: Context, models: dict, seed: int, language: bool
) -> ml_collections.ConfigDict:
  """demo/evaluate's sampler config (sampling seed `seed`) with each section's model: a
  run's own training config (its chain, its overrides) restored from its workdir, or the
  shipped model."""
  plan = dataclasses.replace(plan_for(ctx.budget), seed=seed)
  cfg = (demo_eval.language_config if language else demo_eval.sample_config)(
    plan, ctx.paths, models
  )
  for section, m in models.items():
    if "run" in m and section in cfg:
      c, _ = run_config(RUNS[m["run"]], ctx.budget, ctx.paths, seed)
      c.init.checkpoint = m["workdir"]
      if section in ("dit", "dit_keyframe", "keyframe"):
        c.sample.num_steps = plan.sample_steps
      cfg[section] = c
  return cfg


def _video_scores(ctx: Context, results: list[StoryResult]) -> dict:
  clips = [c for r in results for c in r.clips]
  v = demo_eval.video_scores([c[-1] for c in clips], ctx.before, ctx.after)
  return {
    "state_agreement": v["state_agreement"],
    "changed_objects": v["changed_objects"],
    "clip_t": narrative.mean(list(ctx.scorer.clip_t(clips, ctx.captions))),
    "fvd": frechet_distance(ctx.real_clips, ctx.features(clips)),
  }


def _keyframe_scores(ctx: Context, keyframes: list[np.ndarray]) -> dict:
  """keyframes: per story uint8 [S, H, W, 3]."""
  after = [s["after"] for s in ctx.stories]
  per_story = [list(k) for k in keyframes]
  flat = np.concatenate(keyframes)
  return {
    "keyframe_state_agreement": km.keyframe_state_agreement(per_story, after)["objects"],
    "identity_consistency": km.identity_consistency(per_story, after)["consistent"],
    "keyframe_clip_t": narrative.mean(
      list(ctx.scorer.clip_t([k[None] for k in flat], ctx.captions))
    ),
    "fid": frechet_distance(ctx.real_keyframes, ctx.scorer.image_embeddings(flat)),
  }


def measure(ctx: Context, variant: Variant, models: dict, seed: int) -> dict:
  """The variant's scores (tables.METRICS names -> float) with `models` (runs.models_for),
  sampling seed `seed`; also "seconds"."""
  t0 = time.perf_counter()
  language = variant.measure in ("keyframe", "keyframe_alone", "latent")
  cfg = _sampler_config(ctx, models, seed, language)
  if variant.measure == "latent":
    cfg.sample.director = "latent"
  sampler = StorySampler.from_config(cfg)
  free_reqs, given_reqs = demo_eval.requests_for(ctx.stories)
  out: dict = {}
  if variant.measure == "director":
    results = sampler.render(free_reqs)
    d = demo_eval.director_scores(sampler, ctx.stories, results)
    out.update(
      step_top1=d["free_run"]["step_top1"],
      action_exact=d["free_run"]["action_exact"],
      teacher_forced_top1=d["teacher_forced"]["step_top1"],
    )
  elif variant.measure == "latent":
    results = sampler.render(free_reqs)
  else:
    if variant.measure == "keyframe_alone":  # The renderer without reference keyframes.
      kf = sampler.keyframes
      assert kf is not None
      sampler.keyframes = KeyframeSampler(
        nnx.merge(kf._graph, kf._params),
        kf.tokenizer,
        dataclasses.replace(kf.settings, rolling=False),
        kf.mesh,
        kf.rules,
      )
    results = sampler.render(given_reqs)
  out.update(_video_scores(ctx, results))
  if variant.measure in ("keyframe", "keyframe_alone", "latent"):
    out.update(_keyframe_scores(ctx, [np.asarray(r.keyframes) for r in results]))
  elif variant.measure == "interleaved":
    out.update(_keyframe_scores(ctx, [np.stack([c[-1] for c in r.clips]) for r in results]))
  out["seconds"] = round(time.perf_counter() - t0, 1)
  return out
