"""The `dit` task: the visual-conditioned video DiT trained with rectified flow.

Per batch: times t (config.train.flow), noise, x_t = (1 - t) x0 + t noise on the stored
VAE latents x0 [B, T, H, W, C]; the text condition is either the stored
`text_embedding` [B, L, text_dim] (a frozen umT5, `config.text.source = "embedding"`)
or the caption ids through a small embedding table trained with the DiT
(`"ids"`: the toy kitchen, which has no pretrained text encoder). The visual condition
(`visual_embedding` [B, K, D]) goes through z' = Shuffle(Mask(z + eps))
(config.train.visual_reg), then both conditions are dropped per example for
classifier-free guidance; the loss is the MSE to the velocity noise - x0.

A keyframe-conditioned DiT (config.model.visual_condition "keyframe" / "both") learns
image-to-video: the clip's own last latent frame is its keyframe (the toy's keyframes end
their clips), placed with its mask in the condition (diffusion/keyframe.py), which is never
dropped (diffusers' pipeline gives it to the unconditional pass too). With "keyframe" the
visual tokens are the keyframe's image tokens (the stored visual_embedding). A run that
starts from a DiT without those input channels sets config.init.widen_inputs.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from auteur_jax.checkpoint.restore import Adapt
from auteur_jax.config import ConfigError
from auteur_jax.data import examples, pipeline, tfrecord
from auteur_jax.diffusion import conditioning, flow, keyframe
from auteur_jax.models.conditioned_dit import TextConditionedDiT
from auteur_jax.models.dit import DiTConfig, widen_patch_kernel


@functools.lru_cache(maxsize=8)
def _embedding_std(data_dir: str, split: str, num_samples: int) -> float:
  """Std of the stored visual embeddings of the first `num_samples` clips (paper: 2,000)."""

  def embeddings():
    for path in pipeline.split_files(data_dir, split, "clips"):
      for record in tfrecord.iter_records(path):
        ex = examples.decode_clip(record, path)
        if "visual_embedding" not in ex:
          raise ConfigError(
            f"{path}: clip {ex['clip_id']} has no visual_embedding; run "
            "`auteur encode` or set config.model.visual_dim = 0"
          )
        yield ex["visual_embedding"]

  return conditioning.estimate_embedding_std(embeddings(), num_samples)


class DiTTask:
  """config.model: DiTConfig; config.text: source, vocab_size; config.train.flow and
  config.train.visual_reg: the flow and regularisation settings."""

  def _visual_reg(self, config) -> conditioning.VisualRegConfig:
    reg = conditioning.VisualRegConfig.from_dict(config.train.visual_reg.to_dict())
    if reg.noise_scale > 0 and reg.embedding_std <= 0:
      std = _embedding_std(config.data.dir, config.data.split, reg.std_samples)
      reg = dataclasses.replace(reg, embedding_std=std)
    return reg

  def _text(self, model: TextConditionedDiT, config, batch: dict) -> jax.Array:
    if config.text.source == "embedding":
      return batch["text_embedding"]
    embed = model.text_embed
    assert embed is not None  # Source "ids" (checked by DiTTextConfig) builds the table.
    mask = batch["caption_mask"][..., None]
    return embed(batch["caption_ids"]) * mask

  def loss(self, config, model: TextConditionedDiT, batch: dict, rng: jax.Array):
    f = config.train.flow
    x0 = batch["latents"].astype(jnp.float32)
    b = x0.shape[0]
    k_t, k_noise, k_reg, k_drop = jax.random.split(rng, 4)
    t = flow.sample_time(k_t, b, f.time_sampling, mean=f.logit_mean, std=f.logit_std, shift=f.shift)
    noise = jax.random.normal(k_noise, x0.shape, jnp.float32)
    text = self._text(model, config, batch)
    visual = None
    if config.model.visual_dim:
      visual = conditioning.regularize(k_reg, batch["visual_embedding"], self._visual_reg(config)).z
    text, visual, _, _ = flow.drop_conditions(k_drop, text, visual, f.drop_text, f.drop_visual)
    condition = None
    if model.dit.cfg.keyframe:
      condition = keyframe.keyframe_condition(x0[:, -1], x0.shape, "last")
    v = model.dit(flow.add_noise(x0, noise, t), t, text, visual, condition)
    return flow.flow_loss(v, x0, noise), {"num_tokens": jnp.float32(b * np.prod(x0.shape[1:4]))}

  def init_adapters(self, config) -> dict[str, Adapt]:
    """config.init.widen_inputs: the init checkpoint's patch embedding, narrower than
    this model's (no keyframe channels), widened with zeros (dit.widen_patch_kernel)."""
    if not (config.get("init") or {}).get("widen_inputs"):
      return {}
    cfg = DiTConfig.from_dict(config.model)

    def widen(saved: jax.Array, target: jax.ShapeDtypeStruct) -> jax.Array:
      return widen_patch_kernel(saved, cfg.patch_size, cfg.in_channels)

    return {"dit/patch_embed/kernel": widen}

  def dataset(self, config, process_index: int, process_count: int):
    return pipeline.dataset_from_config(config.data, process_index, process_count)


TASK = DiTTask()
