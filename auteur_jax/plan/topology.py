"""Compile-only devices of a target topology, and meshes over them.

  --topology v5p:8x8x8       a TPU slice through libtpu (`pip install -e ".[plan]"`);
                             --num-slices N gives N such slices joined by DCN.
  --topology h100:1x4x8      GPUs through the CUDA PJRT plugin: slices x hosts x GPUs per
                             host, compiled for targets/h100.txtpb (JAX_PLATFORMS=cpu).
Neither needs the hardware: the devices exist only to compile for.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Mapping
from importlib import resources
from typing import Any

import numpy as np
from jax.sharding import AxisType, Mesh

from auteur_jax.parallel import chips
from auteur_jax.parallel.mesh import AXES, make_mesh


class PlanUnavailable(RuntimeError):
  """The compiler for a platform is not installed here (libtpu / the CUDA plugin)."""


@dataclasses.dataclass
class Topology:
  name: str  # As given, e.g. "v5p:8x8x8".
  chip: chips.Chip
  devices: list  # Compile-only jax devices.
  num_slices: int

  @property
  def size(self) -> int:
    return len(self.devices)


def gpu_target_config(chip: chips.Chip) -> str:
  """The GpuTargetConfigProto text the CUDA compiler targets for `chip`."""
  return resources.files("auteur_jax.plan").joinpath("targets", f"{chip.name}.txtpb").read_text()


def get_topology(spec: str, num_slices: int = 1) -> Topology:
  """Compile-only devices for `spec` ("v5p:8x8x8", "h100:1x4x8")."""
  m = re.fullmatch(r"(\w+):(\d+(?:x\d+)+)", spec.strip())
  if not m:
    raise ValueError(f"--topology {spec!r}: expected CHIP:AxBxC, e.g. v5p:8x8x8 or h100:1x4x8")
  chip = chips.get(m.group(1))
  if num_slices < 1:
    raise ValueError(f"--num-slices must be >= 1, got {num_slices}")
  from jax.experimental import topologies

  if chip.platform == "tpu":
    # Compile-only: no TPU is opened, so other planners (and tests) may load libtpu at once.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    kw: dict[str, Any] = {"chip_config_name": "megacore"} if chip.name == "v4" else {}
    if num_slices > 1:
      kw["num_slices"] = num_slices
    try:
      topo = topologies.get_topology_desc(platform="tpu", topology_name=spec, **kw)
    except RuntimeError as e:
      if "not installed" in str(e):
        raise PlanUnavailable('TPU planning needs libtpu: pip install -e ".[plan]"') from e
      raise ValueError(f"--topology {spec!r}: libtpu rejects it: {e}") from e
  else:
    dims = [int(x) for x in m.group(2).split("x")]
    if len(dims) != 3:
      raise ValueError(
        f"--topology {spec!r}: GPU topologies are SLICESxHOSTSxGPUS, e.g. h100:1x4x8"
      )
    if num_slices != 1:
      raise ValueError("--num-slices is for TPU; a GPU topology names its slices first")
    try:
      topo = topologies.get_topology_desc(
        platform="cuda", topology=m.group(2), target_config=gpu_target_config(chip)
      )
    except NotImplementedError as e:
      raise PlanUnavailable(
        'GPU planning needs the CUDA PJRT plugin matching jax: pip install -e ".[plan]"'
      ) from e
    num_slices = dims[0]
  return Topology(spec, chip, list(topo.devices), num_slices)


def resolve_shape(shape: Mapping[str, int], n: int) -> dict[str, int]:
  """Mesh axis sizes with a -1 replaced so that they multiply to `n` devices."""
  sizes = dict(shape)
  rest = [a for a, s in sizes.items() if s == -1]
  known = math.prod(s for s in sizes.values() if s != -1)
  if len(rest) > 1 or (rest and n % known) or (not rest and known != n):
    raise ValueError(f"mesh {dict(shape)} does not multiply to the topology's {n} devices")
  if rest:
    sizes[rest[0]] = n // known
  return {a: sizes[a] for a in AXES if a in sizes}


def plan_mesh(shape: Mapping[str, int], topo: Topology) -> Mesh:
  """A mesh of `shape` over the topology's devices, laid onto its physical axes.

  With several slices the first axis (in data, fsdp, tensor, context order) whose size
  divides by the slice count spans the slices (DCN); the rest stay inside a slice.
  """
  sizes = resolve_shape(shape, topo.size)
  if topo.num_slices == 1 or topo.chip.platform != "tpu":
    try:
      return make_mesh(sizes, topo.devices)
    except (ValueError, AssertionError, NotImplementedError) as e:
      raise ValueError(f"mesh {sizes} does not fit {topo.name}'s physical axes: {e}") from e
  from jax.experimental import mesh_utils

  names = list(sizes)
  across = next((a for a in names if sizes[a] % topo.num_slices == 0), None)
  if across is None:
    raise ValueError(f"mesh {sizes}: no axis divides by the {topo.num_slices} slices")
  dcn = [topo.num_slices if a == across else 1 for a in names]
  ici = [sizes[a] // d for a, d in zip(names, dcn)]
  try:
    devices = mesh_utils.create_hybrid_device_mesh(ici, dcn, topo.devices)
  except (ValueError, AssertionError, NotImplementedError) as e:
    raise ValueError(
      f"mesh {sizes} (per slice {dict(zip(names, ici))}) does not fit "
      f"{topo.name}'s physical axes: {e}"
    ) from e
  return Mesh(devices, tuple(names), axis_types=(AxisType.Auto,) * len(names))


def slow_axes(mesh: Mesh) -> set[str]:
  """Mesh axes whose devices span several slices (TPU) or hosts (GPU): DCN / network."""
  out = set()
  for i, name in enumerate(mesh.axis_names):
    line = np.moveaxis(mesh.devices, i, 0).reshape(mesh.devices.shape[i], -1)[:, 0]
    groups = {getattr(d, "slice_index", None) or 0 for d in line}
    if line[0].platform != "tpu":
      groups = {d.process_index for d in line}
    if len(groups) > 1:
      out.add(name)
  return out
