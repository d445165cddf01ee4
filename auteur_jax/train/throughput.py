"""How much of the machine a run uses: TFLOP/s per device, MFU, and goodput.

TFLOP/s and MFU are of the steps themselves: the trainer divides the FLOPs by the wall
time per step less the shares spent waiting for data, evaluating and checkpointing (those
are goodput's). FLOPs per step are train/costs.py's model FLOPs of the config (the
count `auteur plan` reports: every matmul and attention einsum, x 3 for forward +
backward; rematerialised work is not counted, as MaxText's MFU does not). The peak per
device is the chip table's dense bf16 figure (parallel/chips.py) on TPU / GPU; on CPU it
is measured at start: a 2048^3 float32 matmul (the median of 3 after a warm-up, as
benchmarks/ time it) divided among the process's CPU devices, which share the cores. A
task without a FLOP formula logs no TFLOP/s or MFU.

Goodput: the trainer adds the wall time of each part of the loop to a `Goodput` (waiting
for data, the step, checkpointing, evaluation's scalars, its pictures) and logs each
part's share of the time since the last log step (`time_frac_<part>`; they sum to at
most 1).
"""

from __future__ import annotations

import statistics
import time

import jax
import jax.numpy as jnp
import ml_collections

from auteur_jax.config import ConfigError
from auteur_jax.parallel import chips
from auteur_jax.train.costs import model_costs


def measured_cpu_peak(n: int = 2048, repeats: int = 3) -> float:
  """FLOP/s of an n^3 float32 matmul on the first CPU device (median of `repeats`)."""
  cpu = jax.devices("cpu")[0]
  a = jax.device_put(jnp.ones((n, n), jnp.float32), cpu)
  mm = jax.jit(lambda x: x @ x)
  mm(a).block_until_ready()
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    mm(a).block_until_ready()
    times.append(time.perf_counter() - t0)
  return 2.0 * n**3 / statistics.median(times)


def device_peak(device: jax.Device) -> tuple[float, str]:
  """(peak FLOP/s of one device, where the number comes from)."""
  if device.platform == "cpu":
    n = max(1, sum(d.platform == "cpu" for d in jax.local_devices()))
    return measured_cpu_peak() / n, f"measured float32 matmul / {n} CPU devices"
  try:
    chip = chips.for_device_kind(device.device_kind)
  except ValueError:
    return 0.0, f"device kind {device.device_kind!r} not in parallel/chips.py"
  return chip.peak_flops, f"{chip.name} dense bf16 (parallel/chips.py)"


class Throughput:
  """Per-step FLOPs of a config and the mesh's peak -> TFLOP/s per device and MFU."""

  def __init__(self, config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh):
    try:
      costs = model_costs(config) if config.get("data") else None
    except ConfigError:  # A config the FLOP formula cannot size (e.g. no embedding shape).
      costs = None
    self.step_flops = costs.model_flops if costs is not None else None
    self.devices = mesh.devices.size
    self.peak, self.peak_source = (
      device_peak(mesh.devices.flat[0]) if self.step_flops else (0.0, "no FLOP count")
    )

  def scalars(self, step_time: float) -> dict[str, float]:
    """{tflops_per_device, mfu} for one step of `step_time` seconds ({} without a count)."""
    if not self.step_flops or step_time <= 0:
      return {}
    per_device = self.step_flops / step_time / self.devices
    out = {"tflops_per_device": per_device / 1e12}
    if self.peak > 0:  # The peak too: on CPU it is measured, and varies by run (~10 %).
      out.update(mfu=per_device / self.peak, peak_tflops_per_device=self.peak / 1e12)
    return out


class Goodput:
  """Wall time per part of the training loop since the last `fractions()` call."""

  PARTS = ("data", "step", "checkpoint", "eval", "previews")  # eval: scalars only.

  def __init__(self) -> None:
    self._spent = dict.fromkeys(self.PARTS, 0.0)
    self._since = time.perf_counter()

  def add(self, part: str, seconds: float) -> None:
    self._spent[part] += seconds

  def timed(self, part: str):
    """A context manager adding its body's wall time to `part`."""
    goodput = self

    class _Timer:
      def __enter__(self):
        self.t0 = time.perf_counter()

      def __exit__(self, *exc):
        goodput.add(part, time.perf_counter() - self.t0)

    return _Timer()

  def fractions(self) -> dict[str, float]:
    """{time_frac_<part>: share of the wall time since the last call}; then resets."""
    now = time.perf_counter()
    total = max(now - self._since, 1e-9)
    out = {f"time_frac_{k}": v / total for k, v in self._spent.items()}
    self._spent = dict.fromkeys(self.PARTS, 0.0)
    self._since = now
    return out
