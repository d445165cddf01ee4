"""Device meshes: named axes `data`, `fsdp`, `tensor` (and later `context`).

The training issue extends this with ici/dcn (multi-slice) meshes and
`jax.distributed` set-up; models and tests only need `make_mesh`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import jax
import ml_collections
from jax.sharding import AxisType, Mesh

from auteur_jax.config import ConfigError

AXES = ("data", "fsdp", "tensor", "context")


def parse_mesh(text: str) -> dict[str, int]:
  """A --mesh flag: "data=1,fsdp=8" -> {"data": 1, "fsdp": 8} (-1: the rest)."""
  try:
    shape = {k.strip(): int(v) for k, v in (item.split("=") for item in text.split(","))}
  except ValueError:
    raise ConfigError(f"--mesh {text!r}: expected axis=size pairs, e.g. data=1,fsdp=8") from None
  unknown = sorted(set(shape) - set(AXES))
  if unknown:
    raise ConfigError(f"--mesh {text!r}: unknown axes {unknown}; expected some of {AXES}")
  return shape


def make_mesh(shape: Mapping[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A mesh with `shape` (axis -> size; one size may be -1 for "the rest"), Auto axes.

  Example: make_mesh({"data": 2, "fsdp": -1, "tensor": 2}) on 8 devices -> 2 x 2 x 2.
  """
  devices = list(devices if devices is not None else jax.devices())
  unknown = sorted(set(shape) - set(AXES))
  if unknown:
    raise ConfigError(f"config.mesh.shape: axes {unknown} are unknown; expected a subset of {AXES}")
  sizes = dict(shape)
  rest = [a for a, s in sizes.items() if s == -1]
  if len(rest) > 1:
    raise ConfigError(f"config.mesh.shape: only one axis may be -1, got {rest}")
  known = math.prod(s for s in sizes.values() if s != -1)
  if rest:
    if len(devices) % known:
      raise ConfigError(
        f"config.mesh.shape {dict(shape)}: the {len(devices)} devices do not divide by {known}"
      )
    sizes[rest[0]] = len(devices) // known
  if math.prod(sizes.values()) != len(devices):
    raise ConfigError(
      f"config.mesh.shape {sizes} needs {math.prod(sizes.values())} devices, "
      f"this process has {len(devices)}"
    )
  names = tuple(a for a in AXES if a in sizes)
  return jax.make_mesh(
    tuple(sizes[a] for a in names), names, axis_types=(AxisType.Auto,) * len(names), devices=devices
  )


def batch_axes(mesh: Mesh, axes: Sequence[str]) -> tuple[str, ...]:
  """The axes of `axes` (config.mesh.batch_axes) that `mesh` has: a batch splits over them."""
  return tuple(a for a in axes if a in mesh.axis_names)


def mesh_config(shape: Mapping[str, int], rules: Sequence[tuple] = ()):
  """`config.mesh` of a config: axis sizes, the logical rules it changes (the trainer
  applies them over DEFAULT_RULES) and the batch axes (see MeshConfig)."""
  return ml_collections.ConfigDict(
    dict(
      shape=ml_collections.ConfigDict(dict(shape)), rules=tuple(rules), batch_axes=("data", "fsdp")
    )
  )


@dataclasses.dataclass(frozen=True)
class MeshConfig:
  """`config.mesh`: axis -> size (one size may be -1: the rest of the devices), pairs
  (logical name, mesh axes or None) that change DEFAULT_RULES, and the mesh axes that
  split a batch's leading axis."""

  shape: dict[str, int]
  rules: tuple[tuple[str, str | tuple[str, ...] | None], ...]
  batch_axes: tuple[str, ...]

  def validate(self) -> None:
    for name, axes in (("shape", tuple(self.shape)), ("batch_axes", self.batch_axes)):
      unknown = sorted(set(axes) - set(AXES))
      if unknown:
        raise ValueError(f"{name}: unknown mesh axes {unknown}; expected some of {AXES}")
    sizes = list(self.shape.values())
    if any(s < 1 and s != -1 for s in sizes) or sizes.count(-1) > 1:
      raise ValueError(f"shape: sizes must be >= 1, one of them may be -1; got {self.shape}")
