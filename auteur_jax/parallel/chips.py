"""Accelerators the planner knows: memory, peak bf16 FLOP/s and link bandwidths per chip.

Numbers are the vendors' published per-chip figures (dense bf16, no sparsity). `ici` is
the chip's total one-way bandwidth inside a slice / NVLink domain, `dcn` its share of the
network between slices / hosts; both in bytes/s and used only to rank plans.
"""

from __future__ import annotations

import dataclasses

GiB = 1 << 30


@dataclasses.dataclass(frozen=True)
class Chip:
  name: str
  hbm_bytes: int  # Memory per device (one jax device: a chip, a megacore pair, a GPU).
  peak_flops: float  # Dense bf16 FLOP/s per device.
  hbm_bw: float  # bytes/s.
  ici_bw: float  # bytes/s, one way, inside a slice (TPU ICI, GPU NVLink).
  dcn_bw: float  # bytes/s per device between slices (TPU DCN) / hosts (GPU InfiniBand).
  platform: str  # "tpu" | "cuda"
  device_kinds: tuple[str, ...]  # jax Device.device_kind values of this chip.


CHIPS: dict[str, Chip] = {
  c.name: c
  for c in (
    # TPU DCN: a host's 200 Gb/s NIC shared by its 4 chips.
    Chip("v4", 32 * GiB, 275e12, 1.2e12, 2400e9 / 8, 25e9 / 4, "tpu", ("TPU v4",)),
    Chip("v5e", 16 * GiB, 197e12, 0.82e12, 1600e9 / 8, 25e9 / 4, "tpu", ("TPU v5 lite", "TPU v5e")),
    Chip("v5p", 95 * GiB, 459e12, 2.76e12, 4800e9 / 8, 25e9 / 4, "tpu", ("TPU v5", "TPU v5p")),
    Chip("v6e", 32 * GiB, 918e12, 1.64e12, 3584e9 / 8, 25e9 / 4, "tpu", ("TPU v6 lite", "TPU v6e")),
    # GPUs: SXM parts, memory as the driver reports it; NVLink 900 GB/s both ways; one
    # 400 Gb/s InfiniBand port per GPU between hosts.
    Chip("h100", 81559 << 20, 989e12, 3.35e12, 450e9, 50e9, "cuda", ("NVIDIA H100 80GB HBM3",)),
    Chip("h200", 143771 << 20, 989e12, 4.8e12, 450e9, 50e9, "cuda", ("NVIDIA H200",)),
  )
}


def get(name: str) -> Chip:
  """The chip called `name` (case-insensitive: v4, v5e, v5p, v6e, h100, h200)."""
  chip = CHIPS.get(name.lower())
  if chip is None:
    raise ValueError(f"unknown chip {name!r}; expected one of {sorted(CHIPS)}")
  return chip


def for_device_kind(kind: str) -> Chip:
  """The chip of a jax device kind (e.g. "TPU v5" -> v5p)."""
  for chip in CHIPS.values():
    if kind in chip.device_kinds:
      return chip
  raise ValueError(f"device kind {kind!r} is not in the chip table ({sorted(CHIPS)})")
