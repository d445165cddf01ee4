"""The demo's renders and metrics on the validation stories (eval/narrative.py, CLIP-T).

Validation stories use ingredient sets that no training story uses (toy_world.py).
Measured, each on the first `plan.score` validation stories (all by default):

director
  free_run        the director writes every step from the dish name (greedy, the number
                  of steps given): step_top1 (its z_t's nearest true keyframe embedding of
                  the story is step t's), action_exact / action_parsed (eval/narrative.py)
  given_text      given the true actions and captions it only regresses z_t, fed back its
                  own earlier z (story.py's teacher-forced mode): step_top1
  teacher_forced  one training-style pass with the true z history: step_top1 and the
                  next-token accuracy of the text (text_acc)
video (state reader on each clip's last frame vs the true state after its step)
  given_text      the clips story.py renders from the true texts and the regressed z_t
  free_run        the clips of the stories the director writes (the first plan.render
                  of them are the demo's videos and contact sheet)
  references      the same reading of the true clips' last frames (through JPEG) and of
                  their VAE reconstructions (the ceiling the DiT can reach); and
                  `unchanged`: the true state *before* each step scored as if it were the
                  frame (what a clip showing no change would get: one object changes per
                  step, so per-object agreement starts high; `changed` is the accuracy on
                  the objects the step changes, 0 for that baseline)
clip_t            CLIP-T (eval/clip_score.py) of the given-text clips with their captions,
                  of the free-run clips with the captions the director wrote, and of the
                  true clips with theirs (reference)
language          (director "language" only; the paper's Tables 3-4 on the toy) the same
                  stories the language way (sample/story.py): the keyframe renderer draws
                  each step's keyframe (rolling context), the keyframe DiT renders the
                  clip from it. keyframes: eval/keyframe_metrics' state agreement of the
                  keyframes drawn from the true texts with rolling context (max_references
                  as trained) and without (0 references), and of the true keyframes and
                  their VAE reconstructions (references); identity_consistency: the same
                  three sets; video: the language clips' state agreement (given_text,
                  free_run) as above; video_keyframe_vs_embedding: the state agreement of
                  the keyframe-conditioned clips next to the embedding-conditioned ones
                  (`video`); clip_t of the language clips. The demo's videos and contact
                  sheet are then the language stories', with the rendered keyframes.
"""

from __future__ import annotations

import json
import os
import shutil
import time

import jax.numpy as jnp
import numpy as np
from flax import nnx

from auteur_jax.data import examples, pipeline, tfrecord, video_io
from auteur_jax.data.toy_world import State
from auteur_jax.demo import data as demo_data
from auteur_jax.demo import media
from auteur_jax.demo.plans import task_config
from auteur_jax.eval import narrative
from auteur_jax.eval.clip_score import ClipScorer, load_clip
from auteur_jax.eval.toy_state import object_matches, read_state
from auteur_jax.models import vae as vae_lib
from auteur_jax.sample.encode import keyframe_index


def read_val(paths: dict) -> tuple[list[dict], dict]:
  """Validation stories (sorted by id, with true states) and their clips by (video, start).

  Each story: video_id, task, actions, captions, z [S, K, D], example (the decoded record),
  before / after (States per step, from the toy kitchen's states/<id>.json, steps matched
  by start time).
  Each clip: frames uint8 [9, H, W, 3] (the DiT's window), keyframe [H, W, 3], latents.
  """
  stories = []
  for path in pipeline.split_files(paths["enc"], "val", "stories"):
    for record in tfrecord.iter_records(path):
      s = examples.decode_story(record, path)
      with open(os.path.join(paths["states"], f"{s['video_id']}.json")) as f:
        truth = json.load(f)
      states = [State.from_json(x) for x in truth["states"]]
      idx = [int(np.argmin([abs(st["start"] - a) for st in truth["steps"]])) for a in s["start"]]
      stories.append(
        {
          "video_id": s["video_id"],
          "task": s["task"],
          "actions": s["actions"],
          "captions": s["captions"],
          "start": s["start"],
          "z": np.asarray(s["visual_embedding"], np.float32),
          "example": s,
          "before": [states[truth["steps"][i]["state"] - 1] for i in idx],
          "after": [states[truth["steps"][i]["state"]] for i in idx],
        }
      )
  clips = {}
  decoder = pipeline.ClipDecoder(9)
  for path in pipeline.split_files(paths["enc"], "val", "clips"):
    for record in tfrecord.iter_records(path):
      ex = examples.decode_clip(record, path)
      frames = decoder(record)["frames"]
      key = video_io.decode_jpeg(ex["frames"][keyframe_index(ex)])
      clips[ex["video_id"], round(float(ex["start"]), 3)] = {
        "frames": frames,
        "keyframe": key,
        "latents": ex["latents"],
      }
  return sorted(stories, key=lambda s: s["video_id"]), clips


def clip_of(clips: dict, story: dict, t: int) -> dict:
  """The true clip of step t of `story` (read_val's clips)."""
  return clips[story["video_id"], round(float(story["start"][t]), 3)]


def video_scores(frames: list[np.ndarray], before: list[State], after: list[State]) -> dict:
  """Last frames vs true states: mean object agreement, exact, changed-object accuracy."""
  scores = [narrative.state_agreement(f, a, b) for f, b, a in zip(frames, before, after)]
  return {
    "state_agreement": narrative.mean([s["objects"] for s in scores]),
    "exact_state": narrative.mean([s["exact"] for s in scores]),
    "changed_objects": narrative.mean([c for s in scores for c in s["changed"]]),
    "clips": len(frames),
  }


def _unchanged(before: list[State], after: list[State]) -> dict:
  objects = [float(np.mean(list(object_matches(b, a).values()))) for b, a in zip(before, after)]
  return {
    "state_agreement": narrative.mean(objects),
    "exact_state": 0.0,
    "changed_objects": 0.0,
    "clips": len(before),
  }


def director_scores(sampler, stories: list[dict], free: list) -> dict:
  """free_run (from story.py's results `free`) and teacher_forced director metrics."""
  from auteur_jax.data.pipeline import StoryDecoder

  top1, exact, parsed = [], [], []
  for r, s in zip(free, stories):
    top1 += narrative.step_top1(r.embeddings, s["z"]).tolist()
    for p, t in zip(r.actions, s["actions"]):
      m = narrative.action_match(p, t)
      exact.append(m["exact"])
      parsed.append(m["parsed"])
  # Teacher-forced: one training-style pass over the stories with their true z.
  d = sampler.director
  model = nnx.merge(d.graphdef, d.params)
  dec = StoryDecoder(
    sampler.tokenizer,
    max(len(s["actions"]) for s in stories),
    d.sampling.max_action_tokens,
    d.sampling.max_caption_tokens,
    embedding_shape=stories[0]["z"].shape[1:],
  )
  rows = [dec.arrays(s["example"]) for s in stories]
  batch = {k: jnp.asarray(np.stack([r[k] for r in rows])) for k in rows[0]}
  res = model(batch)
  _, parts = model.loss(batch)
  tf_top1 = []
  for i, s in enumerate(stories):
    tf_top1 += narrative.step_top1(np.asarray(res.visual[i, : len(s["actions"])]), s["z"]).tolist()
  return {
    "free_run": {
      "step_top1": narrative.mean(top1),
      "action_exact": narrative.mean(exact),
      "action_parsed": narrative.mean(parsed),
      "steps": len(top1),
      "chance_top1": narrative.mean([1 / len(s["actions"]) for s in stories for _ in s["actions"]]),
    },
    "teacher_forced": {"step_top1": narrative.mean(tf_top1), "text_acc": float(parts["text_acc"])},
  }


def sample_config(plan, paths: dict, models: dict):
  """toy/sample with the demo's three model configs, runs and settings."""
  import jax

  from auteur_jax.config import load_config

  cfg = load_config("toy/sample", [])
  for task in ("director", "dit", "vae"):
    c = task_config(task, plan, paths)
    c.init.checkpoint = models[task]["workdir"]
    cfg[task] = c
  cfg.tokenizer = paths["tokenizer"]
  cfg.sample.fps = demo_data.DEMO_FPS
  cfg.sample.seed = plan.seed
  cfg.sample.rows_per_device = max(1, 8 // jax.local_device_count())  # Batched on CPU.
  cfg.dit.sample.num_steps = plan.sample_steps
  return cfg


def _decode_latents(vae, latents: np.ndarray, batch: int = 8) -> np.ndarray:
  """Stored (normalised) latents [N, t, h, w, z] -> uint8 frames [N, T, H, W, 3]."""
  out = []
  for i in range(0, len(latents), batch):
    video = vae_lib.decode(vae, vae.denormalize(jnp.asarray(latents[i : i + batch])))
    out.append(vae_lib.to_uint8(video))
  return np.concatenate(out)


def requests_for(scored: list[dict]) -> tuple[list, list]:
  """Each validation story twice: written by the director from its dish name (free run),
  and with its true actions and captions (given, id suffixed `_given`)."""
  from auteur_jax.sample.story import StoryRequest

  free = [StoryRequest(s["video_id"], s["task"], num_steps=len(s["actions"])) for s in scored]
  given = [
    StoryRequest(
      f"{s['video_id']}_given",
      s["task"],
      actions=tuple(s["actions"]),
      captions=tuple(s["captions"]),
    )
    for s in scored
  ]
  return free, given


def language_config(plan, paths: dict, models: dict):
  """sample_config with the language director: the keyframe renderer, the keyframe DiT
  and the CLIP of the chain (models[task]["workdir"])."""
  cfg = sample_config(plan, paths, models)
  for task in ("keyframe", "dit_keyframe", "clip"):
    c = task_config(task, plan, paths)
    c.init.checkpoint = models[task]["workdir"]
    if task == "dit_keyframe":
      c.init.widen_inputs = False  # The run has the keyframe channels.
    cfg[task] = c
  cfg.sample.director = "language"
  cfg.dit_keyframe.sample.num_steps = plan.sample_steps
  cfg.keyframe.sample.num_steps = plan.sample_steps
  return cfg


def language_scores(
  plan, paths: dict, models: dict, scored: list[dict], clips: dict, video: dict, scorer, say
) -> tuple[dict, list]:
  """The `language` metrics (module docstring) -> (metrics, free-run results)."""
  import dataclasses

  from auteur_jax.eval import keyframe_metrics as km
  from auteur_jax.sample.keyframes import KeyframeRequest, KeyframeSampler, decode_keyframes
  from auteur_jax.sample.story import StorySampler, item_seed

  t0 = time.perf_counter()
  sampler = StorySampler.from_config(language_config(plan, paths, models))
  assert sampler.keyframes is not None  # The language director's.
  free_reqs, given_reqs = requests_for(scored)
  given = sampler.render(given_reqs)
  say(f"demo: language stories, true texts ({time.perf_counter() - t0:.0f} s)", flush=True)
  free = sampler.render(free_reqs)
  say(f"demo: language stories, director's texts ({time.perf_counter() - t0:.0f} s)", flush=True)
  # The same keyframes without rolling context: the renderer with 0 references, the same
  # texts and keyframe seeds as the given-text stories above.
  kf = sampler.keyframes
  renderer = nnx.merge(kf._graph, kf._params)
  alone = KeyframeSampler(
    renderer, kf.tokenizer, dataclasses.replace(kf.settings, rolling=False), kf.mesh, kf.rules
  )
  no_ctx = alone.render(
    [
      KeyframeRequest(
        r.request.id,
        tuple(s["captions"]),
        tuple(s["actions"]),
        seed=item_seed("keyframes", r.seed),
      )
      for r, s in zip(given, scored)
    ],
    vae=sampler.vae,
  )
  say(f"demo: keyframes without rolling context ({time.perf_counter() - t0:.0f} s)", flush=True)
  after = [s["after"] for s in scored]
  true_kf = [[clip_of(clips, s, t)["keyframe"] for t in range(len(s["actions"]))] for s in scored]
  recon_kf = [
    list(
      decode_keyframes(
        sampler.vae,
        np.stack([clip_of(clips, s, t)["latents"][-1] for t in range(len(s["actions"]))]),
      )
    )
    for s in scored
  ]
  sets: dict[str, list] = {"rolling": [], "no_rolling": []}
  for r, n in zip(given, no_ctx):  # Both drawn (language results; vae= given above).
    assert r.keyframes is not None and n.frames is not None
    sets["rolling"].append(list(r.keyframes))
    sets["no_rolling"].append(list(n.frames))
  strip = lambda m: {k: v for k, v in m.items() if k != "per_story"}  # noqa: E731
  keyframes = {k: strip(km.keyframe_state_agreement(f, after)) for k, f in sets.items()}
  keyframes["references"] = {
    "true_keyframes": strip(km.keyframe_state_agreement(true_kf, after)),
    "vae_reconstruction": strip(km.keyframe_state_agreement(recon_kf, after)),
  }
  identity = {k: strip(km.identity_consistency(f, after)) for k, f in sets.items()}
  identity["references"] = {
    "true_keyframes": strip(km.identity_consistency(true_kf, after)),
    "vae_reconstruction": strip(km.identity_consistency(recon_kf, after)),
  }
  per_step = lambda ss, key: [x for s in ss for x in s[key]]  # noqa: E731
  b, a = per_step(scored, "before"), per_step(scored, "after")
  lang_video = {
    "given_text": video_scores([c[-1] for r in given for c in r.clips], b, a),
    "free_run": video_scores([c[-1] for r in free for c in r.clips], b, a),
  }
  caps = per_step(scored, "captions")
  clip_t = {
    "given_text": narrative.mean(list(scorer.clip_t([c for r in given for c in r.clips], caps))),
    "free_run": narrative.mean(
      list(scorer.clip_t([c for r in free for c in r.clips], [c for r in free for c in r.captions]))
    ),
  }
  compare = {
    mode: {
      "keyframe": lang_video[mode]["state_agreement"],
      "embedding": video[mode]["state_agreement"],
      "keyframe_changed_objects": lang_video[mode]["changed_objects"],
      "embedding_changed_objects": video[mode]["changed_objects"],
    }
    for mode in ("given_text", "free_run")
  }
  metrics = {
    "keyframes": keyframes,
    "identity_consistency": identity,
    "video": lang_video,
    "video_keyframe_vs_embedding": compare,
    "clip_t": clip_t,
    "max_references": renderer.cfg.max_references,
    "seconds": round(time.perf_counter() - t0, 1),
  }
  return metrics, free


def evaluate(
  plan,
  paths: dict,
  models: dict,
  out_dir: str,
  timings: dict,
  progress: bool = True,
  director: str = "interleaved",
) -> dict:
  """Renders, scores and writes the demo's outputs (see the module docstring)."""
  from auteur_jax.sample.story import StorySampler, write_story

  t0 = time.perf_counter()
  stories, clips = read_val(paths)
  scored = stories[: plan.score] if plan.score else stories
  shown = stories[: plan.render]
  cfg = sample_config(plan, paths, models)
  sampler = StorySampler.from_config(cfg)
  say = print if progress else (lambda *a, **k: None)
  say(
    f"demo: scoring {len(scored)} validation stories, showing {len(shown)}; models loaded "
    f"({time.perf_counter() - t0:.0f} s)",
    flush=True,
  )
  free_reqs, given_reqs = requests_for(scored)
  free = sampler.render(free_reqs)
  say(
    f"demo: stories written by the director rendered ({time.perf_counter() - t0:.0f} s)", flush=True
  )
  given = sampler.render(given_reqs)
  say(f"demo: stories with the true texts rendered ({time.perf_counter() - t0:.0f} s)", flush=True)
  director_metrics = director_scores(sampler, scored, free)
  top1 = [x for r, s in zip(given, scored) for x in narrative.step_top1(r.embeddings, s["z"])]
  director_metrics["given_text"] = {"step_top1": narrative.mean(top1)}
  timings["render"] = round(time.perf_counter() - t0, 1)

  per_step = lambda ss, key: [x for s in ss for x in s[key]]  # noqa: E731
  true_clips = [clip_of(clips, s, t) for s in scored for t in range(len(s["actions"]))]
  recon = _decode_latents(sampler.vae, np.stack([c["latents"] for c in true_clips]))
  b, a = per_step(scored, "before"), per_step(scored, "after")
  video = {
    "given_text": video_scores([c[-1] for r in given for c in r.clips], b, a),
    "free_run": video_scores([c[-1] for r in free for c in r.clips], b, a),
    "references": {
      "true_clips": video_scores([c["frames"][-1] for c in true_clips], b, a),
      "vae_reconstruction": video_scores([v[-1] for v in recon], b, a),
      "unchanged": _unchanged(b, a),
    },
  }

  clip_cfg = task_config("clip", plan, paths)
  scorer = ClipScorer(
    load_clip(clip_cfg, models["clip"]["workdir"]), sampler.tokenizer, clip_cfg.data.max_text_len
  )
  caps = per_step(scored, "captions")
  # list(): narrative.mean takes a Sequence; the float32 scalars (and so the mean) are kept.
  clip_t = {
    "given_text": narrative.mean(list(scorer.clip_t([c for r in given for c in r.clips], caps))),
    "free_run": narrative.mean(
      list(scorer.clip_t([c for r in free for c in r.clips], [c for r in free for c in r.captions]))
    ),
    "true_clips": narrative.mean(list(scorer.clip_t([c["frames"] for c in true_clips], caps))),
  }

  language = None
  if director == "language":
    language, free = language_scores(plan, paths, models, scored, clips, video, scorer, say)
    timings["language"] = language["seconds"]

  shutil.rmtree(os.path.join(out_dir, "stories"), ignore_errors=True)
  sheets, shown_meta = [], []
  for r, s in zip(free, shown):  # The first plan.render of the scored stories.
    sid = s["video_id"]
    write_story(r, os.path.join(out_dir, "stories", sid), fps=demo_data.DEMO_FPS)
    shutil.copyfile(
      os.path.join(out_dir, "stories", sid, "story.mp4"), os.path.join(out_dir, f"{sid}.mp4")
    )
    media.write_gif(
      os.path.join(out_dir, f"{sid}.gif"), np.concatenate(list(r.clips)), demo_data.DEMO_FPS
    )
    notes = []
    for clip, after in zip(r.clips, s["after"]):
      m = object_matches(read_state(clip[-1]), after)
      notes.append(f"[state reader: {sum(m.values())}/{len(m)} objects as true]")
    sheets.append(
      {
        "title": f"{sid}: {s['task']} (validation; generated from the dish name"
        + (", language director: keyframes drawn, clips from them)" if language else ")"),
        "true_frames": [clip_of(clips, s, t)["keyframe"] for t in range(len(r.clips))],
        "generated_frames": [c[-1] for c in r.clips],
        "keyframes": r.keyframes,  # The language director's (None: interleaved).
        "actions": r.actions,
        "captions": r.captions,
        "true_actions": s["actions"],
        "notes": notes,
      }
    )
    shown_meta.append(
      {
        "id": sid,
        "task": s["task"],
        "actions": r.actions,
        "captions": r.captions,
        "true_actions": s["actions"],
        "video": f"{sid}.mp4",
        "gif": f"{sid}.gif",
        "clips": f"stories/{sid}",
      }
    )
  media.contact_sheet(sheets).save(os.path.join(out_dir, "contact_sheet.png"))
  timings["evaluate"] = round(time.perf_counter() - t0, 1)
  targets = {
    "director_step_top1": {
      "target": 0.8,
      **{k: director_metrics[k]["step_top1"] for k in ("free_run", "given_text", "teacher_forced")},
    },
    "state_agreement": {
      "target": 0.5,
      **{k: video[k]["state_agreement"] for k in ("given_text", "free_run")},
    },
  }
  for t in targets.values():
    t["met"] = {
      k: v is not None and v >= t["target"] for k, v in t.items() if k not in ("target", "met")
    }
  out = {
    "targets": targets,
    "director": director_metrics,
    "video": video,
    "clip_t": clip_t,
    "stories": shown_meta,
    "validation_stories_scored": len(scored),
    "free_run_actions": {s["video_id"]: r.actions for s, r in zip(scored, free)},
    "timings_s": timings,
  }
  if language is not None:
    out["language"] = language
  return out
