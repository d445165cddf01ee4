"""Interleaved timing of several functions, for side-by-side benchmarks on a noisy host.

`interleaved(fns, repeats)` warms each function up, then runs `repeats` rounds that call
every function once, each call after a short pause, and returns the seconds of each call.
Interleaving gives all functions the same machine load; the pause lets the thread pools
of the previous call go idle: torch's OpenMP threads spin on after a step, and a JAX step
timed right after a torch step ran ~30 % slower beside them (AMD EPYC, 2 cores).
"""

from __future__ import annotations

import time
from collections.abc import Callable

PAUSE_S = 0.5


def interleaved(
  fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1, pause_s: float = PAUSE_S
) -> dict[str, list[float]]:
  """Seconds of each call of each function (fns: name -> no-argument function that
  returns when its work is done)."""
  for fn in fns.values():
    for _ in range(warmup):
      fn()
  times: dict[str, list[float]] = {k: [] for k in fns}
  for _ in range(repeats):
    for k, fn in fns.items():
      time.sleep(pause_s)
      start = time.perf_counter()
      fn()
      times[k].append(time.perf_counter() - start)
  return times
