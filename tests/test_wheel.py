"""The package as a user gets it: `pip install` (not editable) into a fresh venv, then
`auteur demo --quick` in an empty folder.

Covers what an editable install hides: the configs (`--config toy/dit`) and the toy
checkpoints must ship inside the wheel as package data, and the demo must run without
the test extra (no torch) and without transformers' "PyTorch was not found" line.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _source_files(repo: str) -> list[str]:
  """Paths (relative to `repo`) of the working tree: tracked and untracked, not ignored."""
  out = subprocess.run(
    ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
    cwd=repo,
    capture_output=True,
    check=True,
  ).stdout
  rels = [p for p in out.decode().split("\0") if p]
  return [p for p in rels if os.path.isfile(os.path.join(repo, p))]  # Not deleted ones.


def _copy_tree(repo: str, dst: str) -> None:
  """Copies the working tree without build outputs, venvs and caches.

  pip builds a local folder in place (build/, *.egg-info); building a copy keeps the
  repository untouched and the test independent of what an earlier build left there.
  """
  if shutil.which("git") and os.path.isdir(os.path.join(repo, ".git")):
    for rel in _source_files(repo):
      os.makedirs(os.path.dirname(os.path.join(dst, rel)) or dst, exist_ok=True)
      shutil.copy2(os.path.join(repo, rel), os.path.join(dst, rel))
  else:
    shutil.copytree(
      repo,
      dst,
      ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "*.egg-info", "__pycache__", ".*_cache"
      ),
    )


def _user_env() -> dict[str, str]:
  """The environment of a user's shell: no repository on the path, one CPU device."""
  env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
  env["JAX_PLATFORMS"] = "cpu"
  flags = env.get("XLA_FLAGS", "").replace("--xla_force_host_platform_device_count=8", "")
  env.pop("XLA_FLAGS", None)
  if flags.strip():  # XLA reads a value that does not start with "--" as a file name.
    env["XLA_FLAGS"] = flags.strip()
  return env


def test_installed_wheel_runs_the_quick_demo(tmp_path):
  src, venv, run = tmp_path / "src", tmp_path / "venv", tmp_path / "run"
  _copy_tree(REPO, str(src))
  env = _user_env()
  subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=env)
  py = str(venv / "bin" / "python")
  r = subprocess.run(
    [py, "-m", "pip", "install", "-q", str(src)],
    env=env,
    capture_output=True,
    text=True,
    timeout=1200,
  )
  assert r.returncode == 0, r.stderr[-3000:]
  run.mkdir()
  # The installed package, not the repository's (cwd is an empty folder).
  where = subprocess.run(
    [py, "-c", "import auteur_jax; print(auteur_jax.__file__)"],
    cwd=run,
    env=env,
    capture_output=True,
    text=True,
    check=True,
  )
  assert where.stdout.strip().startswith(str(venv)), where.stdout
  has_torch = subprocess.run([py, "-c", "import torch"], env=env, capture_output=True)
  assert has_torch.returncode != 0, "torch came with the base install"

  r = subprocess.run(
    [str(venv / "bin" / "auteur"), "demo", "--quick", "--out", "q"],
    cwd=run,
    env=env,
    capture_output=True,
    text=True,
    timeout=1800,
  )
  assert r.returncode == 0, r.stderr[-3000:]
  out = run / "q"
  metrics = json.loads((out / "metrics.json").read_text())
  # The shipped checkpoints come from the installed package's data.
  shipped = [m["workdir"] for m in metrics["models"].values() if m["source"] == "shipped"]
  assert shipped and all(p.startswith(str(venv)) for p in shipped), metrics["models"]
  assert glob.glob(str(out / "*.mp4")), sorted(os.listdir(out))
  assert glob.glob(str(out / "*.png")), sorted(os.listdir(out))
  assert "PyTorch was not found" not in r.stderr, r.stderr[-3000:]
  assert "Traceback" not in r.stderr, r.stderr[-3000:]
