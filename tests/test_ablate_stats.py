"""ablate/stats.py and ablate/report.py: intervals, verdicts, the report's tables."""

import math

import pytest

from auteur_jax.ablate import report, stats
from auteur_jax.ablate.tables import ORDER, RUNS, TABLES, Claim, Table, Variant


def test_interval_matches_students_t():
  i = stats.interval([1.0, 2.0, 3.0])
  # sd 1, n 3: t(0.975, 2) = 4.303 -> half 4.303 / sqrt(3).
  assert i.mean == pytest.approx(2.0)
  assert i.half == pytest.approx(4.303 / math.sqrt(3))
  assert math.isnan(stats.interval([5.0]).half)
  with pytest.raises(ValueError):
    stats.interval([])


def test_verdicts_follow_the_paired_interval():
  # Consistently better by ~1 on every seed: holds; worse: does not hold.
  assert stats.verdict([2.0, 3.0, 4.1], [1.0, 2.0, 3.0], True)[0] == stats.HOLDS
  assert stats.verdict([1.0, 2.0, 3.0], [2.0, 3.0, 4.1], True)[0] == stats.FAILS
  # Lower is better: the sign flips.
  assert stats.verdict([1.0, 2.0, 3.0], [2.0, 3.0, 4.1], False)[0] == stats.HOLDS
  # Mixed signs, or one seed: not resolved.
  assert stats.verdict([1.0, 3.0, 2.0], [2.0, 2.0, 2.0], True)[0] == stats.OPEN
  assert stats.verdict([9.0], [1.0], True)[0] == stats.OPEN
  # Paired, not pooled: a large seed-to-seed spread with a steady gap still holds.
  assert stats.verdict([10.1, 20.1, 30.1], [10.0, 20.0, 30.0], True)[0] == stats.HOLDS
  with pytest.raises(ValueError):
    stats.verdict([1.0], [1.0, 2.0], True)


def test_tables_name_known_runs_variants_and_metrics():
  for tid in ORDER:
    t = TABLES[tid]
    names = {v.name for v in t.variants}
    for v in t.variants:
      assert all(r in RUNS for r in v.runs), (tid, v)
    for c in t.claims:
      assert c.better in names and c.worse in names, (tid, c)
      assert set(c.metrics) <= set(t.metrics), (tid, c)


def test_summary_and_markdown():
  table = Table(
    "x",
    "toy",
    (Variant("a", ("dit_all",), "video"), Variant("b", ("dit_none",), "video")),
    (Claim("a beats b", "a", "b", ("clip_t", "fvd"), "paper"),),
    ("clip_t", "fvd"),
  )
  per_seed = {
    "a": {s: {"clip_t": 0.5 + 0.01 * s, "fvd": 1.0} for s in range(3)},
    "b": {s: {"clip_t": 0.4 + 0.01 * s, "fvd": 2.0 + 0.1 * s} for s in range(4)},  # Seed 3 alone.
  }
  s = report.summarize(table, per_seed, {"steps": {"dit": 1}})
  assert s["seeds"] == [0, 1, 2]  # Only seeds every variant has.
  rows = s["claims"][0]["metrics"]
  assert rows["clip_t"]["verdict"] == stats.HOLDS
  assert rows["fvd"]["verdict"] == stats.HOLDS  # Lower FVD for a on every seed.
  assert s["variants"]["b"]["metrics"]["fvd"]["mean"] == pytest.approx(2.1)
  md = report.markdown(s, 60.0)
  assert "| a beats b (paper) | clip_t |" in md and "holds" in md
