"""The `keyframe` task: the keyframe renderer (models/keyframe_renderer.py) trained with
rectified flow on stories' keyframes.

A batch is B stories (data/keyframes.py): `keyframes` [B, S, h, w, C] (each step's
clip's last latent frame, normalised VAE latents), the steps' action and caption ids
with masks [B, S, L], `step_mask` [B, S]. Every real step of every story is one example
(teacher forcing): target keyframe t, references the story's keyframes t-1 .. t-R
(`rolling_references`; none before the story starts), text its action then caption.
Per example: time t (config.train.flow), x_t = (1 - t) x0 + t noise, and the conditions
dropped for classifier-free guidance: the text with flow.drop_text, all of its
references at once with flow.drop_visual (reference dropout: the renderer's visual
condition is its references; so it also learns to draw with no context, as at a story's
start). The loss is the MSE to the velocity noise - x0 over the real steps.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from auteur_jax.data import pipeline
from auteur_jax.diffusion import flow
from auteur_jax.models.keyframe_renderer import KeyframeRenderer, rolling_references


class KeyframeTask:
  """config.model: KeyframeRendererConfig; config.train.flow: times and condition
  dropout (drop_visual: the references); config.data: stories with keyframe_shape."""

  def loss(self, config, model: KeyframeRenderer, batch: dict, rng: jax.Array):
    f = config.train.flow
    keyframes = batch["keyframes"].astype(jnp.float32)
    b, s = keyframes.shape[:2]
    n = b * s
    refs, ref_mask = rolling_references(keyframes, batch["step_mask"], model.cfg.max_references)

    def rows(a: jax.Array) -> jax.Array:  # [B, S, ...] -> [B * S, ...]: one row per step.
      return a.reshape(n, *a.shape[2:])

    x0, refs, ref_mask = rows(keyframes), rows(refs), rows(ref_mask)
    text = model.embed_text(
      rows(batch["action_ids"]),
      rows(batch["action_mask"]),
      rows(batch["caption_ids"]),
      rows(batch["caption_mask"]),
    )
    k_t, k_noise, k_drop = jax.random.split(rng, 3)
    t = flow.sample_time(k_t, n, f.time_sampling, mean=f.logit_mean, std=f.logit_std, shift=f.shift)
    noise = jax.random.normal(k_noise, x0.shape, jnp.float32)
    text, _, _, keep_refs = flow.drop_conditions(k_drop, text, None, f.drop_text, f.drop_visual)
    ref_mask = ref_mask & keep_refs[:, None]
    v = model(flow.add_noise(x0, noise, t), t, text, refs, ref_mask)
    real = rows(batch["step_mask"])
    _, ph, pw = model.cfg.patch_size
    steps = jnp.sum(real.astype(jnp.float32))
    tokens_per_step = (model.cfg.max_references + 1) * (x0.shape[1] // ph) * (x0.shape[2] // pw)
    return flow.flow_loss(v, x0, noise, real[:, None, None, None]), {
      "num_tokens": steps * tokens_per_step,
      # Mean references per real step, after dropout (logged: the context it trains on).
      "references": jnp.sum(ref_mask & real[:, None]) / jnp.maximum(steps, 1.0),
    }

  def dataset(self, config, process_index: int, process_count: int):
    # run_config.KeyframeRun checked it: stories with keyframe_shape (h, w, C).
    return pipeline.dataset_from_config(config.data, process_index, process_count)


TASK = KeyframeTask()
