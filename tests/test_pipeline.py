"""grain pipelines: order, determinism, resume equality, per-process files, global arrays."""

import numpy as np
import pytest

from auteur_jax.data import examples, pipeline, tfrecord, video_io
from auteur_jax.data.schema import Clip, Story
from auteur_jax.data.tokenizer import train_bpe

NUM_SHARDS, PER_SHARD = 4, 12


def _clip_record(i: int, num_frames: int) -> bytes:
  frames = [
    video_io.encode_jpeg(np.full((16, 16, 3), (i * 7 + f) % 256, np.uint8))
    for f in range(num_frames)
  ]
  clip = Clip(f"c{i}", 0.0, 1.0, f"action {i}", f"caption number {i}")
  return examples.encode_clip(
    f"v{i}", clip, frames, 8.0, {"latents": np.full((2, 3), i, np.float32)}
  )


@pytest.fixture(scope="module")
def clip_files(tmp_path_factory):
  d = tmp_path_factory.mktemp("clips")
  with tfrecord.ShardedWriter(d, "clips", NUM_SHARDS) as w:
    for i in range(NUM_SHARDS * PER_SHARD):
      w.write(_clip_record(i, num_frames=3 + i % 4))
  return w.paths


def _ids(source: pipeline.ShuffledRecords, start: int, n: int) -> list[int]:
  return [int(examples.decode_clip(source[i])["video_id"][1:]) for i in range(start, start + n)]


def test_order_is_seeded_permutation_per_epoch(clip_files):
  n = NUM_SHARDS * PER_SHARD
  src = pipeline.ShuffledRecords(clip_files, seed=3, window=8)
  e0, e1 = _ids(src, 0, n), _ids(src, n, n)
  assert sorted(e0) == sorted(e1) == list(range(n))
  assert e0 != e1  # Reshuffled each epoch.
  assert e0 == _ids(pipeline.ShuffledRecords(clip_files, seed=3, window=8), 0, n)
  assert e0 != _ids(pipeline.ShuffledRecords(clip_files, seed=4, window=8), 0, n)
  # window=1: whole files in a shuffled order (records of one shard are i % 4 == shard).
  src1 = pipeline.ShuffledRecords(clip_files, seed=3, window=1)
  shards = [i % NUM_SHARDS for i in _ids(src1, 0, n)]
  runs = [shards[k * PER_SHARD : (k + 1) * PER_SHARD] for k in range(NUM_SHARDS)]
  assert all(len(set(r)) == 1 for r in runs) and sorted(r[0] for r in runs) == [0, 1, 2, 3]
  # No shuffle: file order then record order.
  assert _ids(pipeline.ShuffledRecords(clip_files, shuffle=False), 0, 5) == [0, 4, 8, 12, 16]


def test_files_for_process_are_disjoint(clip_files):
  a = pipeline.files_for_process(clip_files, 0, 2)
  b = pipeline.files_for_process(clip_files, 1, 2)
  assert not set(a) & set(b) and sorted(a + b) == sorted(clip_files)
  # What each simulated process reads over an epoch is disjoint, and together all.
  n = PER_SHARD * 2
  seen = [set(_ids(pipeline.ShuffledRecords(f, seed=0), 0, n)) for f in (a, b)]
  assert not seen[0] & seen[1] and len(seen[0] | seen[1]) == NUM_SHARDS * PER_SHARD
  with pytest.raises(ValueError, match="cannot be split between 8 processes"):
    pipeline.files_for_process(clip_files, 0, 8)


def _take(it, n):
  return [next(it) for _ in range(n)]


def _equal(xs, ys):
  assert len(xs) == len(ys)
  for x, y in zip(xs, ys):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])


# Two worker processes: integration.
@pytest.mark.parametrize("num_workers", [0, pytest.param(2, marks=pytest.mark.integration)])
def test_clip_batches_resume_equality(clip_files, num_workers):
  decoder = pipeline.ClipDecoder(num_frames=4, arrays=("latents",))
  kw = dict(seed=1, window=6, num_workers=num_workers)
  it = iter(pipeline.make_dataset(clip_files, decoder, 4, **kw))
  first = _take(it, 3)
  state = it.get_state()
  rest = _take(it, 14)  # Crosses the epoch boundary (48 records = 12 batches).
  batch = first[0]
  assert batch["frames"].shape == (4, 4, 16, 16, 3) and batch["frames"].dtype == np.uint8
  assert batch["latents"].shape == (4, 2, 3)
  # Clips of 3 frames repeat their last frame and mask it.
  for b in first + rest:
    for i in range(4):
      k = int(b["frame_mask"][i].sum())
      assert k in (3, 4)
      if k == 3:
        np.testing.assert_array_equal(b["frames"][i, 3], b["frames"][i, 2])
  it2 = iter(pipeline.make_dataset(clip_files, decoder, 4, **kw))
  it2.set_state(state)
  _equal(_take(it2, 14), rest)
  # Worker count does not change the batches.
  it0 = iter(pipeline.make_dataset(clip_files, decoder, 4, seed=1, window=6))
  _equal(_take(it0, 3), first)
  for i in (it, it2, it0):
    i.close()  # Stops worker processes now, not at interpreter exit.


def test_missing_array_is_named(clip_files):
  decoder = pipeline.ClipDecoder(num_frames=2, arrays=("visual_embedding",))
  with pytest.raises(KeyError, match="has no array 'visual_embedding'"):
    next(iter(pipeline.make_dataset(clip_files, decoder, 2)))


def test_story_batches(tmp_path):
  tok = train_bpe(
    ["chop the onion", "boil the water in the pot", "serve the soup"] * 20, vocab_size=300
  )
  stories = []
  for i in range(6):
    n = 2 + i % 3
    clips = tuple(
      Clip(f"c{j}", j, j + 1.0, f"chop the onion {j}", "the onion is on the board")
      for j in range(n)
    )
    stories.append(Story(f"v{i}", "toy_kitchen", "train", "onion soup", 10.0, 8.0, None, clips))
  with tfrecord.ShardedWriter(tmp_path, "stories", 2) as w:
    for s in stories:
      w.write(examples.encode_story(s, np.full((len(s.clips), 4, 8), 0.5, np.float32)))
  decoder = pipeline.StoryDecoder(
    tok, max_steps=3, max_action_tokens=8, max_caption_tokens=12, embedding_shape=(4, 8)
  )
  b = next(iter(pipeline.make_dataset(w.paths, decoder, 6, shuffle=False)))
  assert b["action_ids"].shape == (6, 3, 8) and b["caption_ids"].shape == (6, 3, 12)
  assert b["visual_embedding"].shape == (6, 3, 4, 8)
  steps = b["step_mask"].sum(1)
  assert sorted(steps.tolist()) == [2, 2, 3, 3, 3, 3]
  for i in range(6):
    s = steps[i]
    assert b["action_mask"][i, :s].any(1).all() and not b["action_mask"][i, s:].any()
    assert (b["visual_embedding"][i, :s] == 0.5).all() and (b["visual_embedding"][i, s:] == 0).all()
  assert tok.decode(b["action_ids"][0, 1][b["action_mask"][0, 1]]).strip() == "chop the onion 1"
  bad = pipeline.StoryDecoder(tok, max_steps=3, embedding_shape=(4, 9))
  with pytest.raises(ValueError, match=r"expected \(4, 9\)"):
    next(iter(pipeline.make_dataset(w.paths, bad, 2)))


def test_global_batches_on_mesh(clip_files):
  import jax
  from jax.sharding import AxisType

  mesh = jax.make_mesh((4, 2), ("data", "tensor"), axis_types=(AxisType.Auto,) * 2)
  ds = pipeline.make_dataset(clip_files, pipeline.ClipDecoder(num_frames=2), 8, seed=0)
  local = next(iter(ds))
  gb = pipeline.GlobalBatches(
    pipeline.make_dataset(clip_files, pipeline.ClipDecoder(2), 8), mesh, ("data", "fsdp")
  )
  batch = next(gb)
  x = batch["frames"]
  assert isinstance(x, jax.Array) and x.shape == (8, 2, 16, 16, 3)
  assert x.sharding.spec[0] in ("data", ("data",))
  assert {s.data.shape[0] for s in x.addressable_shards} == {2}
  np.testing.assert_array_equal(np.asarray(x), local["frames"])
  state = gb.get_state()
  after = next(gb)["frames"]
  gb.set_state(state)
  np.testing.assert_array_equal(np.asarray(next(gb)["frames"]), np.asarray(after))


def test_two_processes_read_disjoint_records(clip_files):
  """Two simulated JAX processes: one epoch each, disjoint, together every record once."""
  per_process = []
  for p in range(2):
    ds = pipeline.make_dataset(
      clip_files,
      pipeline.ClipDecoder(1, arrays=("latents",)),
      4,
      seed=5,
      num_epochs=1,
      process_index=p,
      process_count=2,
    )
    per_process.append([int(x) for b in ds for x in b["latents"][:, 0, 0]])
  a, b = per_process
  assert len(a) == len(b) == NUM_SHARDS * PER_SHARD // 2
  assert not set(a) & set(b) and sorted(a + b) == list(range(NUM_SHARDS * PER_SHARD))
  with pytest.raises(ValueError, match="does not divide between 2 processes"):
    pipeline.make_dataset(clip_files, pipeline.ClipDecoder(1), 5, process_count=2)
