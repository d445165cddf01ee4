"""Orbax `state` items read and written a leaf at a time (the layout: layout.py).

`tree_metadata` lists a checkpoint's leaves without reading them, `restore` reads a
subset onto given shardings, `leaf_opener` reads slices of one leaf (tensorstore).

`ParamWriter` writes the `state` item without ever holding a whole model: each
parameter is a zarr array in orbax's non-OCDBT layout (`state/model.llm.embed.value/`,
zstd-compressed chunks), filled chunk by chunk, where chunks are aligned with the
target sharding's shards (each process writes the shards of its own devices); then
`_METADATA` (the tree) and `_sharding` (each leaf's NamedSharding) are written as orbax
writes them, so orbax restores the result like any checkpoint (tests check that).
"""

from __future__ import annotations

import base64
import json
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
import tensorstore as ts

from auteur_jax import paths
from auteur_jax.checkpoint.errors import WeightError
from auteur_jax.checkpoint.layout import Key, absolute, flatten, key_of, nest


def tree_metadata(state_dir: str) -> dict[Key, Any]:
  """Flat {key path: orbax ArrayMetadata (shape, dtype, sharding)} of a `state` item."""
  tree = ocp.PyTreeCheckpointer().metadata(absolute(state_dir)).item_metadata.tree
  return {key_of(path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def restore(state_dir: str, targets: dict[Key, jax.ShapeDtypeStruct]) -> dict[Key, jax.Array]:
  """The leaves `targets` names (a subset of the checkpoint's), restored onto their
  shardings and dtypes."""
  item = nest(targets)
  try:
    out = ocp.PyTreeCheckpointer().restore(
      absolute(state_dir),
      args=ocp.args.PyTreeRestore(
        item=item,
        restore_args=ocp.checkpoint_utils.construct_restore_args(item),
        partial_restore=True,
      ),
    )
  except (ValueError, KeyError, FileNotFoundError) as e:
    raise WeightError(
      f"{state_dir}: cannot restore {len(targets)} leaves ({type(e).__name__}: {e})"
    ) from e
  return flatten(out)


def leaf_opener(state_dir: str) -> Callable[[Key], ts.TensorStore]:
  """A function opening leaf `key` of a `state` item as a tensorstore array, for reading a
  slice at a time (OCDBT or plain zarr, as the item's _METADATA says: read once here)."""
  state_dir = absolute(state_dir)
  try:
    with paths.open_file(paths.join(state_dir, "_METADATA")) as f:
      meta = json.load(f)
  except (OSError, ValueError) as e:
    raise WeightError(f"{state_dir}: no readable orbax _METADATA ({e})") from e
  driver = "zarr3" if meta.get("use_zarr3") else "zarr"
  uri = paths.is_uri(state_dir)  # tensorstore opens gs:// URLs with its gcs driver.
  base = f"{state_dir}/" if uri else f"file://{state_dir}"

  def open_leaf(key: Key) -> ts.TensorStore:
    name = ".".join(key)
    kvstore = (
      {"driver": "ocdbt", "base": base, "path": name}
      if meta.get("use_ocdbt")
      else (
        paths.join(state_dir, name)
        if uri
        else {"driver": "file", "path": os.path.join(state_dir, name)}
      )
    )
    try:
      return ts.open({"driver": driver, "kvstore": kvstore}, open=True, read=True).result()
    except ValueError as e:
      raise WeightError(f"{state_dir}: cannot open {'/'.join(key)} ({e})") from e

  return open_leaf


def _zarr_dtype(dtype: np.dtype) -> str:
  return "bfloat16" if dtype == jax.numpy.bfloat16 else np.dtype(dtype).str


def chunk_shape(
  shape: Sequence[int],
  sharding: jax.sharding.Sharding,
  itemsize: int,
  limit: int,
  splits: Sequence[Sequence[int]] = (),
) -> tuple[int, ...]:
  """A chunk shape that divides the shard shape, every offset in `splits[d]` (where
  pieces of the parameter meet along axis d) and holds at most `limit` bytes where it can."""
  chunk = list(sharding.shard_shape(tuple(shape)))
  for d, offsets in enumerate(splits):
    for o in offsets:
      chunk[d] = math.gcd(chunk[d], o) if o else chunk[d]
  d = 0
  while math.prod(chunk) * itemsize > limit and d < len(chunk):
    if chunk[d] == 1:
      d += 1
      continue
    p = next(p for p in range(2, chunk[d] + 1) if chunk[d] % p == 0)
    chunk[d] //= p
  return tuple(chunk)


def _blocks(shape: Sequence[int], chunk: Sequence[int]) -> Iterator[tuple[slice, ...]]:
  grid = [range(0, s, c) for s, c in zip(shape, chunk)]
  for starts in np.ndindex(*[len(g) for g in grid]) if shape else [()]:
    yield tuple(slice(g[i], min(g[i] + c, s)) for g, i, c, s in zip(grid, starts, chunk, shape))


def _owned(shape: Sequence[int], sharding: jax.sharding.Sharding) -> set[tuple]:
  """Starts of the shards this process writes (one replica per shard)."""
  owners: dict[tuple, Any] = {}  # start -> the jax.Device that writes it
  placed: Mapping[Any, Any] = sharding.devices_indices_map(tuple(shape))  # device -> index
  for device, index in placed.items():
    start = tuple(i.indices(s)[0] for i, s in zip(index, shape))
    if start not in owners or device.id < owners[start].id:
      owners[start] = device
  return {s for s, dev in owners.items() if dev.process_index == jax.process_index()}


class ParamWriter:
  """Writes a `state` item one leaf at a time (see the module doc): the params of an
  import, or every leaf that reshard copies."""

  def __init__(self, state_dir: str, chunk_bytes: int = 64 << 20):
    os.makedirs(state_dir, exist_ok=jax.process_count() > 1)
    self.dir = state_dir
    self.chunk_bytes = chunk_bytes
    self.tree: dict[str, dict] = {}
    self.shardings: dict[str, str] = {}

  def write(
    self,
    key: Key,
    shape: Sequence[int],
    dtype: Any,
    sharding: jax.sharding.NamedSharding,
    fill: Callable[[np.ndarray, tuple[slice, ...]], None],
    splits: Sequence[Sequence[int]] = (),
  ) -> int:
    """Creates leaf `key` [shape] and writes it chunk by chunk: `fill(out, block)` puts
    our values of `block` (global slices) into the zeroed buffer `out`. Returns bytes."""
    dtype = np.dtype(dtype)
    shape = tuple(int(s) for s in shape)
    name = ".".join(key)
    chunk = chunk_shape(shape, sharding, dtype.itemsize, self.chunk_bytes, splits)
    store = ts.open(
      {
        "driver": "zarr",
        "kvstore": {"driver": "file", "path": os.path.join(self.dir, name)},
        "metadata": {
          "shape": list(shape),
          "chunks": list(chunk),
          "dtype": _zarr_dtype(dtype),
          "compressor": {"id": "zstd", "level": 1},
        },
        "create": True,
      }
    ).result()
    shard = sharding.shard_shape(shape)
    owned = _owned(shape, sharding)
    for block in _blocks(shape, chunk):
      start = tuple(b.start // s * s for b, s in zip(block, shard))
      if start not in owned:
        continue
      out = np.zeros([b.stop - b.start for b in block], dtype)
      fill(out, block)
      store[block].write(out).result()
      del out
    self.tree[str(key)] = {
      "key_metadata": [{"key": k, "key_type": 2} for k in key],
      "value_metadata": {
        "value_type": "jax.Array",
        "skip_deserialize": False,
        "write_shape": list(chunk),
      },
    }
    self.shardings[base64.urlsafe_b64encode(name.encode()).decode()] = (
      ocp.metadata.NamedShardingMetadata.from_jax_sharding(sharding).to_serialized_string()
    )
    return math.prod(shape) * dtype.itemsize

  def finish(self) -> None:
    """Writes the tree metadata (process 0); the item is readable after this."""
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils

      multihost_utils.sync_global_devices("auteur_convert_params_written")
    if jax.process_index():
      return
    with open(os.path.join(self.dir, "_METADATA"), "w") as f:
      json.dump(
        {
          "tree_metadata": self.tree,
          "use_ocdbt": False,
          "use_zarr3": False,
          "store_array_data_equal_to_fill_value": True,
          "custom_metadata": None,
        },
        f,
      )
    with open(os.path.join(self.dir, "_sharding"), "w") as f:
      json.dump(self.shardings, f)
