"""The `director` task: the narrative director on story batches (data/pipeline.py).

Loss: text cross-entropy on actions and captions + alpha (1 - cos) + beta MSE on the
regressed visual states (models/director.py): the stored CLIP tokens, or with
config.data.keyframe_shape each step's keyframe VAE latent as h * w tokens of C.
`num_tokens` (text tokens with a loss) feeds tokens/s in the trainer's metrics.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from auteur_jax.data import pipeline
from auteur_jax.models.director import Director


class DirectorTask:
  """config.model: DirectorConfig fields; config.data: a story pipeline with embeddings."""

  @staticmethod
  def _targets(batch: dict) -> dict:
    if "keyframes" in batch:  # toy/director:vae_latent: each step's keyframe latent.
      kf = batch["keyframes"]  # [B, S, h, w, C] -> [B, S, h * w, C].
      batch = {**batch, "visual_embedding": kf.reshape(*kf.shape[:2], -1, kf.shape[-1])}
    return batch

  def loss(self, config, model: Director, batch: dict, rng: jax.Array):
    batch = self._targets(batch)
    loss, parts = model.loss(batch)
    parts = dict(parts)
    parts.pop("loss", None)
    parts["num_tokens"] = parts.pop("text_tokens")
    return loss, parts

  def eval_scalars(self, config, model: Director, batch: dict) -> dict:
    """step_top1 (train/evaluate.py): with the true texts and history, how often z_t's
    nearest (cosine) true visual state among its story's steps is step t's."""
    batch = self._targets(batch)
    zh = model(batch).visual.astype(jnp.float32)  # [B, S, K, D]
    z = batch["visual_embedding"].astype(jnp.float32)
    b, s = zh.shape[:2]
    unit = lambda x: x / (jnp.linalg.norm(x, axis=-1, keepdims=True) + 1e-8)  # noqa: E731
    sim = jnp.einsum("bsf,btf->bst", unit(zh.reshape(b, s, -1)), unit(z.reshape(b, s, -1)))
    valid = batch["step_mask"].astype(bool)
    sim = jnp.where(valid[:, None, :], sim, -jnp.inf)
    hit = (jnp.argmax(sim, axis=-1) == jnp.arange(s)[None]) & valid
    return {"step_top1": hit.sum() / jnp.maximum(valid.sum(), 1)}

  def dataset(self, config, process_index: int, process_count: int):
    return pipeline.dataset_from_config(config.data, process_index, process_count)


TASK = DirectorTask()
