"""Training metrics: JSONL (one object per logged step) and TensorBoard event files.

A workdir on cloud storage (gs://...): both are written in a local staging folder and
copied to WORKDIR after each row (metrics.jsonl) / every minute and at close
(tensorboard/), since an object store has no appends and tensorboardX writes gs:// only
with google-cloud-storage installed.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from typing import TextIO

import jax

from auteur_jax import paths

_TB_UPLOAD_SECONDS = 60.0


class MetricsWriter:
  """Writes scalars to WORKDIR/metrics.jsonl and WORKDIR/tensorboard/ (process 0 only)."""

  def __init__(self, workdir: str, tensorboard: bool = True, resume_step: int = 0):
    """resume_step: the step a run resumes from; rows after it (logged by the run that
    was interrupted, whose later steps are redone) are dropped."""
    self.enabled = jax.process_index() == 0
    self._jsonl: TextIO | None = None
    self._tb = None
    self._remote: str | None = None  # A URI workdir, mirrored from the local `_local`.
    self._uploaded = 0.0
    if not self.enabled:
      return
    local = workdir
    if paths.is_uri(workdir):
      self._remote, local = workdir, tempfile.mkdtemp(prefix="auteur-metrics-")
      remote_jsonl = paths.join(workdir, "metrics.jsonl")
      if paths.exists(remote_jsonl):  # Resumed: go on from the run's rows.
        with (
          paths.open_file(remote_jsonl, "rb") as src,
          open(os.path.join(local, "metrics.jsonl"), "wb") as dst,
        ):
          shutil.copyfileobj(src, dst)
    self._local = local
    os.makedirs(local, exist_ok=True)
    path = os.path.join(local, "metrics.jsonl")
    _truncate_after(path, resume_step)
    self._jsonl = open(path, "a", encoding="utf-8")
    if tensorboard:
      from tensorboardX import SummaryWriter  # Imported late: slow, and only process 0.

      self._tb = SummaryWriter(os.path.join(local, "tensorboard"))
    self._sync(force=True)

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    if self._jsonl is None:  # Not process 0.
      return
    row = {"step": int(step), **{k: float(v) for k, v in scalars.items()}}
    self._jsonl.write(json.dumps(row) + "\n")
    self._jsonl.flush()
    if self._tb is not None:
      for k, v in row.items():
        if k != "step":
          self._tb.add_scalar(k, v, step)
    self._sync()

  def _sync(self, force: bool = False) -> None:
    """A URI workdir: metrics.jsonl uploaded; tensorboard/ too once a minute or `force`."""
    if self._remote is None:
      return
    with open(os.path.join(self._local, "metrics.jsonl"), "rb") as f:
      paths.write_atomic(paths.join(self._remote, "metrics.jsonl"), f.read())
    tb = os.path.join(self._local, "tensorboard")
    if self._tb is not None and (force or time.time() - self._uploaded > _TB_UPLOAD_SECONDS):
      self._tb.flush()
      paths.upload_tree(tb, paths.join(self._remote, "tensorboard"))
      self._uploaded = time.time()

  def image(self, tag: str, img, step: int) -> None:
    """uint8 [H, W, 3] -> a TensorBoard image (process 0)."""
    if self._tb is not None:
      self._tb.add_image(tag, img, step, dataformats="HWC")

  def gif(self, tag: str, data: bytes, height: int, width: int, step: int) -> None:
    """Encoded GIF bytes -> a TensorBoard image summary (the images tab animates it)."""
    if self._tb is None:
      return
    from tensorboardX.proto.summary_pb2 import Summary

    image = Summary.Image(height=height, width=width, colorspace=3, encoded_image_string=data)
    self._tb._get_file_writer().add_summary(
      Summary(value=[Summary.Value(tag=tag, image=image)]), step
    )

  def text(self, tag: str, text: str, step: int) -> None:
    if self._tb is not None:
      self._tb.add_text(tag, text, step)

  def close(self) -> None:
    if self._tb is not None:
      self._tb.flush()
    self._sync(force=True)
    if self._jsonl is not None:
      self._jsonl.close()
    if self._tb is not None:
      self._tb.close()
    if self._remote is not None:
      shutil.rmtree(self._local, ignore_errors=True)


def read_metrics(workdir: str) -> list[dict]:
  """The rows of WORKDIR/metrics.jsonl."""
  with paths.open_file(paths.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f if line.strip()]


def lower_is_better(name: str) -> bool:
  """Whether a logged metric improves downwards (losses, distances, errors)."""
  leaf = name.rsplit("/", 1)[-1]
  return any(w in leaf for w in ("loss", "mse", "ce", "fvd", "fid", "err", "nll"))


def summarize(workdir: str, tail: int = 10) -> dict:
  """A run's metrics.jsonl in short: {"steps": last step, "last": the last row,
  "best_eval": {eval/... name: (value, step)} (the best of each, by lower_is_better),
  "mfu", "tflops_per_device": means over the last `tail` rows that have them,
  "goodput": {part: mean share of the wall time over every logged row}}."""
  rows = read_metrics(workdir)
  if not rows:
    raise ValueError(f"{os.path.join(workdir, 'metrics.jsonl')}: no rows logged yet")
  best: dict[str, tuple[float, int]] = {}
  for r in rows:
    for k, v in r.items():
      if k.startswith("eval/"):
        low = lower_is_better(k)
        if k not in best or (v < best[k][0] if low else v > best[k][0]):
          best[k] = (v, r["step"])

  def mean(key: str, of: list[dict]) -> float | None:
    vals = [r[key] for r in of if key in r]
    return sum(vals) / len(vals) if vals else None

  parts = sorted({k for r in rows for k in r if k.startswith("time_frac_")})
  return {
    "steps": rows[-1]["step"],
    "last": next((r for r in reversed(rows) if "loss" in r), rows[-1]),
    "best_eval": best,
    "mfu": mean("mfu", rows[-tail:]),
    "tflops_per_device": mean("tflops_per_device", rows[-tail:]),
    "goodput": {p.removeprefix("time_frac_"): mean(p, rows) for p in parts},
  }


def _truncate_after(path: str, step: int) -> None:
  """Rewrites the JSONL `path` without rows whose step is after `step` (and without a
  torn last line); atomic, and a no-op when nothing is dropped."""
  if not os.path.exists(path):
    return
  with open(path, encoding="utf-8") as f:
    lines = f.readlines()
  keep = []
  for line in lines:
    try:
      row = json.loads(line)
    except ValueError:  # A torn line (the run was killed while writing it).
      continue
    if row.get("step", 0) <= step:
      keep.append(line if line.endswith("\n") else line + "\n")
  if keep == lines:
    return
  tmp = f"{path}.tmp-{os.getpid()}"
  with open(tmp, "w", encoding="utf-8") as f:
    f.writelines(keep)
  os.replace(tmp, path)
