"""Logical axis names -> mesh axes.

Every parameter names its axes logically (`nnx.with_partitioning(init, ("embed",
"mlp"))`); activations are constrained with `constrain(x, ("batch", "length",
"embed"))`. Rules map each logical name to mesh axes (or None: replicated). Configs
carry their own rules (`config.mesh.rules`); DEFAULT_RULES is the usual FSDP + tensor
layout. Build and run models under `use_mesh(mesh, rules)`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping, Sequence

import jax
import ml_collections
from flax import nnx
from flax.core import spmd
from jax.sharding import NamedSharding, PartitionSpec

Rules = Sequence[tuple[str, str | tuple[str, ...] | None]]

DEFAULT_RULES: Rules = (
  ("batch", ("data", "fsdp")),
  ("length", "context"),  # Sequence / video-token axis of activations.
  # Model width of weights: sharded over fsdp, and over context, whose devices hold the
  # same batch (ZeRO-3 over both: a context split does not replicate the weights).
  ("embed", ("fsdp", "context")),
  ("act_embed", None),  # Model width of activations: replicated.
  ("mlp", "tensor"),
  ("heads", "tensor"),
  ("kv_heads", "tensor"),
  ("head_dim", None),
  ("vocab", "tensor"),
  ("layers", None),  # Stacked (scanned) layers.
  ("conv_in", None),
  ("conv_out", "tensor"),
  ("norm", None),
)


def mesh_rules(config: ml_collections.ConfigDict) -> tuple:
  """config.mesh.rules (pairs of logical name, mesh axes) over DEFAULT_RULES.

  A config names only what it changes; every other logical name keeps its default, so
  no logical name reaches a mesh unmapped.
  """
  given = {k: tuple(v) if isinstance(v, list) else v for k, v in config.mesh.get("rules") or ()}
  defaults = [(k, given.pop(k, v)) for k, v in DEFAULT_RULES]
  return tuple(defaults) + tuple(given.items())


def rules_for_mesh(rules: Rules, mesh: jax.sharding.Mesh) -> tuple:
  """`rules` with mesh axes that `mesh` lacks removed (e.g. `context` on data/fsdp/tensor)."""
  names = set(mesh.axis_names)
  return tuple((logical, _keep(axes, names)) for logical, axes in rules)


@contextlib.contextmanager
def use_mesh(mesh: jax.sharding.Mesh, rules: Rules = DEFAULT_RULES) -> Iterator[None]:
  """Mesh + logical rules context: variables created inside are sharded by their names."""
  with jax.set_mesh(mesh), nnx.logical_axis_rules(rules_for_mesh(rules, mesh)):
    yield


def logical_to_spec(axes: Sequence[str | None], rules: Rules | None = None) -> PartitionSpec:
  """PartitionSpec of the mesh axes that `rules` (default: the active ones) give `axes`."""
  rules = tuple(rules if rules is not None else spmd.get_logical_axis_rules() or DEFAULT_RULES)
  return spmd.get_pspec(tuple(axes), rules)


def constrain(x: jax.Array, axes: Sequence[str | None]) -> jax.Array:
  """Sharding constraint by logical names; a no-op outside a mesh context."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh is None or mesh.empty:
    return x
  spec = logical_to_spec(axes)
  names = set(mesh.axis_names)
  spec = PartitionSpec(*[_keep(p, names) for p in spec])
  return jax.lax.with_sharding_constraint(x, spec)


def _keep(p, names):
  """Drops mesh axes the current mesh does not have (e.g. `context` on a 3-axis mesh)."""
  if p is None:
    return None
  if isinstance(p, str):
    return p if p in names else None
  kept = tuple(a for a in p if a in names)
  return kept or None


def dividing_axes(p, dim: int, sizes: Mapping[str, int], keep: int = 0):
  """Spec entry `p`'s mesh axes that `sizes` names, less trailing ones while their
  product does not divide `dim` (sharded arrays split evenly), keeping at least `keep`
  of them; as a PartitionSpec entry (None, an axis name or a tuple of them)."""
  kept = [a for a in _as_tuple(p) if a in sizes]
  while len(kept) > keep and dim % math.prod(sizes[a] for a in kept):
    kept.pop()
  return kept[0] if len(kept) == 1 else (tuple(kept) or None)


def state_shardings(state: nnx.State, mesh: jax.sharding.Mesh, rules: Rules = DEFAULT_RULES):
  """NamedShardings for an nnx State (e.g. of `nnx.eval_shape`) under `rules` on `mesh`.
  A dimension keeps its rule's first mesh axis (one that does not divide it stays an
  error where the arrays are placed, naming the weight) and drops later ones from the end
  while their product does not divide it (e.g. a 20-wide weight on fsdp 2 x context 4:
  fsdp only), as sharded arrays must split evenly."""
  names, sizes = set(mesh.axis_names), dict(mesh.shape)
  with nnx.logical_axis_rules(tuple(rules)):
    specs = nnx.get_partition_spec(state)

  def sharding(spec: PartitionSpec, leaf) -> NamedSharding:
    shape = getattr(leaf, "shape", None)
    if shape is None:  # Not an array: the rule as it is.
      return NamedSharding(mesh, PartitionSpec(*[_keep(p, names) for p in spec]))
    return NamedSharding(
      mesh, PartitionSpec(*[dividing_axes(p, d, sizes, keep=1) for p, d in zip(spec, shape)])
    )

  return jax.tree.map(sharding, specs, state, is_leaf=lambda s: isinstance(s, PartitionSpec))


def _as_tuple(p) -> tuple[str, ...]:
  return () if p is None else (p,) if isinstance(p, str) else tuple(p)
