"""grain pipelines: clip batches (for the video DiT) and story batches (for the director;
with each step's keyframe latent, data/keyframes.py, for the keyframe renderer).

Read order (deterministic for a seed): each JAX process takes every `process_count`-th
shard file, so no two processes read the same file. Per epoch the process's files are
shuffled, their records concatenated, and the records shuffled again inside windows of
`window` consecutive records (file locality with a local shuffle, as on a pod where each
host streams its own files). The order is a pure function of (seed, epoch, index), so a
grain iterator's state is just a position: restoring it gives exactly the batches that
would have followed, with any number of worker processes.

Batches are dicts of numpy arrays with a leading per-process batch axis; `GlobalBatches`
turns them into global `jax.Array`s sharded over the mesh's batch axes.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import grain
import numpy as np

from auteur_jax.config import ConfigError
from auteur_jax.config_sections import from_section
from auteur_jax.data import examples, inventory, keyframes, tfrecord, video_io
from auteur_jax.data.tokenizer import Tokenizer
from auteur_jax.paths import join as join_path  # As `join_path`: `paths` names lists here.


def files_for_process(paths: Sequence[str], process_index: int, process_count: int) -> list[str]:
  """This process's shard files: every `process_count`-th file, starting at its index."""
  paths = sorted(paths)
  if len(paths) < process_count:
    raise ValueError(
      f"{len(paths)} shard files cannot be split between {process_count} "
      f"processes; rebuild with at least {process_count} shards"
    )
  return paths[process_index::process_count]


class ShuffledRecords:
  """Random-access source over TFRecord files in the seeded file+window order above.

  Index i of the source is record `order(i // n)[i % n]` of epoch i // n (n records).
  Records are read by offset (from an index of headers built here) and CRC-checked.
  """

  def __init__(
    self,
    paths: Sequence[str],
    seed: int = 0,
    window: int = 1024,
    shuffle: bool = True,
    num_epochs: int | None = None,
  ):
    self.paths = list(paths)
    self.seed, self.window, self.shuffle, self.num_epochs = seed, window, shuffle, num_epochs
    index = [tfrecord.index_records(p) for p in self.paths]
    self._file = np.concatenate(
      [np.full(len(ix), i, np.int32) for i, ix in enumerate(index)] or [np.zeros(0, np.int32)]
    )
    self._offset = np.concatenate(
      [ix.reshape(-1, 2) for ix in index] or [np.zeros((0, 2), np.int64)]
    )
    self._first = np.cumsum([0] + [len(ix) for ix in index])  # First record of each file.
    self.num_records = len(self._file)
    if self.num_records == 0:
      raise ValueError(f"no records in {self.paths}")
    self._handles: dict[int, Any] = {}
    self._cached_epoch: int = -1
    self._cached_order: np.ndarray | None = None

  def order(self, epoch: int) -> np.ndarray:
    """Record ids of `epoch` in read order: files shuffled, then windows shuffled."""
    if epoch == self._cached_epoch and self._cached_order is not None:
      return self._cached_order
    if not self.shuffle:
      order = np.arange(self.num_records)
    else:
      rng = np.random.default_rng([self.seed, epoch])
      files = rng.permutation(len(self.paths))
      order = np.concatenate([np.arange(self._first[f], self._first[f + 1]) for f in files])
      for s in range(0, len(order), self.window):
        order[s : s + self.window] = rng.permutation(order[s : s + self.window])
    self._cached_epoch, self._cached_order = epoch, order
    return order

  def __len__(self) -> int:
    return sys.maxsize if self.num_epochs is None else self.num_records * self.num_epochs

  def __getitem__(self, index: int) -> bytes:
    epoch, pos = divmod(int(index), self.num_records)
    rec = self.order(epoch)[pos]
    f = self._file[rec]
    handle = self._handles.get(f)
    if handle is None:
      handle = self._handles[f] = tfrecord.open_shard(self.paths[f])
    offset, length = self._offset[rec]
    return tfrecord.read_record_at(handle, self.paths[f], int(offset), int(length))

  def __getstate__(self) -> dict:
    # Open files and the order cache stay behind when grain copies this to a worker.
    state = dict(self.__dict__)
    state["_handles"], state["_cached_epoch"], state["_cached_order"] = {}, -1, None
    return state

  def __repr__(self) -> str:
    return f"ShuffledRecords({len(self.paths)} files, {self.num_records} records, seed={self.seed})"


@dataclasses.dataclass
class ClipDecoder:
  """Clip record -> fixed-shape arrays for the DiT.

  Output: `frames` uint8 [num_frames, H, W, 3] (the centred window of the clip's frames,
  the last frame repeated when the clip is shorter), `frame_mask` bool [num_frames],
  with a tokenizer `caption_ids` int32 [max_text_len] + `caption_mask`, and each stored
  array of `arrays` (e.g. `latents`, `visual_embedding`) as it was written.
  """

  num_frames: int
  tokenizer: Tokenizer | None = None
  max_text_len: int = 128
  arrays: tuple[str, ...] = ()

  def __call__(self, record: bytes) -> dict[str, np.ndarray]:
    ex = examples.decode_clip(record)
    frames = ex["frames"]
    n = min(len(frames), self.num_frames)
    start = (len(frames) - n) // 2
    first = video_io.decode_jpeg(frames[start])
    clip = np.empty((self.num_frames, *first.shape), np.uint8)  # Decoded in place.
    clip[0] = first
    for i in range(1, n):
      video_io.decode_jpeg(frames[start + i], out=clip[i])
    clip[n:] = clip[n - 1]
    out = {"frames": clip, "frame_mask": np.arange(self.num_frames) < n}
    if self.tokenizer is not None:
      ids, mask = self.tokenizer.encode_batch([ex["caption"]], self.max_text_len)
      out["caption_ids"], out["caption_mask"] = ids[0], mask[0]
    for name in self.arrays:
      if name not in ex:
        raise KeyError(
          f"clip {ex['video_id']}/{ex['clip_id']} has no array {name!r}; "
          "run `auteur encode` first or drop it from config.data.arrays"
        )
      out[name] = ex[name]
    return out


@dataclasses.dataclass
class StoryDecoder:
  """Story record -> padded per-step token arrays for the director.

  Output (S = max_steps; stories are cut to their first S steps):
    `action_ids` int32 [S, max_action_tokens] + `action_mask` bool,
    `caption_ids` int32 [S, max_caption_tokens] + `caption_mask` bool,
    `step_mask` bool [S], `task_ids` int32 [max_action_tokens] + `task_mask`,
    and with `embedding_shape` = (K, D), `visual_embedding` float32 [S, K, D] (zeros on
    padded steps; a story without embeddings is an error then).
  """

  tokenizer: Tokenizer
  max_steps: int
  max_action_tokens: int = 32
  max_caption_tokens: int = 128
  embedding_shape: tuple[int, int] | None = None

  def __call__(self, record: bytes) -> dict[str, np.ndarray]:
    return self.arrays(examples.decode_story(record))

  def arrays(self, ex: dict) -> dict[str, np.ndarray]:
    """The output above from a decoded story (examples.decode_story's dict)."""
    s = min(ex["num_steps"], self.max_steps)
    tok = self.tokenizer

    def padded(texts: list[str], length: int) -> tuple[np.ndarray, np.ndarray]:
      ids = np.full((self.max_steps, length), tok.pad_id, np.int32)
      mask = np.zeros((self.max_steps, length), bool)
      if s:
        ids[:s], mask[:s] = tok.encode_batch(texts[:s], length)
      return ids, mask

    out = {}
    out["action_ids"], out["action_mask"] = padded(ex["actions"], self.max_action_tokens)
    out["caption_ids"], out["caption_mask"] = padded(ex["captions"], self.max_caption_tokens)
    out["step_mask"] = np.arange(self.max_steps) < s
    task_ids, task_mask = tok.encode_batch([ex["task"]], self.max_action_tokens)
    out["task_ids"], out["task_mask"] = task_ids[0], task_mask[0]
    if self.embedding_shape is not None:
      emb = ex.get("visual_embedding")
      if emb is None or tuple(emb.shape[1:]) != tuple(self.embedding_shape):
        got = None if emb is None else tuple(emb.shape[1:])
        raise ValueError(
          f"story {ex['video_id']}: visual_embedding per step has shape {got}, "
          f"expected {tuple(self.embedding_shape)}"
        )
      z = np.zeros((self.max_steps, *self.embedding_shape), np.float32)
      z[:s] = emb[:s]
      out["visual_embedding"] = z
    return out


def make_dataset(
  paths: Sequence[str],
  decoder,
  global_batch_size: int,
  *,
  seed: int = 0,
  window: int = 1024,
  shuffle: bool = True,
  num_epochs: int | None = None,
  num_workers: int = 0,
  num_threads: int = 2,
  prefetch: int = 8,
  process_index: int = 0,
  process_count: int = 1,
) -> grain.IterDataset:
  """The per-process grain pipeline: this process's files -> decoded -> local batches.

  Batching happens on the random-access side, so batch i is the same batch whatever
  `num_workers` is (workers take whole batches round-robin).

  Args:
    paths: all shard files of the split (every process passes the same list).
    decoder: ClipDecoder / StoryDecoder (record bytes -> dict of arrays).
    global_batch_size: summed over processes; must divide by process_count.
  """
  if global_batch_size % process_count:
    raise ValueError(
      f"global batch size {global_batch_size} does not divide between {process_count} processes"
    )
  source = ShuffledRecords(
    files_for_process(paths, process_index, process_count),
    seed=seed,
    window=window,
    shuffle=shuffle,
    num_epochs=num_epochs,
  )
  ds = (
    grain.MapDataset.source(source)
    .map(decoder)
    .batch(global_batch_size // process_count, drop_remainder=True)
  )
  ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch))
  if num_workers > 0:
    ds = ds.mp_prefetch(
      grain.MultiprocessingOptions(num_workers=num_workers, per_worker_buffer_size=2)
    )
  return ds


def split_files(data_dir: str, split: str, kind: str) -> list[str]:
  """Shard files of `kind` ("clips" | "stories") of a split built by `auteur data build`."""
  if kind not in ("clips", "stories"):
    raise ValueError(f"kind must be 'clips' or 'stories', got {kind!r}")
  return tfrecord.list_shards(join_path(data_dir, split, f"{kind}-*.tfrecord"))


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """`config.data`: how clips are stored (`auteur data build`) and batched (the
  pipelines here). toy/data (auteur_jax/configs/toy/data.py) holds every field with its meaning."""

  dir: str
  split: str
  kind: str  # "clips" (DiT, VAE, CLIP) | "stories" (director).
  # Build: frames sampled per second, size (a square side or (height, width)), JPEG
  # quality, shards, processes.
  fps: float
  size: int | tuple[int, int]
  jpeg_quality: int
  num_shards: int
  build_workers: int
  # Batches.
  batch_size: int  # Global: summed over processes.
  num_frames: int
  arrays: tuple[str, ...]
  tokenizer: str  # "" = no text ids.
  max_text_len: int
  max_steps: int
  max_action_tokens: int
  max_caption_tokens: int
  embedding_shape: tuple[int, ...]  # () or (K, D).
  # Order and loading.
  seed: int
  shuffle: bool
  shuffle_window: int
  num_epochs: int  # -1 = forever.
  num_workers: int
  num_threads: int
  # True: train on the shards that are there when they differ from dataset.json
  # (data/inventory.py); False: that is an error naming the shard.
  allow_partial: bool = False
  # () or (h, w, C): stories with each step's keyframe latent (data/keyframes.py).
  keyframe_shape: tuple[int, ...] = ()

  def validate(self) -> None:
    if self.kind not in ("clips", "stories"):
      raise ValueError(f"kind must be 'clips' or 'stories', got {self.kind!r}")
    if min((self.size,) if isinstance(self.size, int) else self.size) < 1:
      raise ValueError(f"size must be >= 1 (a side or (height, width)), got {self.size}")
    for name in (
      "num_shards",
      "batch_size",
      "num_frames",
      "max_text_len",
      "max_steps",
      "max_action_tokens",
      "max_caption_tokens",
      "shuffle_window",
      "num_threads",
    ):
      if getattr(self, name) < 1:
        raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
    for name in ("build_workers", "num_workers"):
      if getattr(self, name) < 0:
        raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
    if self.fps <= 0 or not 1 <= self.jpeg_quality <= 100:
      raise ValueError(
        f"fps must be > 0 and jpeg_quality in 1..100, got {self.fps}, {self.jpeg_quality}"
      )
    if len(self.embedding_shape) not in (0, 2):
      raise ValueError(f"embedding_shape: expected () or (K, D), got {self.embedding_shape}")
    if len(self.keyframe_shape) not in (0, 3) or min(self.keyframe_shape, default=1) < 1:
      raise ValueError(f"keyframe_shape: expected () or (h, w, C), got {self.keyframe_shape}")
    if self.keyframe_shape and self.kind != "stories":
      raise ValueError(
        f"keyframe_shape: keyframes are loaded with stories (kind 'stories'), got {self.kind!r}"
      )
    if self.num_epochs < 1 and self.num_epochs != -1:
      raise ValueError(f"num_epochs must be >= 1, or -1 (forever), got {self.num_epochs}")


def data_config(data: DataConfig | Any) -> DataConfig:
  """`config.data` checked (unknown keys, types, values) as a DataConfig."""
  return from_section(DataConfig, data, "config.data")


def dataset_from_config(
  data: DataConfig | Any, process_index: int = 0, process_count: int = 1
) -> grain.IterDataset:
  """The pipeline `config.data` describes (see DataConfig)."""
  data = data_config(data)
  tok = Tokenizer.load(data.tokenizer) if data.tokenizer else None
  decoder: ClipDecoder | StoryDecoder | keyframes.StoryKeyframes
  if data.kind == "clips":
    decoder = ClipDecoder(data.num_frames, tok, data.max_text_len, data.arrays)
  else:
    if tok is None:
      raise ConfigError(
        "config.data.tokenizer: story batches need a tokenizer folder "
        "(auteur data tokenizer --stories S --out DIR)"
      )
    k_d = data.embedding_shape  # () or (K, D): validated.
    decoder = StoryDecoder(
      tok,
      data.max_steps,
      data.max_action_tokens,
      data.max_caption_tokens,
      (k_d[0], k_d[1]) if k_d else None,
    )
    if data.keyframe_shape:  # Validated: (h, w, C).
      h, w, c = data.keyframe_shape
      clips = inventory.check_split(data.dir, data.split, "clips", data.allow_partial)
      decoder = keyframes.StoryKeyframes(decoder, clips, (h, w, c))
  files = inventory.check_split(data.dir, data.split, data.kind, data.allow_partial)
  return make_dataset(
    files,
    decoder,
    data.batch_size,
    seed=data.seed,
    window=data.shuffle_window,
    shuffle=data.shuffle,
    num_epochs=None if data.num_epochs < 0 else data.num_epochs,
    num_workers=data.num_workers,
    num_threads=data.num_threads,
    process_index=process_index,
    process_count=process_count,
  )


class GlobalBatches:
  """Iterates local numpy batches as global jax.Arrays sharded over `batch_axes`.

  The leading axis of every array is split over the mesh axes `batch_axes` (those in
  the mesh); other axes are replicated. `get_state` / `set_state` are the grain
  iterator's, for checkpoints.
  """

  def __init__(
    self, dataset: grain.IterDataset, mesh, batch_axes: Sequence[str] = ("data", "fsdp")
  ):
    import jax  # Only here: the data layer itself runs without jax.
    from jax.sharding import NamedSharding, PartitionSpec

    self._jax = jax
    self._it = iter(dataset)
    axes = tuple(a for a in batch_axes if a in mesh.axis_names)
    self._sharding = NamedSharding(mesh, PartitionSpec(axes or None))

  def __iter__(self) -> Iterator[dict]:
    return self

  def __next__(self) -> dict:
    local = next(self._it)
    return self._jax.tree.map(
      lambda x: self._jax.make_array_from_process_local_data(self._sharding, x), local
    )

  def get_state(self) -> dict:
    return self._it.get_state()

  def set_state(self, state: dict) -> None:
    self._it.set_state(state)
