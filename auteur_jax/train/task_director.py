"""The `director` task: the narrative director on story batches (data/pipeline.py).

Loss: text cross-entropy on actions and captions + alpha (1 - cos) + beta MSE on the
regressed visual states (models/director.py): the stored CLIP tokens, or with
config.data.keyframe_shape each step's keyframe VAE latent as h * w tokens of C.
`num_tokens` (text tokens with a loss) feeds tokens/s in the trainer's metrics.
"""

from __future__ import annotations

import jax

from auteur_jax.data import pipeline
from auteur_jax.models.director import Director


class DirectorTask:
  """config.model: DirectorConfig fields; config.data: a story pipeline with embeddings."""

  def loss(self, config, model: Director, batch: dict, rng: jax.Array):
    if "keyframes" in batch:  # toy/director:vae_latent: each step's keyframe latent.
      kf = batch["keyframes"]  # [B, S, h, w, C] -> [B, S, h * w, C].
      batch = {**batch, "visual_embedding": kf.reshape(*kf.shape[:2], -1, kf.shape[-1])}
    loss, parts = model.loss(batch)
    parts = dict(parts)
    parts.pop("loss", None)
    parts["num_tokens"] = parts.pop("text_tokens")
    return loss, parts

  def dataset(self, config, process_index: int, process_count: int):
    return pipeline.dataset_from_config(config.data, process_index, process_count)


TASK = DirectorTask()
