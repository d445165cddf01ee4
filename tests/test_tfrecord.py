"""Tests for auteur_jax.data.tfrecord: framing, CRCs, sharding, corruption, atomicity."""

from __future__ import annotations

import os
import struct

import numpy as np
import pytest

from auteur_jax.data import tfrecord as tfr


def _records(n: int, seed: int = 0) -> list[bytes]:
  rng = np.random.default_rng(seed)
  sizes = [0, 1] + [int(s) for s in rng.integers(0, 5000, size=n - 2)]
  return [rng.integers(0, 256, size=s, dtype=np.uint8).tobytes() for s in sizes]


def _write(path, records) -> None:
  with tfr.TFRecordWriter(path) as w:
    for r in records:
      w.write(r)


def test_round_trip_random_sizes(tmp_path):
  path = tmp_path / "a.tfrecord"
  records = _records(200)
  with tfr.TFRecordWriter(path) as w:
    for r in records:
      w.write(r)
    assert w.num_records == 200
  assert list(tfr.iter_records(path)) == records
  assert tfr.verify_file(path) == 200
  assert os.listdir(tmp_path) == ["a.tfrecord"]  # No temporary file left behind.


def test_empty_file_has_no_records(tmp_path):
  path = tmp_path / "empty.tfrecord"
  _write(path, [])
  assert path.stat().st_size == 0
  assert list(tfr.iter_records(path)) == []
  assert tfr.index_records(path).shape == (0, 2)


# Published CRC32C check values (RFC 3720 B.4, and the "123456789" check value).
@pytest.mark.parametrize(
  "data, crc, masked",
  [
    (b"123456789", 0xE3069283, 0xC78AB0E5),
    (bytes(32), 0x8A9136AA, 0x0FD7FFFA),
    (b"\xff" * 32, 0x62A8AB43, 0xF909B029),
    (bytes(range(32)), 0x46DD794E, 0x951F7892),
  ],
)
def test_masked_crc32c_reference_values(data, crc, masked):
  rotated = ((crc >> 15) | (crc << 17)) & 0xFFFFFFFF
  assert (rotated + 0xA282EAD8) & 0xFFFFFFFF == masked  # The masking definition.
  assert tfr.masked_crc32c(data) == masked


def test_exact_byte_layout(tmp_path):
  path = tmp_path / "tiny.tfrecord"
  _write(path, [b"abc", b""])

  def frame(data: bytes) -> bytes:
    length = struct.pack("<Q", len(data))
    return (
      length
      + struct.pack("<I", tfr.masked_crc32c(length))
      + data
      + struct.pack("<I", tfr.masked_crc32c(data))
    )

  assert path.read_bytes() == frame(b"abc") + frame(b"")
  assert len(frame(b"abc")) == 8 + 4 + 3 + 4
  # CRC32C("") is 0, so an empty record's data CRC is the mask delta itself.
  assert path.read_bytes()[-4:] == struct.pack("<I", 0xA282EAD8)


def test_sharded_writer(tmp_path):
  out = tmp_path / "new" / "dir"
  records = _records(10)
  with tfr.ShardedWriter(out, "train", 3) as w:
    for r in records:
      w.write(r)
    assert os.listdir(out) == [] or all(n.endswith(".tmp") for n in os.listdir(out))
  names = [
    "train-00000-of-00003.tfrecord",
    "train-00001-of-00003.tfrecord",
    "train-00002-of-00003.tfrecord",
  ]
  assert sorted(os.listdir(out)) == names
  assert w.paths == [str(out / n) for n in names]
  assert tfr.list_shards(str(out)) == w.paths
  assert tfr.list_shards(str(out / "train-*")) == w.paths
  assert tfr.list_shards(w.paths[1]) == [w.paths[1]]
  shards = [list(tfr.iter_records(p)) for p in w.paths]
  assert [len(s) for s in shards] == [4, 3, 3]
  assert shards[1] == records[1::3]  # Round-robin.
  assert sorted(sum(shards, [])) == sorted(records)


def test_list_shards_nothing_matches(tmp_path):
  with pytest.raises(FileNotFoundError, match="nope-"):
    tfr.list_shards(str(tmp_path / "nope-*"))
  with pytest.raises(FileNotFoundError, match=str(tmp_path)):
    tfr.list_shards(str(tmp_path))


def _offsets(records) -> list[int]:
  """Byte offset where each record starts."""
  return np.cumsum([0] + [16 + len(r) for r in records])[:-1].tolist()


def test_corrupt_data_names_path_and_offset(tmp_path):
  path = tmp_path / "bad.tfrecord"
  records = [b"first", b"second record", b"third record data", b"fourth"]
  _write(path, records)
  raw = bytearray(path.read_bytes())
  third = _offsets(records)[2]
  raw[third + 12 + 5] ^= 0x01
  path.write_bytes(bytes(raw))
  with pytest.raises(tfr.TFRecordError, match="data CRC") as e:
    list(tfr.iter_records(path))
  assert e.value.offset == third and e.value.path == str(path)
  assert str(path) in str(e.value) and f"offset {third}" in str(e.value)
  # Without verification the flipped byte comes through.
  assert list(tfr.iter_records(path, verify=False))[2] != records[2]
  with pytest.raises(tfr.TFRecordError) as e:
    tfr.verify_file(path)
  assert e.value.offset == third
  # The header-only index does not see data corruption; read_record_at does.
  index = tfr.index_records(path)
  with open(path, "rb") as f, pytest.raises(tfr.TFRecordError) as e:
    tfr.read_record_at(f, str(path), *index[2])
  assert e.value.offset == third


def test_corrupt_length_field(tmp_path):
  path = tmp_path / "bad.tfrecord"
  records = [b"one", b"two", b"three"]
  _write(path, records)
  raw = bytearray(path.read_bytes())
  second = _offsets(records)[1]
  raw[second] ^= 0x40
  path.write_bytes(bytes(raw))
  for fn in (lambda p: list(tfr.iter_records(p)), tfr.index_records):
    with pytest.raises(tfr.TFRecordError, match="length CRC") as e:
      fn(path)
    assert e.value.offset == second


@pytest.mark.parametrize("cut", [3, 14, 20])  # Mid header, mid data, mid data CRC.
def test_truncated_file(tmp_path, cut):
  path = tmp_path / "cut.tfrecord"
  records = [b"a" * 10, b"b" * 10, b"c" * 10]
  _write(path, records)
  last = _offsets(records)[2]
  path.write_bytes(path.read_bytes()[: last + cut])
  for fn in (lambda p: list(tfr.iter_records(p, verify=False)), tfr.index_records):
    with pytest.raises(tfr.TFRecordError, match="truncated") as e:
      fn(path)
    assert e.value.offset == last
    assert str(path) in str(e.value)


def test_index_and_random_access(tmp_path):
  path = tmp_path / "a.tfrecord"
  records = _records(50, seed=1)
  _write(path, records)
  index = tfr.index_records(path)
  assert index.shape == (50, 2) and index.dtype == np.int64
  assert index[:, 1].tolist() == [len(r) for r in records]
  with open(path, "rb") as f:
    # Out of order, to exercise the seeks.
    got = {i: tfr.read_record_at(f, str(path), *index[i]) for i in reversed(range(50))}
  assert [got[i] for i in range(50)] == list(tfr.iter_records(path))


def test_writer_exception_leaves_no_file(tmp_path):
  path = tmp_path / "x.tfrecord"
  with pytest.raises(RuntimeError):
    with tfr.TFRecordWriter(path) as w:
      w.write(b"partial")
      raise RuntimeError("boom")
  assert os.listdir(tmp_path) == []

  _write(path, [b"old"])
  before = path.read_bytes()
  with pytest.raises(RuntimeError):
    with tfr.TFRecordWriter(path) as w:
      w.write(b"new")
      raise RuntimeError("boom")
  assert path.read_bytes() == before
  assert os.listdir(tmp_path) == ["x.tfrecord"]


def test_sharded_writer_exception_leaves_no_shards(tmp_path):
  with pytest.raises(RuntimeError):
    with tfr.ShardedWriter(tmp_path, "s", 4) as w:
      w.write(b"r")
      raise RuntimeError("boom")
  assert os.listdir(tmp_path) == []


def test_write_after_close_raises(tmp_path):
  w = tfr.TFRecordWriter(tmp_path / "a.tfrecord")
  w.close()
  with pytest.raises(ValueError, match="closed"):
    w.write(b"late")
