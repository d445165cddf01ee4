"""TFRecord files without TensorFlow: atomic (sharded) writers, readers, verification.

A TFRecord file is a sequence of records, each framed as

  uint64 length | uint32 masked_crc32c(length bytes) | data | uint32 masked_crc32c(data)

with integers little-endian and CRC32C (Castagnoli) masked as TensorFlow does, so files
written here are read by `tf.data.TFRecordDataset` and vice versa. Writers fill a
temporary file beside the target and rename it into place on close, so a reader never
sees a half-written file. Errors name the file and the byte offset of the bad record.

Paths may be URIs (gs://...; auteur_jax/paths.py): the temporary object is then renamed
(copied) onto the target, reads go through epath with seek + read instead of pread.
"""

from __future__ import annotations

import glob
import io
import os
import secrets
import struct
import threading
from collections.abc import Iterator
from typing import BinaryIO

import google_crc32c
import numpy as np

from auteur_jax import paths

HEADER_BYTES = 12  # uint64 length + uint32 masked CRC of the length.
FOOTER_BYTES = 4  # uint32 masked CRC of the data.
_MASK_DELTA = 0xA282EAD8
_U32 = 0xFFFFFFFF
_HEADER = struct.Struct("<QI")
_LENGTH = struct.Struct("<Q")
_CRC = struct.Struct("<I")
_READ_BUFFER = 1 << 20  # Streaming reads: few syscalls even for tiny records.
_SEEK_LOCK = threading.Lock()  # seek + read on files without pread (URIs), shared by threads.


class TFRecordError(IOError):
  """A TFRecord file is corrupt or truncated at byte `offset` (start of the record)."""

  def __init__(self, path: str, offset: int, message: str):
    super().__init__(f"{path}: record at byte offset {offset}: {message}")
    self.path = path
    self.offset = offset


def masked_crc32c(data: bytes) -> int:
  """TensorFlow's masked CRC32C of `data` (uint32). Masking keeps CRCs of CRCs apart."""
  crc = google_crc32c.value(data)
  return ((((crc >> 15) | (crc << 17)) & _U32) + _MASK_DELTA) & _U32


def shard_name(name: str, index: int, num_shards: int) -> str:
  """File name of shard `index` of `num_shards`: NAME-00003-of-00016.tfrecord."""
  return f"{name}-{index:05d}-of-{num_shards:05d}.tfrecord"


class TFRecordWriter:
  """Writes one TFRecord file atomically; use as a context manager.

  Records go to a temporary file in the target's folder, renamed onto `path` by
  `close()`. If the `with` block raises, the temporary file is removed and an existing
  file at `path` is left untouched.
  """

  def __init__(self, path: str | os.PathLike):
    self.path = os.fspath(path)
    self.num_records = 0
    self._uri = paths.is_uri(self.path)
    folder, base = paths.dirname(self.path), os.path.basename(self.path.rstrip("/"))
    # Not mkstemp: its files are mode 0600; open() applies the umask like any file.
    # The suffix keeps temporary files out of `*.tfrecord` globs (see list_shards).
    self._tmp: str | None = paths.join(
      folder if self._uri else os.path.abspath(folder),
      f".{base}.{os.getpid()}-{secrets.token_hex(4)}.tmp",
    )
    self._file: BinaryIO | None = (
      paths.path(self._tmp).open("wb") if self._uri else open(self._tmp, "xb")
    )

  def write(self, record: bytes) -> None:
    """Appends one record (any bytes-like object, may be empty)."""
    if self._file is None:
      raise ValueError(f"{self.path}: write() on a closed TFRecordWriter")
    data = record if isinstance(record, bytes) else bytes(record)
    length = _LENGTH.pack(len(data))
    self._file.write(length)
    self._file.write(_CRC.pack(masked_crc32c(length)))
    self._file.write(data)
    self._file.write(_CRC.pack(masked_crc32c(data)))
    self.num_records += 1

  def _finish(self) -> None:
    """Flushes the temporary file to disk and closes it (no rename yet)."""
    if self._file is not None:
      self._file.flush()
      if not self._uri:  # An object store's upload is durable once closed.
        os.fsync(self._file.fileno())
      self._file.close()
      self._file = None

  def _commit(self) -> None:
    assert self._tmp is not None  # Committed once, after close.
    if self._uri:
      paths.path(self._tmp).replace(self.path)
    else:
      os.replace(self._tmp, self.path)
    self._tmp = None

  def close(self) -> None:
    """Finishes the file and renames it onto `path`. Idempotent."""
    if self._tmp is not None:
      self._finish()
      self._commit()

  def abort(self) -> None:
    """Discards everything written; `path` is not touched. Idempotent."""
    if self._file is not None:
      self._file.close()
      self._file = None
    if self._tmp is not None:
      try:
        paths.path(self._tmp).unlink() if self._uri else os.remove(self._tmp)
      except FileNotFoundError:
        pass
      self._tmp = None

  def __enter__(self) -> TFRecordWriter:
    return self

  def __exit__(self, exc_type, exc, tb) -> None:
    if exc_type is None:
      self.close()
    else:
      self.abort()


class ShardedWriter:
  """Writes records round-robin into `num_shards` files OUT_DIR/NAME-i-of-n.tfrecord.

  All shards stay temporary until `close()`, which flushes every shard and only then
  renames them into place. Keeps one open file per shard.
  """

  def __init__(self, out_dir: str | os.PathLike, name: str, num_shards: int):
    if not isinstance(num_shards, int) or num_shards < 1:
      raise ValueError(f"num_shards must be an int >= 1, got {num_shards!r}")
    if not name or os.sep in name:
      raise ValueError(f"shard name must be a non-empty file name, got {name!r}")
    self.out_dir = os.fspath(out_dir)
    paths.makedirs(self.out_dir)
    self._paths = [
      paths.join(self.out_dir, shard_name(name, i, num_shards)) for i in range(num_shards)
    ]
    self._writers: list[TFRecordWriter] = []
    try:
      for p in self._paths:
        self._writers.append(TFRecordWriter(p))
    except BaseException:
      self.abort()
      raise
    self._next = 0
    self._closed = False

  @property
  def paths(self) -> list[str]:
    """Final paths of the shards, in shard order."""
    return list(self._paths)

  @property
  def num_records(self) -> int:
    return sum(w.num_records for w in self._writers)

  def write(self, record: bytes) -> None:
    """Appends one record to the next shard (round-robin)."""
    if self._closed:
      raise ValueError(f"{self.out_dir}: write() on a closed ShardedWriter")
    self._writers[self._next].write(record)
    self._next = (self._next + 1) % len(self._writers)

  def close(self) -> None:
    """Flushes all shards, then renames them all into place. Idempotent."""
    if self._closed:
      return
    try:
      for w in self._writers:
        w._finish()
    except BaseException:
      self.abort()
      raise
    for w in self._writers:
      w._commit()
    self._closed = True

  def abort(self) -> None:
    """Removes all temporary shards; existing files are not touched."""
    for w in self._writers:
      w.abort()
    self._closed = True

  def __enter__(self) -> ShardedWriter:
    return self

  def __exit__(self, exc_type, exc, tb) -> None:
    if exc_type is None:
      self.close()
    else:
      self.abort()


def _read_header(f: BinaryIO, path: str, offset: int, size: int, verify: bool) -> int | None:
  """Reads the header of the record at `offset`; returns its data length, None at EOF.

  Checks the length CRC (if `verify`) and that the whole record fits in `size` bytes.
  """
  header = f.read(HEADER_BYTES)
  if not header:
    return None
  if len(header) < HEADER_BYTES:
    raise TFRecordError(
      path,
      offset,
      f"truncated header: {len(header)} of {HEADER_BYTES} bytes before the end of the file",
    )
  length, length_crc = _HEADER.unpack(header)
  if verify and masked_crc32c(header[:8]) != length_crc:
    raise TFRecordError(
      path,
      offset,
      f"length CRC mismatch (stored {length_crc:#010x}, "
      f"computed {masked_crc32c(header[:8]):#010x}); corrupt length field",
    )
  end = offset + HEADER_BYTES + length + FOOTER_BYTES
  if end > size:
    raise TFRecordError(
      path,
      offset,
      f"truncated record: needs {length} data bytes + "
      f"{FOOTER_BYTES} CRC bytes, but the file ends at byte {size}",
    )
  return length


def _read_body(f: BinaryIO, path: str, offset: int, length: int, verify: bool) -> bytes:
  """Reads `length` data bytes + the data CRC from the current position (data offset
  `offset`) and checks the CRC if `verify`."""
  record = offset - HEADER_BYTES
  data = f.read(length)
  crc = f.read(FOOTER_BYTES)  # Two reads: slicing one read would copy the data.
  if len(data) < length or len(crc) < FOOTER_BYTES:
    raise TFRecordError(
      path,
      record,
      f"truncated record: expected {length} data bytes + "
      f"{FOOTER_BYTES} CRC bytes at byte {offset}, got "
      f"{len(data) + len(crc)}",
    )
  if verify:
    stored, computed = _CRC.unpack(crc)[0], masked_crc32c(data)
    if stored != computed:
      raise TFRecordError(
        path,
        record,
        f"data CRC mismatch (stored {stored:#010x}, computed {computed:#010x}); corrupt data",
      )
  return data


def iter_records(path: str | os.PathLike, verify: bool = True) -> Iterator[bytes]:
  """Yields the records of a TFRecord file in order.

  Truncation always raises TFRecordError; with `verify`, so do length and data CRC
  mismatches. Errors name the path and the byte offset where the bad record starts.
  """
  path = os.fspath(path)
  with open_shard(path, buffering=_READ_BUFFER) as f:
    size = _size(f, path)
    offset = 0
    while (length := _read_header(f, path, offset, size, verify)) is not None:
      yield _read_body(f, path, offset + HEADER_BYTES, length, verify)
      offset += HEADER_BYTES + length + FOOTER_BYTES


def index_records(path: str | os.PathLike) -> np.ndarray:
  """Returns int64 [N, 2]: (data offset, data length) in bytes of each record.

  Reads only the headers (seeking past the data), checks their length CRCs and that
  no record runs past the end of the file. Data CRCs are checked by read_record_at.
  """
  path = os.fspath(path)
  rows = []
  with open_shard(path) as f:
    size = _size(f, path)
    offset = 0
    while (length := _read_header(f, path, offset, size, verify=True)) is not None:
      rows.append((offset + HEADER_BYTES, length))
      offset += HEADER_BYTES + length + FOOTER_BYTES
      f.seek(offset)
  return np.array(rows, dtype=np.int64).reshape(-1, 2)


def open_shard(path: str | os.PathLike, buffering: int = -1) -> BinaryIO:
  """Opens a TFRecord file for reading (a URI through epath); FileNotFoundError names it."""
  path = os.fspath(path)
  if not paths.is_uri(path):
    return open(path, "rb", buffering=buffering)
  if not paths.is_file(path):
    raise FileNotFoundError(f"{path}: no such file")
  return paths.path(path).open("rb")


def _size(f: BinaryIO, path: str) -> int:
  try:
    return os.fstat(f.fileno()).st_size
  except (OSError, io.UnsupportedOperation):  # No file descriptor: a URI's file object.
    return paths.size(path)


def _pread(f: BinaryIO, n: int, offset: int) -> bytes:
  """n bytes at `offset` without moving a shared position: pread, or seek + read under
  a lock for file objects without a descriptor (a URI's)."""
  try:
    fd = f.fileno()
  except (OSError, io.UnsupportedOperation):
    with _SEEK_LOCK:
      f.seek(offset)
      return f.read(n)
  return os.pread(fd, n, offset)


def read_record_at(f: BinaryIO, path: str, offset: int, length: int, verify: bool = True) -> bytes:
  """Reads one record's data from open file `f` given its data offset and length
  (a row of index_records); checks the data CRC if `verify`. `path` is for errors.

  Uses pread, not seek + read: safe for threads that share `f` (grain's readers).
  """
  offset, length = int(offset), int(length)
  buf = _pread(f, length + FOOTER_BYTES, offset)
  record = offset - HEADER_BYTES
  if len(buf) < length + FOOTER_BYTES:
    raise TFRecordError(
      path,
      record,
      f"truncated record: expected {length} data bytes + "
      f"{FOOTER_BYTES} CRC bytes at byte {offset}, got {len(buf)}",
    )
  data = buf[:length]
  if verify:
    stored, computed = _CRC.unpack_from(buf, length)[0], masked_crc32c(data)
    if stored != computed:
      raise TFRecordError(
        path,
        record,
        f"data CRC mismatch (stored {stored:#010x}, computed {computed:#010x}); corrupt data",
      )
  return data


def verify_file(path: str | os.PathLike) -> int:
  """Checks every length and data CRC of a file; returns its number of records."""
  return sum(1 for _ in iter_records(path, verify=True))


def list_shards(pattern_or_dir: str | os.PathLike) -> list[str]:
  """Sorted TFRecord paths from a directory (its `*.tfrecord`, also in sub-folders),
  a glob or a file.

  Raises FileNotFoundError naming the pattern if nothing matches.
  """
  pattern = os.fspath(pattern_or_dir)
  if paths.is_uri(pattern):
    return _list_uri_shards(pattern)
  if os.path.isdir(pattern):
    found = glob.glob(os.path.join(glob.escape(pattern), "**", "*.tfrecord"), recursive=True)
  elif any(c in pattern for c in "*?["):
    found = glob.glob(pattern)
  else:
    found = [pattern] if os.path.exists(pattern) else []
  found = sorted(p for p in found if os.path.isfile(p))
  if not found:
    raise FileNotFoundError(
      f"no TFRecord files match {pattern!r} (expected a directory "
      "with *.tfrecord files, a glob or a file)"
    )
  return found


def _list_uri_shards(pattern: str) -> list[str]:
  """list_shards for a URI: a folder (walked), a glob (one level) or an object."""
  if paths.is_dir(pattern):
    found = [
      f
      for f in paths.files_under(pattern)
      if f.endswith(".tfrecord") and not os.path.basename(f).startswith(".")
    ]
  elif any(c in pattern for c in "*?["):
    found = [p for p in paths.glob(pattern) if paths.is_file(p)]
  else:
    found = [pattern] if paths.is_file(pattern) else []
  if not found:
    raise FileNotFoundError(
      f"no TFRecord files match {pattern!r} (expected a directory "
      "with *.tfrecord files, a glob or a file)"
    )
  return sorted(found)
