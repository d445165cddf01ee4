"""Clip and Story records as serialized `tf.train.Example` protos (TFRecord payloads).

Clip example (one per clip, for the video models): `video_id`, `clip_id`, `start`,
`end`, `fps`, `keyframe_time` (seconds), `caption`, `action`, `frames` (one JPEG per
frame) and optional arrays. Story example (one per video, for the director): `video_id`,
`task`, `source`, `split`, per-step lists `action`, `caption`, `start`, `end`,
`num_steps` and an optional `visual_embedding` [num_steps, K, D].

An array NAME is stored as three features: NAME (raw little-endian bytes, C order),
NAME_shape (int64 list) and NAME_dtype (numpy dtype name, e.g. "bfloat16"). Strings are
UTF-8; floats are float32 as tf.train.FloatList holds them. Every example carries
`schema_version`; readers refuse versions newer than SCHEMA_VERSION.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import ml_dtypes  # noqa: F401  (registers bfloat16 & co. as numpy dtype names)
import numpy as np
from google.protobuf import message
from tensorflow_datasets.proto import tf_example_pb2

from auteur_jax.data.schema import Clip, Story

SCHEMA_VERSION = 1
ARRAY_FIELDS = ("latents", "visual_embedding", "text_embedding")
_STORY_ARRAY = "visual_embedding"


class ExampleError(ValueError):
  """A record is not a valid Clip / Story example; the message names where and why."""


# ---------------------------------------------------------------------------- writing


def _set(feats, key: str, kind: str, values: Sequence[Any]) -> None:
  lst = getattr(feats[key], kind)
  lst.SetInParent()  # Marks the kind even for an empty list.
  lst.value.extend(values)


def _set_bytes(feats, key: str, values: Sequence[bytes | str]) -> None:
  _set(feats, key, "bytes_list", [v.encode("utf-8") if isinstance(v, str) else v for v in values])


def _storable(dt: np.dtype) -> bool:
  """Numbers, or ml_dtypes types (kind V) such as bfloat16; no objects or raw voids."""
  return dt.kind in "biufc" or (dt.kind == "V" and dt.type is not np.void)


def _put_array(feats, name: str, array: np.ndarray) -> None:
  """Stores `array` as NAME (raw bytes), NAME_shape and NAME_dtype."""
  array = np.asarray(array)
  if not _storable(array.dtype):
    raise ExampleError(
      f"array {name!r}: dtype {array.dtype} cannot be stored; "
      "expected a numeric dtype such as float32 or bfloat16"
    )
  if array.dtype.byteorder == ">":  # Stored little-endian, like every TPU / GPU host.
    array = array.astype(array.dtype.newbyteorder("<"))
  _set(feats, name, "bytes_list", [np.ascontiguousarray(array).tobytes()])
  _set(feats, f"{name}_shape", "int64_list", array.shape)
  _set_bytes(feats, f"{name}_dtype", [array.dtype.name])


def encode_clip(
  video_id: str,
  clip: Clip,
  frames: Sequence[bytes],
  fps: float,
  arrays: Mapping[str, np.ndarray] | None = None,
) -> bytes:
  """Serializes one clip.

  Args:
    video_id: the clip's video.
    clip: times in seconds; its keyframe (middle unless set) is stored resolved.
    frames: encoded JPEG bytes, one per sampled frame (encoding is the caller's job).
    fps: frame rate of `frames` (> 0).
    arrays: optional arrays by name, each in ARRAY_FIELDS: `latents` (VAE latents),
      `visual_embedding` [K, D] keyframe tokens, `text_embedding` [L, D].
  """
  arrays = dict(arrays or {})
  unknown = sorted(set(arrays) - set(ARRAY_FIELDS))
  if unknown:
    raise ExampleError(
      f"clip {video_id}/{clip.clip_id}: unknown arrays {unknown}; allowed: {list(ARRAY_FIELDS)}"
    )
  if not fps > 0:
    raise ExampleError(f"clip {video_id}/{clip.clip_id}: fps must be > 0, got {fps}")
  for i, fr in enumerate(frames):
    if not isinstance(fr, (bytes, bytearray, memoryview)):
      raise ExampleError(
        f"clip {video_id}/{clip.clip_id}: frames[{i}] must be encoded "
        f"JPEG bytes, got {type(fr).__name__}"
      )

  ex = tf_example_pb2.Example()
  feats = ex.features.feature
  for key, v in (
    ("video_id", video_id),
    ("clip_id", clip.clip_id),
    ("caption", clip.caption),
    ("action", clip.action),
  ):
    _set_bytes(feats, key, [v])
  for key, x in (
    ("start", clip.start),
    ("end", clip.end),
    ("fps", fps),
    ("keyframe_time", clip.keyframe),
  ):
    _set(feats, key, "float_list", [x])
  _set(feats, "frames", "bytes_list", [bytes(fr) for fr in frames])
  for name, arr in arrays.items():
    _put_array(feats, name, arr)
  _set(feats, "schema_version", "int64_list", [SCHEMA_VERSION])
  return ex.SerializeToString(deterministic=True)  # Features in key order, in any process.


def encode_story(story: Story, visual_embeddings: np.ndarray | None = None) -> bytes:
  """Serializes one story; `visual_embeddings` [num_steps, K, D] are the steps' z_t."""
  n = len(story.clips)
  if visual_embeddings is not None:
    shape = np.shape(visual_embeddings)
    if len(shape) != 3 or shape[0] != n:
      raise ExampleError(
        f"story {story.video_id}: visual_embeddings must have shape "
        f"[num_steps={n}, K, D], got {list(shape)}"
      )

  ex = tf_example_pb2.Example()
  feats = ex.features.feature
  for key in ("video_id", "task", "source", "split"):
    _set_bytes(feats, key, [getattr(story, key)])
  _set_bytes(feats, "action", [c.action for c in story.clips])
  _set_bytes(feats, "caption", [c.caption for c in story.clips])
  _set(feats, "start", "float_list", [c.start for c in story.clips])
  _set(feats, "end", "float_list", [c.end for c in story.clips])
  _set(feats, "num_steps", "int64_list", [n])
  if visual_embeddings is not None:
    _put_array(feats, _STORY_ARRAY, visual_embeddings)
  _set(feats, "schema_version", "int64_list", [SCHEMA_VERSION])
  return ex.SerializeToString(deterministic=True)  # Features in key order, in any process.


# ---------------------------------------------------------------------------- reading


def _parse(data: bytes, where: str):
  try:
    ex = tf_example_pb2.Example.FromString(data)
  except message.DecodeError as e:
    raise ExampleError(f"{where}: not a tf.train.Example ({e})") from None
  feats = ex.features.feature
  version = _scalar(feats, "schema_version", "int64_list", where)
  if not 1 <= version <= SCHEMA_VERSION:
    raise ExampleError(
      f"{where}: schema_version {version} is not supported; this "
      f"auteur_jax reads versions 1..{SCHEMA_VERSION} (newer files "
      "need a newer auteur_jax)"
    )
  return feats, version


def describe(data: bytes, where: str = "<record>") -> dict[str, tuple[str, int, int]]:
  """Any tf.train.Example (ours or not): feature name -> (kind "bytes" | "float" |
  "int64", number of values, bytes of payload: the bytes values' lengths, else 4 / 8
  per value)."""
  try:
    ex = tf_example_pb2.Example.FromString(data)
  except message.DecodeError as e:
    raise ExampleError(f"{where}: not a tf.train.Example ({e})") from None
  out = {}
  for name, f in sorted(ex.features.feature.items()):
    kind = f.WhichOneof("kind") or "empty"
    if kind == "bytes_list":
      vals = list(f.bytes_list.value)
      out[name] = ("bytes", len(vals), sum(len(v) for v in vals))
    elif kind == "float_list":
      out[name] = ("float", len(f.float_list.value), 4 * len(f.float_list.value))
    elif kind == "int64_list":
      out[name] = ("int64", len(f.int64_list.value), 8 * len(f.int64_list.value))
    else:
      out[name] = ("empty", 0, 0)
  return out


def _values(feats, key: str, kind: str, where: str) -> list:
  if key not in feats:
    raise ExampleError(f"{where}: missing feature {key!r}")
  have = feats[key].WhichOneof("kind")
  if have not in (kind, None):  # None: an empty feature, read as an empty list.
    raise ExampleError(f"{where}: feature {key!r} must be a {kind}, got {have}")
  return list(getattr(feats[key], kind).value)


def _scalar(feats, key: str, kind: str, where: str):
  v = _values(feats, key, kind, where)
  if len(v) != 1:
    raise ExampleError(f"{where}: feature {key!r} must hold 1 value, got {len(v)}")
  return v[0]


def _text(feats, key: str, where: str) -> str:
  return _strings(feats, key, where, n=1)[0]


def _strings(feats, key: str, where: str, n: int | None = None) -> list[str]:
  raw = _values(feats, key, "bytes_list", where)
  if n is not None and len(raw) != n:
    raise ExampleError(f"{where}: feature {key!r} must hold {n} values, got {len(raw)}")
  try:
    return [b.decode("utf-8") for b in raw]
  except UnicodeDecodeError as e:
    raise ExampleError(f"{where}: feature {key!r} is not valid UTF-8 ({e})") from None


def _get_array(feats, name: str, where: str) -> np.ndarray:
  """Inverse of _put_array; a read-only view of the record's bytes."""
  raw = _scalar(feats, name, "bytes_list", where)
  shape = tuple(_values(feats, f"{name}_shape", "int64_list", where))
  dtype_name = _text(feats, f"{name}_dtype", where)
  try:
    dtype = np.dtype(dtype_name)
  except TypeError:
    dtype = None
  if dtype is None or not _storable(dtype):
    raise ExampleError(
      f"{where}: array {name!r} has unsupported dtype {dtype_name!r}; "
      "expected a numeric numpy / ml_dtypes name such as 'float32'"
    )
  if any(d < 0 for d in shape):
    raise ExampleError(f"{where}: array {name!r} has a negative dimension in {list(shape)}")
  expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
  if len(raw) != expected:
    raise ExampleError(
      f"{where}: array {name!r} holds {len(raw)} bytes, but shape "
      f"{list(shape)} of {dtype_name} needs {expected}"
    )
  return np.frombuffer(raw, dtype=dtype.newbyteorder("<")).reshape(shape)


def decode_clip(data: bytes, where: str = "<record>") -> dict[str, Any]:
  """Parses a clip example (see encode_clip); `where` names the record in errors.

  Returns a dict with video_id, clip_id, caption, action (str), start, end, fps,
  keyframe_time (float, seconds), frames (list of JPEG bytes), schema_version (int),
  and each stored array of ARRAY_FIELDS as a read-only np.ndarray.
  """
  feats, version = _parse(data, where)
  out: dict[str, Any] = {
    k: _text(feats, k, where) for k in ("video_id", "clip_id", "caption", "action")
  }
  for k in ("start", "end", "fps", "keyframe_time"):
    out[k] = float(_scalar(feats, k, "float_list", where))
  out["frames"] = _values(feats, "frames", "bytes_list", where)
  out["schema_version"] = version
  for name in ARRAY_FIELDS:
    if name in feats:
      out[name] = _get_array(feats, name, where)
  return out


def decode_story(data: bytes, where: str = "<record>") -> dict[str, Any]:
  """Parses a story example (see encode_story); `where` names the record in errors.

  Returns a dict with video_id, task, source, split (str), actions, captions
  (list[str]), start, end (list[float], seconds), num_steps, schema_version (int), and
  visual_embedding [num_steps, K, D] (read-only np.ndarray) if stored.
  """
  feats, version = _parse(data, where)
  n = int(_scalar(feats, "num_steps", "int64_list", where))
  out: dict[str, Any] = {k: _text(feats, k, where) for k in ("video_id", "task", "source", "split")}
  out["actions"] = _strings(feats, "action", where, n)
  out["captions"] = _strings(feats, "caption", where, n)
  for k in ("start", "end"):
    v = [float(x) for x in _values(feats, k, "float_list", where)]
    if len(v) != n:
      raise ExampleError(f"{where}: feature {k!r} must hold num_steps={n} values, got {len(v)}")
    out[k] = v
  out["num_steps"] = n
  out["schema_version"] = version
  if _STORY_ARRAY in feats:
    emb = _get_array(feats, _STORY_ARRAY, where)
    if emb.ndim != 3 or emb.shape[0] != n:
      raise ExampleError(
        f"{where}: {_STORY_ARRAY!r} must have shape [num_steps={n}, K, D], got {list(emb.shape)}"
      )
    out[_STORY_ARRAY] = emb
  return out
