"""`auteur demo --quick --from-scratch`: the whole chain runs and writes every output.

Runs the CLI in a subprocess on one CPU device (the demo's set-up, not the suite's 8
simulated devices), so the test also covers the sub-command's wiring. The numbers of a
2-step training are meaningless; the files, keys and their consistency are checked.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from auteur_jax.checkpoint import orbax_io
from auteur_jax.checkpoint.layout import step_dir_of
from auteur_jax.demo import data as demo_data
from auteur_jax.demo.pipeline import PLANS

pytestmark = pytest.mark.e2e


def test_end_keyframes_sit_on_the_last_sampled_frame(tmp_path):
  from auteur_jax.data import video_io
  from auteur_jax.data.schema import Clip, Story

  story = Story(
    "v",
    "toy_kitchen",
    "train",
    "soup",
    6.0,
    8.0,
    None,
    (Clip("0", 0.0, 2.0, "a", "c"), Clip("1", 2.0, 5.25, "a", "c")),
  )
  got = demo_data.end_keyframes(story, 2.0)
  for c, want in zip(got.clips, (1.75, 4.75)):  # Samples at start + (i + 0.5) / fps.
    assert c.keyframe == pytest.approx(want)
    assert c.keyframe == pytest.approx(video_io.sample_times(c.start, c.end, 2.0)[-1])


def test_director_data_extends_the_demo_set_with_its_tokenizer(tmp_path):
  from auteur_jax.data.schema import read_stories

  small = demo_data.prepare(str(tmp_path / "demo"), 5, progress=False)
  big = demo_data.prepare(
    str(tmp_path / "director"), 7, progress=False, tokenizer=small["tokenizer"]
  )
  assert big["tokenizer"] == small["tokenizer"]
  assert not os.path.exists(tmp_path / "director" / "tokenizer")
  # Equal stories (their video files live in each set's own folder).
  read = lambda p: {
    s.video_id: dataclasses.replace(s, video_path=None)  # noqa: E731
    for s in read_stories(p)
  }
  first, more = read(small["stories"]), read(big["stories"])
  assert len(more) > len(first) and all(more[k] == s for k, s in first.items())


def test_a_continued_task_starts_from_its_shipped_params(tmp_path):
  """Plan.continues: the DiT trains on from the shipped toy DiT, not from a fresh init."""
  from auteur_jax.demo import pipeline

  shipped = os.path.join(pipeline.SHIPPED, "dit")
  quick = PLANS["quick"]
  plan = dataclasses.replace(
    quick, steps={**quick.steps, "dit": 1}, shipped=("vae", "clip", "director"), continues=("dit",)
  )
  paths = pipeline.prepare(str(tmp_path / "work"), plan, progress=False)
  models = pipeline.train_chain(
    plan, paths, str(tmp_path / "runs"), from_scratch=False, progress=False
  )
  assert models["dit"]["source"] == "trained" and models["dit"]["init"] == shipped
  states = [os.path.join(step_dir_of(d), "state") for d in (shipped, models["dit"]["workdir"])]
  assert states[1].endswith(os.path.join("1", "state"))
  read = [orbax_io.leaf_opener(d) for d in states]
  params = [k for k in orbax_io.tree_metadata(states[0]) if k[0] == "model"]
  assert len(params) > 10
  for k in params:  # One step (lr 0 at the warm-up's start) from the bfloat16 params.
    a, b = (np.asarray(r(k).read().result(), np.float32) for r in read)
    np.testing.assert_allclose(b, a, atol=1e-3, err_msg="/".join(k))


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("demo") / "demo_out")
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  flags = env.get("XLA_FLAGS", "").replace("--xla_force_host_platform_device_count=8", "")
  env.pop("XLA_FLAGS", None)
  if flags.strip():  # XLA reads a value that does not start with "--" as a file name.
    env["XLA_FLAGS"] = flags.strip()
  r = subprocess.run(
    [sys.executable, "-m", "auteur_jax.cli", "demo", "--quick", "--from-scratch", "--out", out],
    env=env,
    capture_output=True,
    text=True,
    timeout=1200,
  )
  assert r.returncode == 0, r.stderr[-3000:]
  return out, r.stdout


def test_quick_demo_writes_everything(demo):
  out, stdout = demo
  m = json.load(open(os.path.join(out, "metrics.json")))
  assert f"{out}: metrics.json" in stdout and "director step top-1" in stdout
  plan = PLANS["quick"]
  assert len(m["stories"]) == plan.render
  assert m["models"]["director"]["data"] == os.path.join(out, "work", "director", "tfrecords_enc")
  for s in m["stories"]:
    for f in (s["video"], s["gif"]):
      assert os.path.getsize(os.path.join(out, f)) > 1000, f
    meta = json.load(open(os.path.join(out, s["clips"], "story.json")))
    assert meta["num_steps"] == len(s["actions"]) == len(s["true_actions"]) >= 4
    emb = np.load(os.path.join(out, s["clips"], "embeddings.npy"))
    assert emb.shape == (meta["num_steps"], 16, 64)
    gif = Image.open(os.path.join(out, s["gif"]))
    # Pillow merges identical consecutive frames (a clip's padded end may repeat).
    assert meta["num_steps"] <= gif.n_frames <= 9 * meta["num_steps"]
  sheet = Image.open(os.path.join(out, "contact_sheet.png"))
  assert sheet.width >= 2 * 128 and sheet.height >= 128 * sum(
    len(s["actions"]) for s in m["stories"]
  )
  # Every metric is there and is a number in its range (never a placeholder).
  d, v, c = m["director"], m["video"], m["clip_t"]
  for k in ("free_run", "given_text", "teacher_forced"):
    assert 0.0 <= d[k]["step_top1"] <= 1.0
  # True actions always parse, so an exact match is also a parsed one.
  assert 0.0 <= d["free_run"]["action_exact"] <= d["free_run"]["action_parsed"] <= 1.0
  assert 0.0 < d["free_run"]["chance_top1"] <= 0.25  # Stories have 4-8 steps.
  for k in ("given_text", "free_run"):
    assert 0.0 <= v[k]["state_agreement"] <= 1.0 and 0.0 <= v[k]["exact_state"] <= 1.0
  refs = v["references"]
  assert refs["true_clips"]["state_agreement"] == 1.0  # The reader on the real last frames.
  assert refs["unchanged"]["changed_objects"] == 0.0
  assert v["given_text"]["clips"] == refs["true_clips"]["clips"] == d["free_run"]["steps"]
  for k in ("given_text", "free_run", "true_clips"):
    assert -1.0 <= c[k] <= 1.0
  assert set(m["targets"]) == {"director_step_top1", "state_agreement"}
  assert set(m["models"]) == {"vae", "clip", "director", "dit"}
  assert all(x["source"] == "trained" for x in m["models"].values())
  # The VAE's image stage ran on the plan's stills, and its clip run started from it.
  stills = m["models"]["vae"]["stills"]
  assert stills["source"] == "trained" and stills["steps"] == plan.steps["vae_stills"]
  assert (
    json.load(open(os.path.join(stills["data"], "dataset.json")))["stills"]["num"] == plan.stills
  )
  assert os.path.isdir(os.path.join(stills["workdir"], "checkpoints", str(stills["steps"])))
  assert f"init: params from {stills['workdir']}\n" in stdout
  assert m["timings_s"]["total"] > 0


@pytest.fixture(scope="module")
def language_demo(tmp_path_factory):
  """`auteur demo --quick --director language` from the shipped checkpoints."""
  out = str(tmp_path_factory.mktemp("demo_language") / "demo_out")
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)  # One device, as a user's run.
  r = subprocess.run(
    [sys.executable, "-m", "auteur_jax.cli", "demo", "--quick", "--director", "language"]
    + ["--out", out],
    env=env,
    capture_output=True,
    text=True,
    timeout=1200,
  )
  assert r.returncode == 0, r.stderr[-3000:]
  return out, r.stdout


def test_quick_language_demo_writes_keyframes_and_metrics(language_demo):
  out, stdout = language_demo
  m = json.load(open(os.path.join(out, "metrics.json")))
  assert "language director: keyframe state agreement" in stdout
  assert m["plan"]["director"] == "language"
  assert {"keyframe", "dit_keyframe"} <= set(m["models"])
  lang = m["language"]
  steps = m["video"]["given_text"]["clips"]
  for k in ("rolling", "no_rolling"):
    kf = lang["keyframes"][k]
    assert kf["keyframes"] == steps and 0.0 <= kf["objects"] <= 1.0
    ident = lang["identity_consistency"][k]
    assert ident["consistent"] is None or 0.0 <= ident["consistent"] <= 1.0
  assert lang["keyframes"]["references"]["true_keyframes"]["objects"] == 1.0
  for mode in ("given_text", "free_run"):
    v = lang["video_keyframe_vs_embedding"][mode]
    assert v["embedding"] == m["video"][mode]["state_agreement"]
    assert 0.0 <= v["keyframe"] <= 1.0 and lang["video"][mode]["clips"] == steps
  for s in m["stories"]:
    meta = json.load(open(os.path.join(out, s["clips"], "story.json")))
    kfs = np.load(os.path.join(out, s["clips"], "keyframes.npy"))
    assert kfs.shape == (meta["num_steps"], 64, 64, 3) and kfs.dtype == np.uint8
  sheet = Image.open(os.path.join(out, "contact_sheet.png"))
  assert sheet.width >= 3 * 128  # True keyframe, rendered keyframe, generated clip.
