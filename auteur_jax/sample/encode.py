"""`auteur encode`: add VAE latents or visual embeddings to built clip TFRecords.

  auteur encode --config toy/vae    # latents          [t, h, w, z]
  auteur encode --config toy/clip   # visual_embedding [K, D]

Reads IN/<split>/clips-*.tfrecord (as written by `auteur data build`, or by an earlier
encode pass: passes chain, each keeps the arrays already there), runs the encoder of
`config.task` (sample/encoders.py) in batches of config.encode.batch_size over this
process's devices, and writes OUT/<split>/clips-*.tfrecord with the same records plus
the new array. Story shards are copied; a visual-embedding pass also gives each story
its steps' embeddings [num_steps, K, D] (matched to clips by video id and times).

Inputs: the VAE sees the clip's centred window of config.encode.num_frames frames
(1 + 4k; short clips repeat their last frame, as data/pipeline.ClipDecoder does); the
vision tower sees the keyframe (the frame at the clip's keyframe_time).

Resumable by shard: each output shard appears atomically when complete, and a rerun
skips shards that exist. One input shard's records are held in memory at a time. With
several processes, process i takes every i-th shard; story shards and OUT/dataset.json
(the input's, plus an `encoded` entry per array) are written once every clip shard
exists, by whichever run sees that (process 0 writes dataset.json; if another process
finished last, a rerun writes it, skipping all the work).

IN and OUT may be URIs (gs://...): every file goes through auteur_jax/paths.py (a shard
appears whole when its temporary object is renamed into place).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
from collections.abc import Iterator
from typing import BinaryIO

import jax
import ml_collections
import numpy as np
import tqdm

from auteur_jax import paths
from auteur_jax.config import ConfigError
from auteur_jax.config_sections import from_section
from auteur_jax.data import examples, pipeline, tfrecord, video_io
from auteur_jax.data.keyframes import index_clips
from auteur_jax.data.schema import Clip, Story
from auteur_jax.parallel import distributed
from auteur_jax.parallel.mesh import batch_axes, make_mesh
from auteur_jax.sample.encoders import Encoder, make_encoder


def _record_clip(ex: dict) -> Clip:
  return Clip(
    ex["clip_id"], ex["start"], ex["end"], ex["action"], ex["caption"], ex["keyframe_time"]
  )


def _record_story(s: dict) -> Story:
  """The Story a decoded story record describes (what encode_story stores of it)."""
  clips = tuple(
    Clip(str(i), a, b, act, cap)
    for i, (a, b, act, cap) in enumerate(zip(s["start"], s["end"], s["actions"], s["captions"]))
  )
  return Story(
    s["video_id"],
    s["source"],
    s["split"],
    s["task"],
    duration=max(s["end"]),
    fps=None,
    video_path=None,
    clips=clips,
  )


def keyframe_index(ex: dict) -> int:
  """Index of the clip's keyframe among its frames (sampled at ex['fps'] from its start)."""
  i = int(round((ex["keyframe_time"] - ex["start"]) * ex["fps"]))
  return min(max(i, 0), len(ex["frames"]) - 1)


def _inputs(enc: Encoder, record: bytes, where: str, num_frames: int) -> np.ndarray:
  if enc.inputs == "clip":
    return pipeline.ClipDecoder(num_frames)(record)["frames"]
  ex = examples.decode_clip(record, where)
  return video_io.decode_jpeg(ex["frames"][keyframe_index(ex)])


def _batches(n: int, size: int) -> Iterator[range]:
  for start in range(0, n, size):
    yield range(start, min(start + size, n))


def encode_shard(
  enc: Encoder,
  src: str,
  dst: str,
  batch_size: int,
  num_frames: int,
  dtype: str,
  bar: tqdm.tqdm | None = None,
) -> int:
  """Writes `dst`: every record of `src` with `enc.field` added. Returns the record count.

  The batch is padded to batch_size (repeating its last clip) so that one compiled
  program serves every batch.
  """
  records = list(tfrecord.iter_records(src))
  with tfrecord.TFRecordWriter(dst) as writer:
    for rows in _batches(len(records), batch_size):
      where = [f"{src}: record {i}" for i in rows]
      batch = [_inputs(enc, records[i], w, num_frames) for i, w in zip(rows, where)]
      shapes = {b.shape for b in batch}
      if len(shapes) > 1:
        raise ValueError(
          f"{src}: records {rows.start}..{rows.stop - 1} have frames of "
          f"different sizes {sorted(shapes)}; rebuild the data set with one "
          "frame size"
        )
      batch += [batch[-1]] * (batch_size - len(batch))
      out = enc.run(np.stack(batch))[: len(rows)].astype(dtype)
      for i, w, arr in zip(rows, where, out):
        ex = examples.decode_clip(records[i], w)
        arrays = {k: ex[k] for k in examples.ARRAY_FIELDS if k in ex}
        arrays[enc.field] = arr
        writer.write(
          examples.encode_clip(ex["video_id"], _record_clip(ex), ex["frames"], ex["fps"], arrays)
        )
      if bar is not None:
        bar.update(len(rows))
  return len(records)


def _copy_atomic(src: str, dst: str) -> None:
  """Copies a file so that `dst` appears whole: locally a temporary file + rename; on an
  object store one upload (an object appears when its writer closes)."""
  if paths.is_uri(src) or paths.is_uri(dst):
    with paths.open_file(src, "rb") as f, paths.open_file(dst, "wb") as g:
      shutil.copyfileobj(f, g, 1 << 22)
    return
  tmp = f"{dst}.{os.getpid()}.tmp"
  shutil.copyfile(src, tmp)
  os.replace(tmp, dst)


def write_story_shard(src: str, dst: str, clip_index: dict, field: str) -> None:
  """Copies the stories of `src` to `dst` with each step's clip array (field) stacked."""
  handles: dict[str, BinaryIO] = {}
  try:
    with tfrecord.TFRecordWriter(dst) as writer:
      for n, record in enumerate(tfrecord.iter_records(src)):
        story = examples.decode_story(record, f"{src}: record {n}")
        steps = []
        for start, end in zip(story["start"], story["end"]):
          key = (story["video_id"], np.float32(start), np.float32(end))
          if key not in clip_index:
            raise ValueError(
              f"{src}: story {story['video_id']} has a step [{start}, {end}) "
              "s with no clip record in the encoded clip shards"
            )
          path, offset, length = clip_index[key]
          f = handles.get(path) or handles.setdefault(path, tfrecord.open_shard(path))
          clip = examples.decode_clip(tfrecord.read_record_at(f, path, offset, length), path)
          steps.append(clip[field])
        writer.write(examples.encode_story(_record_story(story), np.stack(steps)))
  finally:
    for f in handles.values():
      f.close()


@dataclasses.dataclass(frozen=True)
class EncodeConfig:
  """`config.encode`: clip TFRecords in_dir -> out_dir plus one array, in batches of
  batch_size (a multiple of the devices that split it); num_frames: the centred window a
  clip-input encoder (the VAE) sees; dtype: stored; seed: random weights when no init
  is set (sample/encoders.py)."""

  in_dir: str
  out_dir: str
  splits: tuple[str, ...]  # () = every split of in_dir/dataset.json.
  batch_size: int
  num_frames: int
  dtype: str
  seed: int

  def validate(self) -> None:
    if self.batch_size < 1 or self.num_frames < 1:
      raise ValueError(
        f"batch_size and num_frames must be >= 1, got {self.batch_size}, {self.num_frames}"
      )
    try:
      jax.numpy.dtype(self.dtype)
    except TypeError:
      raise ValueError(f"dtype: not a dtype: {self.dtype!r}") from None


def encode_dataset(
  config: ml_collections.ConfigDict, *, progress: bool = True, max_shards: int | None = None
) -> dict:
  """Runs the encode job of `config` (see the module docstring); returns a summary.

  max_shards: stop after encoding this many clip shards (the rest on a later run).
  """
  if config.get("distributed") is not None:  # Several processes: each takes its shards.
    distributed.initialize(config.distributed)
  e = from_section(EncodeConfig, config.encode, "config.encode")
  in_dir, out_dir = e.in_dir, e.out_dir
  if paths.absolute(in_dir) == paths.absolute(out_dir):
    raise ConfigError("config.encode.out_dir must differ from in_dir (shards are rewritten)")
  meta_path = paths.join(in_dir, "dataset.json")
  if not paths.is_file(meta_path):
    raise FileNotFoundError(
      f"{meta_path}: not found; is config.encode.in_dir={in_dir} a "
      "folder written by `auteur data build`?"
    )
  with paths.open_file(meta_path) as f:
    meta = json.load(f)
  splits = list(e.splits) or sorted(meta["splits"])
  unknown = sorted(set(splits) - set(meta["splits"]))
  if unknown:
    raise ConfigError(
      f"config.encode.splits: {unknown} not in {meta_path} (has {sorted(meta['splits'])})"
    )
  mesh = make_mesh(dict(config.mesh.shape), jax.local_devices())
  axes = batch_axes(mesh, config.mesh.batch_axes)
  splits_over = math.prod(mesh.shape[a] for a in axes)
  if e.batch_size % splits_over:
    raise ConfigError(
      f"config.encode.batch_size={e.batch_size} must be a multiple of "
      f"{splits_over} (the mesh's batch axes {axes})"
    )
  enc = make_encoder(config, mesh)
  pi, pc = jax.process_index(), jax.process_count()
  done, skipped, budget = 0, 0, max_shards
  for split in splits:
    paths.makedirs(paths.join(out_dir, split))
    clips = pipeline.files_for_process(pipeline.split_files(in_dir, split, "clips"), pi, pc)
    todo = [p for p in clips if not paths.exists(_out(p, in_dir, out_dir))]
    skipped += len(clips) - len(todo)
    if budget is not None:
      todo = todo[:budget]
      budget -= len(todo)
    total = sum(len(tfrecord.index_records(p)) for p in todo)
    with tqdm.tqdm(
      total=total, desc=f"encode {enc.field} {split}", unit="clip", disable=not progress
    ) as bar:
      for path in todo:
        encode_shard(
          enc, path, _out(path, in_dir, out_dir), e.batch_size, e.num_frames, e.dtype, bar
        )
        done += 1
  outs = [
    _out(p, in_dir, out_dir) for s in splits for p in pipeline.split_files(in_dir, s, "clips")
  ]
  complete = all(paths.exists(p) for p in outs)
  if complete:
    _finish(enc, meta, in_dir, out_dir, splits, pi, pc)
  shape, dtype = None, None
  for path in (p for p in outs if paths.exists(p)):  # Describe one written record.
    for record in tfrecord.iter_records(path):
      arr = examples.decode_clip(record, path)[enc.field]
      shape, dtype = tuple(arr.shape), str(arr.dtype)
      break
    if shape is not None:
      break
  return {
    "encoded_shards": done,
    "skipped_shards": skipped,
    "complete": complete,
    "field": enc.field,
    "out_dir": out_dir,
    "shape": shape,
    "dtype": dtype,
  }


def _out(path: str, in_dir: str, out_dir: str) -> str:
  """The output path of the input shard `path` (the same place under out_dir)."""
  return paths.join(out_dir, paths.relative(path, in_dir))


def _finish(
  enc: Encoder, meta: dict, in_dir: str, out_dir: str, splits: list[str], pi: int, pc: int
) -> None:
  """Story shards (copied, or with embeddings) and dataset.json, once all clips exist."""
  for split in splits:
    stories = pipeline.files_for_process(pipeline.split_files(in_dir, split, "stories"), pi, pc)
    todo = [p for p in stories if not paths.exists(_out(p, in_dir, out_dir))]
    if not todo:
      continue
    if enc.inputs == "keyframe":
      index = index_clips(pipeline.split_files(out_dir, split, "clips"))
      for p in todo:
        write_story_shard(p, _out(p, in_dir, out_dir), index, enc.field)
    else:
      for p in todo:
        _copy_atomic(p, _out(p, in_dir, out_dir))
  if pi != 0:
    return
  meta = dict(
    meta,
    encoded={**meta.get("encoded", {}), enc.field: enc.description},
    source_dir=paths.absolute(in_dir),
  )
  paths.write_atomic(paths.join(out_dir, "dataset.json"), json.dumps(meta, indent=1))
