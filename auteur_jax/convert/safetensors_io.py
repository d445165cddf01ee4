"""Safetensors folders, read lazily and written in shards.

Reading: a folder holds one or more `*.safetensors` files, or shards listed by a
`*.safetensors.index.json` (`weight_map`: tensor -> file). Only the JSON headers are read
up front; `view(name)` memory-maps one tensor (np.memmap, so bfloat16 needs no torch)
and the caller drops it when done, which unmaps its pages. A header whose data runs past
the end of its file (a truncated download) is refused when the folder is opened.
Pickled weights (`.bin`, `.pt`, ...) are never loaded.

Writing: `write_sharded` streams tensors one at a time into files of at most
`max_shard_bytes` (a tensor larger than the limit gets a file of its own), named and
indexed as transformers / diffusers expect (`model-00001-of-00003.safetensors` +
`model.safetensors.index.json`, or one `model.safetensors`).
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import ml_dtypes
import numpy as np

from auteur_jax.checkpoint.errors import WeightError

DTYPES = {
  "F64": np.float64,
  "F32": np.float32,
  "F16": np.float16,
  "BF16": ml_dtypes.bfloat16,
  "I64": np.int64,
  "I32": np.int32,
  "I16": np.int16,
  "I8": np.int8,
  "U8": np.uint8,
  "BOOL": np.bool_,
}
_CODES = {np.dtype(v): k for k, v in DTYPES.items()}
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


class SafetensorsError(WeightError):
  """A folder or file is not a usable safetensors checkpoint; the message names it."""


class HFConfig(dict):
  """A config.json: a key the converters need and it lacks is an error naming the file."""

  def __init__(self, values: dict, file: str):
    super().__init__(values)
    self.file = file

  def __missing__(self, key: str) -> Any:
    raise SafetensorsError(f"{self.file}: no key {key!r} (has {sorted(self)})")


def read_hf_config(path: str) -> HFConfig:
  """The model folder's config.json as a dict."""
  file = os.path.join(path, "config.json")
  if not os.path.isfile(file):
    raise SafetensorsError(f"{path}: no config.json (expected an HF / diffusers model folder)")
  try:
    with open(file) as f:
      values = json.load(f)
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise SafetensorsError(f"{file}: not valid JSON ({e})") from None
  if not isinstance(values, dict):
    raise SafetensorsError(f"{file}: a JSON {type(values).__name__}, expected an object")
  return HFConfig(values, file)


def read_header(path: str) -> tuple[dict, int]:
  """(tensor name -> {dtype, shape, data_offsets}, byte offset of the data) of one file,
  checked against the file's size."""
  size = os.path.getsize(path)
  with open(path, "rb") as f:
    head = f.read(8)
    if len(head) < 8:
      raise SafetensorsError(f"{path}: {size} bytes, too short for a safetensors header")
    (n,) = struct.unpack("<Q", head)
    if n > size - 8:
      raise SafetensorsError(
        f"{path}: header length {n} exceeds the file size {size} "
        "(truncated or not a safetensors file)"
      )
    try:
      header = json.loads(f.read(n))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
      raise SafetensorsError(f"{path}: unreadable header ({e})") from None
  if not isinstance(header, dict):
    raise SafetensorsError(
      f"{path}: the header is a JSON {type(header).__name__}, expected an object of tensor entries"
    )
  header.pop("__metadata__", None)
  for name, info in header.items():
    if not (
      isinstance(info, dict)
      and isinstance(info.get("data_offsets"), list)
      and len(info["data_offsets"]) == 2
      and isinstance(info.get("shape"), list)
    ):
      raise SafetensorsError(
        f"{path}: tensor {name!r}: expected {{dtype, shape, "
        f"data_offsets: [begin, end]}}, got {info!r:.200}"
      )
  end = max((info["data_offsets"][1] for info in header.values()), default=0)
  if 8 + n + end > size:
    raise SafetensorsError(
      f"{path}: truncated: the header describes {8 + n + end} bytes, the file has {size}"
    )
  for name, info in header.items():
    if info["dtype"] not in DTYPES:
      raise SafetensorsError(f"{path}: tensor {name!r} has unsupported dtype {info['dtype']}")
  return header, 8 + n


class SafetensorsFolder:
  """name -> memory-mapped tensor over the safetensors files of a model folder."""

  def __init__(self, path: str):
    if not os.path.isdir(path):
      raise SafetensorsError(f"{path}: not a folder")
    self.path = path
    names = sorted(os.listdir(path))
    index = [n for n in names if n.endswith(".safetensors.index.json")]
    if len(index) > 1:
      raise SafetensorsError(f"{path}: several index files {index}; keep one")
    if index:
      index_file = os.path.join(path, index[0])
      with open(index_file) as f:
        weight_map = json.load(f).get("weight_map")
      if not isinstance(weight_map, dict):
        raise SafetensorsError(f"{index_file}: no 'weight_map' object")
      files = sorted(set(weight_map.values()))
      missing = [f for f in files if not os.path.isfile(os.path.join(path, f))]
      if missing:
        raise SafetensorsError(f"{index_file}: shard(s) {missing} are listed but missing")
    else:
      files = [n for n in names if n.endswith(".safetensors")]
      if not files:
        pickles = [n for n in names if n.endswith(PICKLE_SUFFIXES)]
        if pickles:
          raise SafetensorsError(
            f"{path}: only pickled weights {pickles}; convert them to "
            "safetensors first (pickles are never loaded)"
          )
        raise SafetensorsError(f"{path}: no .safetensors files")
    self._where: dict[str, tuple[str, dict, int]] = {}
    for file in files:
      full = os.path.join(path, file)
      header, base = read_header(full)
      for name, info in header.items():
        if name in self._where:
          raise SafetensorsError(
            f"{path}: tensor {name!r} is in both "
            f"{os.path.basename(self._where[name][0])} and {file}"
          )
        self._where[name] = (full, info, base)
    if index:
      listed = set(weight_map)
      if listed != set(self._where):
        diff = sorted(listed ^ set(self._where))
        raise SafetensorsError(
          f"{index_file}: weight_map and the shards disagree on {len(diff)} tensors: {diff[:8]}"
        )

  def keys(self) -> list[str]:
    return sorted(self._where)

  def __contains__(self, name: str) -> bool:
    return name in self._where

  def shape(self, name: str) -> tuple[int, ...]:
    return tuple(self._where[name][1]["shape"])

  def dtype(self, name: str) -> np.dtype:
    return np.dtype(DTYPES[self._where[name][1]["dtype"]])

  def nbytes(self, name: str) -> int:
    start, end = self._where[name][1]["data_offsets"]
    return end - start

  def view(self, name: str) -> np.ndarray:
    """The tensor, memory-mapped read-only (nothing is read until it is indexed)."""
    if name not in self._where:
      raise SafetensorsError(f"{self.path}: tensor {name!r} is missing")
    file, info, base = self._where[name]
    shape = tuple(info["shape"])
    dtype = self.dtype(name)
    start, end = info["data_offsets"]
    if end - start != int(np.prod(shape)) * dtype.itemsize:
      raise SafetensorsError(f"{file}: tensor {name!r}: {end - start} bytes for shape {shape}")
    if end == start:
      return np.zeros(shape, dtype)
    return np.memmap(file, dtype=dtype, mode="r", offset=base + start, shape=shape)


def shard_names(stem: str, num: int) -> list[str]:
  """File names of `num` shards: `{stem}.safetensors` or `{stem}-0000k-of-0000n...`."""
  if num == 1:
    return [f"{stem}.safetensors"]
  return [f"{stem}-{k + 1:05d}-of-{num:05d}.safetensors" for k in range(num)]


def write_sharded(
  folder: str,
  stem: str,
  tensors: Iterable[tuple[str, tuple[int, ...], np.dtype]],
  produce: Callable[[], Iterator[tuple[str, np.ndarray]]],
  max_shard_bytes: int,
) -> list[str]:
  """Writes safetensors shards of the declared `tensors` (name, shape, dtype, in order) to
  `folder`, taking the arrays one at a time from `produce()` (same order). Returns the
  file names; with more than one, `{stem}.safetensors.index.json` is written too."""
  decl = [(n, tuple(s), np.dtype(d)) for n, s, d in tensors]
  groups: list[list] = [[]]
  size = 0
  for item in decl:
    nbytes = int(np.prod(item[1])) * item[2].itemsize
    if groups[-1] and size + nbytes > max_shard_bytes:
      groups.append([])
      size = 0
    groups[-1].append(item)
    size += nbytes
  files = shard_names(stem, len(groups))
  stream = produce()
  weight_map = {}
  for file, group in zip(files, groups):
    header: dict[str, dict[str, Any]] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape, dtype in group:
      nbytes = int(np.prod(shape)) * dtype.itemsize
      header[name] = {
        "dtype": _CODES[dtype],
        "shape": list(shape),
        "data_offsets": [offset, offset + nbytes],
      }
      offset += nbytes
      weight_map[name] = file
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # Aligned data, as the reference writer does.
    with open(os.path.join(folder, file), "wb") as f:
      f.write(struct.pack("<Q", len(raw)))
      f.write(raw)
      for name, shape, dtype in group:
        got_name, arr = next(stream)
        if got_name != name or tuple(arr.shape) != shape or arr.dtype != dtype:
          raise AssertionError(
            f"write_sharded: produced {got_name} {arr.shape} {arr.dtype}, "
            f"declared {name} {shape} {dtype}"
          )
        f.write(np.ascontiguousarray(arr).reshape(-1).view(np.uint8).data)
  if len(files) > 1:
    total = sum(int(np.prod(s)) * d.itemsize for _, s, d in decl)
    with open(os.path.join(folder, f"{stem}.safetensors.index.json"), "w") as f:
      json.dump(
        {"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2, sort_keys=True
      )
  return files
