"""Means, 95 % confidence intervals over seeds, and a claim's verdict from paired seeds.

The interval of n values is mean +- t(0.975, n - 1) x sd / sqrt(n) (Student's t, sd with
n - 1 degrees of freedom). A claim "A beats B on metric m" is read from the paired
differences d_s = m(A, seed s) - m(B, seed s) (flipped for metrics where lower is better):
holds when the whole interval of d is above 0, does not hold when it is all below 0,
not resolved otherwise (also with fewer than 2 seeds).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

# Student's t quantile t(0.975, df) for df = 1..30; beyond 30 the normal 1.96 is within 2 %.
_T975 = (
  12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
  2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
  2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip

HOLDS, FAILS, OPEN = "holds", "does not hold", "not resolved"


class Interval(NamedTuple):
  mean: float
  half: float  # Half-width of the 95 % interval; nan with one value.
  n: int

  @property
  def low(self) -> float:
    return self.mean - self.half

  @property
  def high(self) -> float:
    return self.mean + self.half

  def __str__(self) -> str:
    if math.isnan(self.half):
      return f"{self.mean:.4g}"
    return f"{self.mean:.4g} +- {self.half:.2g}"


def t975(df: int) -> float:
  """t(0.975, df) for df >= 1."""
  if df < 1:
    raise ValueError(f"degrees of freedom must be >= 1, got {df}")
  return _T975[df - 1] if df <= len(_T975) else 1.96


def interval(values: Sequence[float]) -> Interval:
  """Mean and 95 % half-width of `values` (at least one)."""
  n = len(values)
  if n == 0:
    raise ValueError("interval of no values")
  mean = sum(values) / n
  if n == 1:
    return Interval(mean, math.nan, 1)
  sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
  return Interval(mean, t975(n - 1) * sd / math.sqrt(n), n)


def verdict(better: Sequence[float], worse: Sequence[float], higher_is_better: bool) -> tuple:
  """(verdict, Interval of the paired difference better - worse, sign-adjusted so that a
  positive difference agrees with the claim) for per-seed values in the same seed order."""
  if len(better) != len(worse):
    raise ValueError(f"paired values need equal counts, got {len(better)} and {len(worse)}")
  sign = 1.0 if higher_is_better else -1.0
  d = interval([sign * (a - b) for a, b in zip(better, worse)])
  if d.n < 2 or math.isnan(d.half):
    return OPEN, d
  if d.low > 0:
    return HOLDS, d
  if d.high < 0:
    return FAILS, d
  return OPEN, d
