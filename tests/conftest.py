"""Test set-up: 8 simulated CPU devices and parsed absl flags, before anything imports jax."""

import os

os.environ["XLA_FLAGS"] = (
  os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
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
