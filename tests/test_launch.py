"""launch/ scripts: their dry-run mode prints the command each host would run."""

import os
import subprocess

LAUNCH = os.path.join(os.path.dirname(__file__), "..", "launch")


def _dry(script: str, env: dict, *args: str) -> str:
  out = subprocess.run(
    ["bash", os.path.join(LAUNCH, script), *args],
    check=True,
    text=True,
    capture_output=True,
    env={**os.environ, "DRY_RUN": "1", **env},
  )
  return out.stdout


def test_local_dry_run():
  out = _dry(
    "local.sh", {"NUM_PROCESSES": "3", "DEVICES": "2"}, "--config", "c.py", "--workdir", "w"
  )
  lines = out.strip().splitlines()
  assert len(lines) == 3
  for i, line in enumerate(lines):
    assert f"AUTEUR_PROCESS_ID={i}" in line and "AUTEUR_NUM_PROCESSES=3" in line
    assert "device_count=2" in line and "--config.distributed.mode=explicit" in line
    assert line.split().count("timeout") == 1


def test_tpu_and_slurm_dry_run():
  out = _dry("tpu_pod.sh", {"TPU_NAME": "pod", "ZONE": "z"}, "--config", "c.py", "--workdir", "w")
  assert "tpu-vm ssh pod --zone z --worker=all" in out and "mode=auto" in out
  out = _dry("slurm.sbatch", {"PROCS_PER_NODE": "4"}, "--config", "c.py", "--workdir", "w")
  assert out.startswith("srun --ntasks-per-node=4") and "auteur train --config c.py" in out


def test_dataflow_and_flink_build_dry_runs():
  out = _dry(
    "dataflow_build.sh",
    {"PROJECT": "p", "REGION": "r", "TEMP": "gs://b/t", "STORIES": "s.jsonl", "OUT": "o"},
  )
  wheel, run = out.strip().splitlines()
  assert wheel.startswith("python -m pip wheel --no-deps")
  assert run.startswith("auteur data build --stories s.jsonl --config.data.dir=o --runner dataflow")
  for opt in ("project=p", "region=r", "temp_location=gs://b/t", "max_num_workers=32"):
    assert f"--pipeline-option {opt}" in run
  assert "extra_packages=dist/" in run and run.rstrip().endswith("--config toy/data")
  out = _dry(
    "flink_build.sh", {"FLINK_MASTER": "f:8081", "STORIES": "s", "OUT": "o"}, "--config", "c"
  )
  assert "--runner flink" in out and "flink_master=f:8081" in out and "toy/data" not in out
