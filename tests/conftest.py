"""Test set-up: 8 simulated CPU devices and parsed absl flags, before anything imports jax."""

import os

_DEVICES = "--xla_force_host_platform_device_count=8"
if _DEVICES not in os.environ.get("XLA_FLAGS", ""):  # xdist workers inherit it.
  os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_DEVICES}".strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from absl import flags  # noqa: E402

flags.FLAGS.mark_as_parsed()  # grain's multiprocess workers read absl flags.

import pytest  # noqa: E402

TIERS = ("unit", "integration", "e2e")


def pytest_itemcollected(item: pytest.Item) -> None:
  """A test without a tier marker is unit; a test may have one tier only."""
  tiers = {m.name for m in item.iter_markers() if m.name in TIERS}
  if len(tiers) > 1:
    raise pytest.UsageError(f"{item.nodeid}: several test tiers {sorted(tiers)}; give one")
  if not tiers:
    item.add_marker(pytest.mark.unit)
