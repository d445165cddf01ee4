"""Toy-kitchen data: how clips are stored (build) and batched (grain pipelines).

Build TFRecords from a stories file, train a tokenizer, then look at a few batches:
  auteur data build --config toy/data --stories toy_data/stories.jsonl
  auteur data tokenizer --stories toy_data/stories.jsonl --out toy_data/tokenizer
  auteur data batches --config toy/data
The last prints each batch's arrays (e.g. frames (8, 8, 64, 64, 3) uint8) and clips/s;
`toy/data:stories` gives story batches (action_ids (8, 8, 32) int32, ...).
"""

import ml_collections

from auteur_jax.config_sections import check_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  d = c.data = ml_collections.ConfigDict()
  d.dir = "toy_data/tfrecords"  # Written by `auteur data build`.
  d.split = "train"
  d.kind = check_arg(__file__, arg, ("clips", "stories")) or "clips"  # DiT | director.
  # Build: frames sampled per second of clip, square side (CookGen: 448), JPEG quality.
  d.fps = 8.0
  d.size = 64
  d.jpeg_quality = 90
  d.num_shards = 4  # Per split; at least the number of reading processes.
  d.build_workers = 0  # Decoding processes; 0 = all cores.
  # Batches (global batch size, summed over processes).
  d.batch_size = 8
  d.num_frames = 8
  d.arrays = ()  # Stored arrays to load with clips, e.g. ("latents", "visual_embedding").
  d.tokenizer = "toy_data/tokenizer"  # From `auteur data tokenizer`; "" = no text ids.
  d.max_text_len = 128
  d.max_steps = 8
  d.max_action_tokens = 32
  d.max_caption_tokens = 128
  d.embedding_shape = ()  # (K, D) to load per-step visual embeddings with stories.
  d.keyframe_shape = ()  # (h, w, C) to load per-step keyframe latents with stories.
  # Order and loading.
  d.seed = 0
  d.shuffle = True
  d.shuffle_window = 256  # Records shuffled together after the file shuffle.
  d.num_epochs = -1  # -1 = repeat forever.
  # JPEG decoding releases the GIL: read threads decode in parallel with no shared-memory
  # copies (benchmarks/data_pipeline.py). Worker processes suit GIL-bound transforms.
  d.num_workers = 0  # grain worker processes (0 = in this process).
  d.num_threads = 2  # Reader threads per process.
  # Shards that differ from dataset.json (deleted, cut short) are an error naming them;
  # True trains on what is there.
  d.allow_partial = False
  return c
