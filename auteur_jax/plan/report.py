"""The plan report and the sweep table, as text."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence

from auteur_jax.plan.dry_run import Plan


def gib(n: float | None) -> str:
  return "?" if n is None else f"{n / (1 << 30):.2f} GiB"


def sci(x: float | None) -> str:
  return "n/a" if x is None else f"{x:.3g}"


def mesh_text(mesh: dict[str, int]) -> str:
  return ",".join(f"{a}={n}" for a, n in mesh.items())


def report(p: Plan, name: str = "") -> str:
  """The report of one plan (bytes per device)."""
  used = "" if p.total_bytes is None else f" ({100 * p.total_bytes / p.hbm_bytes:.0f} %)"
  verdict = "fits" if p.fits else "DOES NOT FIT"
  lines = [
    f"{name} on {p.topology}: {p.devices} x {p.chip}, mesh {mesh_text(p.mesh)}"
    + (f" (across slices/hosts: {','.join(p.dcn_axes)})" if p.dcn_axes else "")
    + f", remat {p.remat}; compiled in {p.compile_s:.0f} s",
    f"  parameters          {p.params / 1e9:8.3f} B"
    + (f" (analytic {p.analytic_params / 1e9:.3f} B)" if p.analytic_params else ""),
    "  per device:",
    f"    parameters        {gib(p.param_bytes)}",
    f"    optimizer state   {gib(p.opt_bytes)}",
    f"    batch             {gib(p.batch_bytes)}",
    f"    activations+temp  {gib(p.temp_bytes)}"
    + (" (the compiler ran out of HBM; numbers from its message)" if p.error else ""),
    f"    total             {gib(p.total_bytes)} of {gib(p.hbm_bytes)} HBM{used}: {verdict}",
  ]
  if p.model_flops is not None:
    # Set together with model_flops (the analytic costs).
    assert p.step_s is not None and p.compute_s is not None and p.mfu is not None
    comm = ", ".join(f"{a} {t * 1e3:.1f} ms" for a, t in (p.comm_s or {}).items()) or "none"
    lines += [
      f"  model FLOPs / step  {sci(p.model_flops)} (analytic, forward + backward); "
      f"executed with remat {p.remat}: {sci(p.executed_flops)}",
      f"  compiler FLOPs      {sci(p.compiler_flops)} per device (XLA counts a scanned "
      "layer body once, so this undercounts)",
      f"  roofline step       {p.step_s * 1e3:.1f} ms = max(compute at peak "
      f"{p.compute_s * 1e3:.1f} ms, collectives {comm})",
      f"  MFU at peak         {100 * p.mfu:.1f} %",
    ]
  if p.error:
    lines.append(f"  compiler: {p.error}")
  return "\n".join(lines)


def sweep_table(results: Sequence[Plan | tuple]) -> str:
  """Ranked table: fitting plans by step time, then the rest."""
  head = (
    f"{'rank':>4}  {'mesh':<30} {'remat':<13} {'params+opt':>11} {'temp':>10} "
    f"{'total':>10} {'fits':>4} {'step ms':>8} {'MFU %':>6}"
  )
  rows = [head]
  rank = 0
  for r in results:
    if isinstance(r, Plan):
      rank += 1 if r.fits else 0
      step = "n/a" if r.step_s is None else f"{r.step_s * 1e3:.1f}"
      mfu = "n/a" if r.mfu is None else f"{100 * r.mfu:.1f}"
      rows.append(
        f"{rank if r.fits else '-':>4}  {mesh_text(r.mesh):<30} "
        f"{(r.remat + ' ' + r.attention).strip():<13} "
        f"{gib(r.param_bytes + r.opt_bytes):>11} {gib(r.temp_bytes):>10} "
        f"{gib(r.total_bytes):>10} {'yes' if r.fits else 'no':>4} {step:>8} {mfu:>6}"
      )
    else:
      mesh, remat, error = r
      rows.append(f"{'-':>4}  {mesh_text(mesh):<30} {str(remat):<13} failed: {error}")
  return "\n".join(rows)


def write_json(path: str, plans: Sequence[Plan]) -> None:
  """The plans as a JSON list at `path` (written to a temp file, then renamed)."""
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=folder, prefix=".plan-", suffix=".json")
  with os.fdopen(fd, "w") as f:
    json.dump([p.to_dict() for p in plans], f, indent=1)
  os.replace(tmp, path)
