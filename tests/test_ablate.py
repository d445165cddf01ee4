"""`auteur ablate --quick` end to end: files, a rerun that skips finished work, bad input."""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e


def _auteur(*args: str, cwd: str) -> subprocess.CompletedProcess:
  return subprocess.run(
    [sys.executable, "-m", "auteur_jax.cli", *args],
    cwd=cwd,
    capture_output=True,
    text=True,
    timeout=600,
  )


def test_quick_ablation_writes_its_files_and_resumes(tmp_path):
  out = str(tmp_path / "ab")
  r = _auteur("ablate", "--quick", "--out", out, cwd=str(tmp_path))
  assert r.returncode == 0, r.stderr[-3000:]
  assert "table quick: 1 seeds" in r.stdout
  for name in ("quick.json", "quick.png", "REPORT.md"):
    assert os.path.exists(os.path.join(out, name)), name
  with open(os.path.join(out, "quick.json")) as f:
    s = json.load(f)
  assert set(s["variants"]) == {"none", "+mask+noise+shuffle"}
  for v in s["variants"].values():
    for m in ("state_agreement", "changed_objects", "clip_t", "fvd"):
      assert v["metrics"][m] is not None and v["metrics"][m]["n"] == 1
  # One seed resolves nothing.
  assert {r["verdict"] for c in s["claims"] for r in c["metrics"].values()} == {"not resolved"}
  report = open(os.path.join(out, "REPORT.md")).read()
  assert "| none |" in report and "not resolved" in report
  measures = sorted(
    os.path.join(d, f) for d, _, fs in os.walk(os.path.join(out, "measures")) for f in fs
  )
  assert len(measures) == 2
  stamps = [os.path.getmtime(p) for p in measures]

  # A rerun trains and renders nothing: the measurements stay as they are.
  r = _auteur("ablate", "--quick", "--out", out, cwd=str(tmp_path))
  assert r.returncode == 0, r.stderr[-3000:]
  assert "training" not in r.stdout
  assert [os.path.getmtime(p) for p in measures] == stamps


def test_bad_table_is_one_line(tmp_path):
  r = _auteur("ablate", "--table", "9", "--out", str(tmp_path / "x"), cwd=str(tmp_path))
  assert r.returncode != 0
  assert r.stderr.strip().splitlines()[-1].startswith("auteur: AblateError: --table '9'")
  assert not os.path.exists(tmp_path / "x")
