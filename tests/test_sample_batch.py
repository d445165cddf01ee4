"""`auteur sample` batch jobs: prompt errors, SIGKILL + restart == one uninterrupted run,
two jax.distributed processes split the items, batch size does not change an item.

The jobs run as subprocesses of the CLI (4 CPU devices each) on toy/sample
with tiny random models (allow_random_init); a shared persistent compilation cache
keeps the later runs from compiling again.
"""

import json
import os
import subprocess
import sys
import time

import numpy as np
import portpicker
import pytest

from auteur_jax.config import CONFIG_DIR, ConfigError, load_module_config
from auteur_jax.data import video_io
from auteur_jax.data.tokenizer import train_bpe
from auteur_jax.sample import batch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(CONFIG_DIR, "toy", "sample.py")
TINY = [
  "--config.allow_random_init=True",
  "--config.director.init.checkpoint=",
  "--config.dit.init.checkpoint=",
  "--config.vae.init.checkpoint=",
  "--config.director.model.llm.num_layers=1",
  "--config.director.model.llm.width=32",
  "--config.director.model.llm.mlp_dim=64",
  "--config.director.model.llm.head_dim=8",
  "--config.director.sample.max_action_tokens=3",
  "--config.director.sample.max_caption_tokens=4",
  "--config.director.sample.num_steps=2",
  "--config.dit.model.num_layers=1",
  "--config.dit.model.head_dim=8",
  "--config.dit.model.ffn_dim=32",
  "--config.dit.sample.num_steps=2",
  "--config.dit.data.max_text_len=8",
  "--config.vae.model.base_dim=4",
  "--config.sample.num_frames=5",
  "--config.sample.size=32",
  "--config.sample.max_steps=4",
  "--config.sample.crf=0",
]  # Lossless mp4s: see _same_outputs.
GOOD = [
  dict(id=f"s{i}", task=t, num_steps=1 + i % 3)
  for i, t in enumerate(
    ["make a salad", "boil water", "make tea", "slice bread", "stir the soup", "add salt"]
  )
]
GOOD.insert(
  3,
  dict(
    id="given",
    task="make a salad",
    actions=["chop", "mix"],
    captions=["chop the tomato", "mix the salad"],
  ),
)
GOOD.append(dict(id="seeded.v2", task="boil water", num_steps=2, seed=5))
BAD = [
  '{"id": "../up", "task": "escape"}',
  '{"id": "/tmp/abs", "task": "escape"}',
  '{"id": "a/b", "task": "x"}',
  '{"id": ".hidden", "task": "x"}',
  "not json {",
  '{"id": "notask"}',
  '{"id": "s0", "task": "again"}',
  "[1, 2]",
  '{"id": "m", "task": "x", "actions": ["a"], "captions": ["b", "c"]}',
  '{"id": "long", "task": "x", "num_steps": 9}',
  '{"id": "k", "task": "x", "colour": 1}',
  '{"id": "onlycap", "task": "x", "captions": ["a"]}',
]


def _prompt_lines() -> list[str]:
  lines = [json.dumps(g) for g in GOOD]
  for i, b in enumerate(BAD):  # Bad lines between the good ones, and one blank line.
    lines.insert(2 * i + 1, b)
  lines.insert(4, "")
  return lines


@pytest.fixture(scope="module")
def job(tmp_path_factory):
  root = tmp_path_factory.mktemp("sample_job")
  train_bpe(
    ["chop the tomato", "make a salad", "boil water", "stir the soup"] * 3,
    300,
    out_dir=str(root / "tok"),
  )
  prompts = root / "prompts.jsonl"
  prompts.write_text("\n".join(_prompt_lines()) + "\n")
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env.update(
    XLA_FLAGS="--xla_force_host_platform_device_count=4",
    JAX_PLATFORMS="cpu",
    JAX_COMPILATION_CACHE_DIR=str(root / "jax_cache"),
    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
    JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1",
  )
  return dict(root=root, prompts=str(prompts), env=env, tok=str(root / "tok"))


def _start(job, out, *extra, env=None) -> subprocess.Popen:
  cmd = [
    sys.executable,
    "-m",
    "auteur_jax.cli",
    "sample",
    "--config",
    CONFIG,
    "--prompts",
    job["prompts"],
    "--out",
    str(out),
    f"--config.tokenizer={job['tok']}",
    *TINY,
    *extra,
  ]
  return subprocess.Popen(
    cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env or job["env"], cwd=REPO
  )


def _finish(p: subprocess.Popen, timeout: float = 400) -> dict:
  try:
    out, err = p.communicate(timeout=timeout)
  except subprocess.TimeoutExpired:
    p.kill()
    out, err = p.communicate()
  assert p.returncode == 0, f"auteur sample failed ({p.returncode}):\n{err[-3000:]}"
  assert "item/s" in err  # The progress bar.
  return json.loads(out.strip().splitlines()[-1])


def _files(out) -> dict[str, bytes]:
  """Every item file (relative path -> bytes); the two JSONL files are checked apart."""
  found = {}
  for base, _, names in os.walk(out):
    for n in names:
      rel = os.path.relpath(os.path.join(base, n), out)
      if rel not in (batch.MANIFEST, batch.ERRORS):
        found[rel] = open(os.path.join(base, n), "rb").read()
  return found


def _same_outputs(got, want) -> None:
  """Same files, byte-identical but for mp4s, which decode to identical frames.

  x264's bytes are not always reproducible (about 1 in 500 encodes of the same frames
  differ in a process that runs XLA too); story.json pins the frames by hash, and the
  lossless (crf 0) mp4s decode to exactly the same pixels whatever x264 decided.
  """
  a, b = _files(got), _files(want)
  assert sorted(a) == sorted(b)
  assert {k: v for k, v in a.items() if not k.endswith(".mp4")} == {
    k: v for k, v in b.items() if not k.endswith(".mp4")
  }
  for k in (k for k in a if k.endswith(".mp4") and a[k] != b[k]):
    x, y = (video_io.read_frames(os.path.join(o, k), 0.0, 10.0, 8.0) for o in (got, want))
    np.testing.assert_array_equal(x, y, err_msg=k)


def _manifest_ids(out) -> list[str]:
  return [json.loads(line)["id"] for line in open(os.path.join(out, batch.MANIFEST))]


@pytest.fixture(scope="module")
def straight(job):
  out = job["root"] / "straight"
  report = _finish(_start(job, out, "--config.sample.batch_size=4"))
  assert sorted(report["rendered"]) == sorted(g["id"] for g in GOOD)
  return out


def test_read_prompts_reports_bad_lines(job):
  items, errors = batch.read_prompts(job["prompts"], 4, ("actions", "captions"))
  assert [r.id for _, r in items] == [g["id"] for g in GOOD]
  lines = _prompt_lines()
  assert [e["line"] for e in errors] == [lines.index(b) + 1 for b in BAD]
  text = [e["error"] for e in errors]
  for i in range(4):
    assert "not a safe folder name" in text[i] and "refused" in text[i]
  assert "not JSON" in text[4] and "'task'" in text[5] and "already used on line 1" in text[6]
  assert "JSON object" in text[7] and "different lengths" in text[8]
  assert "at most 4" in text[9] and "unknown keys ['colour']" in text[10]
  assert "not ['actions']" in text[11]
  given = dict(items)[lines.index(json.dumps(GOOD[3])) + 1]
  assert given.actions == ("chop", "mix") and given.given_text
  for ok in ("v1", "a.b-c_d", "0"):
    assert batch.check_id(ok) == ok
  for bad in ("..", ".", "", "a\\b", "manifest.jsonl", "x" * 201, 3):
    with pytest.raises(ValueError):
      batch.check_id(bad)


@pytest.mark.parametrize(
  "key,value,match",
  [("batch_size", 0, "batch_size must be >= 1"), ("crf", 52, r"crf must be in 0\.\.51")],
)
def test_bad_sample_settings_are_refused(tmp_path, key, value, match):
  config = load_module_config(CONFIG)
  config.sample[key] = value
  with pytest.raises(ConfigError, match=f"config.sample.{match}"):
    batch.run_batch(config, "unused.jsonl", str(tmp_path / "out"))
  assert not (tmp_path / "out").exists()


@pytest.mark.integration
def test_uninterrupted_run_outputs(job, straight):
  names = sorted(os.listdir(straight))
  assert names == sorted([g["id"] for g in GOOD] + [batch.MANIFEST, batch.ERRORS])
  assert not os.path.exists(job["root"] / "up") and not os.path.exists("/tmp/abs")
  errors = [json.loads(line) for line in open(straight / batch.ERRORS)]
  assert len(errors) == len(BAD) and all(set(e) == {"line", "error"} for e in errors)
  assert sorted(_manifest_ids(straight)) == sorted(g["id"] for g in GOOD)
  for g in GOOD:
    meta = json.load(open(straight / g["id"] / "story.json"))
    steps = len(g.get("actions", ())) or g["num_steps"]
    assert meta["num_steps"] == steps and meta["task"] == g["task"]
    assert sorted(os.listdir(straight / g["id"])) == sorted(
      [f"clip_{t}.mp4" for t in range(steps)] + ["story.mp4", "story.json", "embeddings.npy"]
    )
  assert json.load(open(straight / "seeded.v2" / "story.json"))["seed"] == 5
  assert json.load(open(straight / "given" / "story.json"))["captions"] == GOOD[3]["captions"]


@pytest.mark.integration
def test_sigkill_then_restart_equals_uninterrupted_run(job, straight):
  """Batch size 1 here, 4 in `straight`: the same bytes for every item either way."""
  out = job["root"] / "killed"
  manifest = out / batch.MANIFEST
  p = _start(job, out, "--config.sample.batch_size=1")
  deadline = time.time() + 400
  while not (manifest.exists() and manifest.read_text().count("\n") >= 2):
    assert p.poll() is None, p.communicate()[1][-3000:]
    assert time.time() < deadline
    time.sleep(0.005)
  p.kill()  # SIGKILL: no clean-up of any kind.
  p.wait()
  done = _manifest_ids(out)
  assert 2 <= len(done) < len(GOOD), "the kill came too late to interrupt the job"
  # What else a kill can leave: a half-written item, and a finished folder whose manifest
  # line was never appended.
  pending = [g["id"] for g in GOOD if not (out / g["id"]).exists()]
  junk = out / (batch.PARTIAL + pending[-1])
  junk.mkdir(exist_ok=True)
  (junk / "clip_0.mp4").write_bytes(b"half a video")
  manifest.write_text("".join(json.dumps({"id": i}) + "\n" for i in done[1:]))
  report = _finish(_start(job, out, "--config.sample.batch_size=1"))
  assert sorted(report["rendered"]) == sorted(pending)
  _same_outputs(out, straight)  # No partial, temporary or duplicate file either.
  ids = _manifest_ids(out)
  assert len(ids) == len(set(ids)) and sorted(ids) == sorted(g["id"] for g in GOOD)
  assert (out / batch.ERRORS).read_text() == (straight / batch.ERRORS).read_text()


@pytest.mark.integration
def test_two_processes_split_the_items(job, straight):
  out = job["root"] / "two"
  port = portpicker.pick_unused_port()
  procs = []
  for i in range(2):
    env = dict(
      job["env"],
      AUTEUR_COORDINATOR=f"127.0.0.1:{port}",
      AUTEUR_NUM_PROCESSES="2",
      AUTEUR_PROCESS_ID=str(i),
    )
    procs.append(
      _start(
        job,
        out,
        "--config.sample.batch_size=2",
        "--config.distributed.mode=explicit",
        "--config.distributed.initialization_timeout=60",
        "--config.distributed.heartbeat_timeout=20",
        env=env,
      )
    )
  reports = sorted((_finish(p) for p in procs), key=lambda r: r["process"])
  mine = [set(r["rendered"]) for r in reports]
  assert [r["process"] for r in reports] == [0, 1] and all(mine)
  assert not mine[0] & mine[1] and mine[0] | mine[1] == {g["id"] for g in GOOD}
  _same_outputs(out, straight)
  assert sorted(_manifest_ids(out)) == sorted(g["id"] for g in GOOD)


class _Renderer:
  """Stands in for StorySampler.render (the manifest logic is under test, not the models):
  small frames from the request, and the ids it was asked for."""

  def __init__(self):
    self.asked: list[str] = []

  def render(self, requests):
    from auteur_jax.sample.story import StoryResult

    self.asked += [r.id for r in requests]
    out = []
    for r in requests:
      n = r.num_steps or 2
      clips = np.full((n, 5, 16, 16, 3), len(r.task) % 255, np.uint8)
      out.append(StoryResult(r, 1, ["a"] * n, ["c"] * n, np.zeros((n, 2, 4), np.float32), clips))
    return out


def test_manifest_repairs_a_torn_line_and_reports_changed_items(tmp_path):
  config = load_module_config(CONFIG)
  config.sample.crf = 0
  prompts, out = tmp_path / "prompts.jsonl", tmp_path / "out"

  def run(lines, **kw):
    prompts.write_text("".join(json.dumps(x) + "\n" for x in lines))
    renderer = _Renderer()
    r = batch.run_batch(config, str(prompts), str(out), progress=False, sampler=renderer, **kw)
    return r, renderer.asked

  a, b, c = (dict(id=i, task=f"make {i}", num_steps=1) for i in "abc")
  assert run([a, b])[1] == ["a", "b"]
  with open(out / batch.MANIFEST, "a") as f:
    f.write('{"id": "zz", "li')  # Torn by a kill: no newline.
  assert run([a, b, c])[1] == ["c"]
  lines = open(out / batch.MANIFEST).read().splitlines()
  assert [json.loads(x)["id"] for x in lines] == ["a", "b", "c"]  # All whole lines.

  r, asked = run([dict(a, task="make another a"), b, c])
  assert asked == [] and r["changed"] == ["a"]
  errors = [json.loads(x) for x in open(out / batch.ERRORS)]
  assert errors == [
    {
      "line": 1,
      "id": "a",
      "error": "finished with another prompt or other "
      "sampling settings than now; kept (--redo-changed redoes it)",
    }
  ]
  r, asked = run([dict(a, task="make another a"), b, c], redo_changed=True)
  assert asked == ["a"] and r["changed"] == ["a"]
  assert run([dict(a, task="make another a"), b, c]) == (
    dict(r, changed=[], rendered=[], skipped=3),
    [],
  )
  config.dit.sample.text_scale = 1.0  # The CFG scale shapes every clip.
  assert run([dict(a, task="make another a"), b, c])[0]["changed"] == ["a", "b", "c"]
  (tmp_path / "file").write_text("x")
  with pytest.raises(FileExistsError, match="a file, not a folder"):
    batch.run_batch(config, str(prompts), str(tmp_path / "file"), sampler=_Renderer())
