"""Tests for auteur_jax.data.examples: Clip / Story <-> tf.train.Example."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from tensorflow_datasets.proto import tf_example_pb2

from auteur_jax.data import examples as ex
from auteur_jax.data.schema import Clip, Story

CLIP = Clip(
  clip_id="c1",
  start=1.5,
  end=4.25,
  action="Chop the onion.",
  caption="A knife slices a white onion on a wooden board — quickly.",
)


def _story(n: int = 3) -> Story:
  clips = tuple(
    Clip(
      clip_id=f"c{i}",
      start=2.0 * i,
      end=2.0 * i + 1.5,
      action=f"step {i}",
      caption=f"caption {i} ✓",
    )
    for i in range(n)
  )
  return Story(
    video_id="vid",
    source="toy_kitchen",
    split="train",
    task="Onion soup",
    duration=2.0 * n,
    fps=24.0,
    video_path=None,
    clips=clips,
  )


def _drop(data: bytes, key: str) -> bytes:
  proto = tf_example_pb2.Example.FromString(data)
  del proto.features.feature[key]
  return proto.SerializeToString()


def _replace_int(data: bytes, key: str, value: int) -> bytes:
  proto = tf_example_pb2.Example.FromString(data)
  lst = proto.features.feature[key].int64_list.value
  del lst[:]
  lst.append(value)
  return proto.SerializeToString()


def test_clip_round_trip_with_arrays():
  rng = np.random.default_rng(0)
  arrays = {
    "latents": rng.normal(size=(4, 8, 8, 16)).astype(np.float32),
    "visual_embedding": rng.normal(size=(64, 32)).astype(np.float16),
    "text_embedding": rng.normal(size=(7, 32)).astype(ml_dtypes.bfloat16),
  }
  frames = [b"\xff\xd8jpeg0\xff\xd9", b"", bytes(range(256))]
  d = ex.decode_clip(ex.encode_clip("vid", CLIP, frames, fps=8.0, arrays=arrays))
  assert d["video_id"] == "vid" and d["clip_id"] == "c1"
  assert d["caption"] == CLIP.caption and d["action"] == CLIP.action
  assert (d["start"], d["end"], d["fps"]) == (1.5, 4.25, 8.0)
  assert d["keyframe_time"] == pytest.approx(CLIP.keyframe)
  assert d["frames"] == frames
  assert d["schema_version"] == ex.SCHEMA_VERSION
  for name, a in arrays.items():
    assert d[name].dtype == a.dtype and d[name].shape == a.shape, name
    np.testing.assert_array_equal(d[name].view(np.uint8), a.view(np.uint8))


def test_clip_without_arrays_and_scalar_array():
  d = ex.decode_clip(ex.encode_clip("vid", CLIP, [], fps=2.0))
  assert d["frames"] == [] and not set(ex.ARRAY_FIELDS) & set(d)
  d = ex.decode_clip(ex.encode_clip("vid", CLIP, [], 2.0, {"latents": np.int32(7)}))
  assert d["latents"].shape == () and d["latents"] == 7


def test_clip_non_contiguous_array():
  a = np.arange(24, dtype=np.float32).reshape(4, 6).T  # Fortran order.
  d = ex.decode_clip(ex.encode_clip("vid", CLIP, [], 2.0, {"latents": a}))
  np.testing.assert_array_equal(d["latents"], a)


def test_story_round_trip():
  story = _story(3)
  emb = np.random.default_rng(1).normal(size=(3, 4, 8)).astype(ml_dtypes.bfloat16)
  for embeddings in (None, emb):
    d = ex.decode_story(ex.encode_story(story, embeddings))
    assert (d["video_id"], d["task"], d["source"], d["split"]) == (
      "vid",
      "Onion soup",
      "toy_kitchen",
      "train",
    )
    assert d["actions"] == [c.action for c in story.clips]
    assert d["captions"] == [c.caption for c in story.clips]
    assert d["start"] == [c.start for c in story.clips]
    assert d["end"] == [c.end for c in story.clips]
    assert d["num_steps"] == 3 and d["schema_version"] == ex.SCHEMA_VERSION
    if embeddings is None:
      assert "visual_embedding" not in d
    else:
      assert d["visual_embedding"].dtype == emb.dtype
      np.testing.assert_array_equal(
        d["visual_embedding"].astype(np.float32), emb.astype(np.float32)
      )


def test_story_embedding_steps_must_match():
  with pytest.raises(ex.ExampleError, match=r"num_steps=3"):
    ex.encode_story(_story(3), np.zeros((2, 4, 8), np.float32))


def test_story_inconsistent_lengths():
  proto = tf_example_pb2.Example.FromString(ex.encode_story(_story(3)))
  proto.features.feature["caption"].bytes_list.value.pop()
  with pytest.raises(ex.ExampleError, match=r"shard-7:12.*'caption'.*3.*2"):
    ex.decode_story(proto.SerializeToString(), where="shard-7:12")


@pytest.mark.parametrize("key", ["caption", "frames", "fps", "schema_version", "latents_shape"])
def test_clip_missing_feature(key):
  data = ex.encode_clip("vid", CLIP, [b"j"], 2.0, {"latents": np.zeros(3, np.float32)})
  with pytest.raises(ex.ExampleError, match=f"file.tfrecord#4.*missing.*'{key}'"):
    ex.decode_clip(_drop(data, key), where="file.tfrecord#4")


def test_story_missing_feature():
  with pytest.raises(ex.ExampleError, match="missing feature 'task'"):
    ex.decode_story(_drop(ex.encode_story(_story()), "task"))


def test_wrong_array_byte_size():
  data = ex.encode_clip("vid", CLIP, [], 2.0, {"latents": np.zeros((2, 3), np.float32)})
  proto = tf_example_pb2.Example.FromString(data)
  proto.features.feature["latents_dtype"].bytes_list.value[0] = b"float64"
  with pytest.raises(ex.ExampleError, match=r"'latents' holds 24 bytes.*needs 48"):
    ex.decode_clip(proto.SerializeToString())


def test_unknown_array_name():
  with pytest.raises(ex.ExampleError, match="unknown arrays.*'depth'.*latents"):
    ex.encode_clip("vid", CLIP, [], 2.0, {"depth": np.zeros(3)})


def test_unstorable_dtype():
  with pytest.raises(ex.ExampleError, match="cannot be stored"):
    ex.encode_clip("vid", CLIP, [], 2.0, {"latents": np.array(["a", "b"])})


def test_frames_must_be_bytes():
  with pytest.raises(ex.ExampleError, match=r"frames\[1\]"):
    ex.encode_clip("vid", CLIP, [b"ok", np.zeros((2, 2, 3), np.uint8)], 2.0)


def test_newer_schema_version_refused():
  newer = ex.SCHEMA_VERSION + 1
  for data, decode in (
    (ex.encode_clip("vid", CLIP, [], 2.0), ex.decode_clip),
    (ex.encode_story(_story()), ex.decode_story),
  ):
    with pytest.raises(ex.ExampleError, match=f"schema_version {newer}"):
      decode(_replace_int(data, "schema_version", newer))


def test_not_an_example():
  with pytest.raises(ex.ExampleError, match="rec#0: not a tf.train.Example"):
    ex.decode_clip(b"\xff\xff\xff garbage", where="rec#0")


@pytest.mark.parametrize("dtype", [b"object", b"no_such_type"])
def test_bad_stored_dtype(dtype):
  data = ex.encode_clip("vid", CLIP, [], 2.0, {"latents": np.zeros(2, np.float32)})
  proto = tf_example_pb2.Example.FromString(data)
  proto.features.feature["latents_dtype"].bytes_list.value[0] = dtype
  with pytest.raises(ex.ExampleError, match=f"'latents'.*unsupported dtype '{dtype.decode()}'"):
    ex.decode_clip(proto.SerializeToString())
