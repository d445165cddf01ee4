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
from typing import cast

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from auteur_jax.checkpoint.restore import Adapt, restore_model
from auteur_jax.config import ConfigError, load_config
from auteur_jax.data import examples, pipeline, tfrecord
from auteur_jax.data.tokenizer import Tokenizer
from auteur_jax.diffusion import conditioning, flow, keyframe
from auteur_jax.eval.toy_state import object_matches, read_state
from auteur_jax.models import registry
from auteur_jax.models import vae as vae_lib
from auteur_jax.models.conditioned_dit import TextConditionedDiT
from auteur_jax.models.dit import DiTConfig, widen_patch_kernel
from auteur_jax.models.vae import VideoVAE


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


EVAL_TIMES = (0.25, 0.5, 0.75)  # Flow times of the validation losses (eval_scalars).


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

  def eval_scalars(self, config, model: TextConditionedDiT, batch: dict) -> dict:
    """Validation flow loss at fixed times t = 0.25, 0.5, 0.75 (train/evaluate.py): the
    same noise every time, the conditions as given (no regularisation or dropout)."""
    x0 = batch["latents"].astype(jnp.float32)
    noise = jax.random.normal(jax.random.key(0), x0.shape, jnp.float32)
    text = self._text(model, config, batch)
    visual = batch["visual_embedding"] if config.model.visual_dim else None
    cond = None
    if model.dit.cfg.keyframe:
      cond = keyframe.keyframe_condition(x0[:, -1], x0.shape, "last")
    out = {}
    for t in EVAL_TIMES:
      tt = jnp.full((x0.shape[0],), t, jnp.float32)
      v = model.dit(flow.add_noise(x0, noise, tt), tt, text, visual, cond)
      out[f"flow_loss_t{t:g}"] = flow.flow_loss(v, x0, noise)
    return out

  def eval_extras(self, config, ecfg, mesh) -> VideoVAE | None:
    """The VAE of config.eval.vae (its config: eval.vae_config) that decodes previews."""
    if not ecfg.video_every:
      return None
    if not ecfg.vae:
      raise ConfigError(
        "config.eval.vae is empty: video previews (eval.video_every > 0) need the VAE run "
        "whose latents the DiT trains on"
      )
    vae_config = load_config(ecfg.vae_config)
    vae = restore_model(
      ecfg.vae,
      lambda: registry.build(vae_config, nnx.Rngs(0)),
      ("model",),
      "config.eval.vae",
      mesh,
    )
    return cast(VideoVAE, vae)

  def eval_media(self, config, ecfg, model: TextConditionedDiT, batch: dict, key, vae) -> dict:
    """eval.videos validation clips sampled with the current weights (euler,
    eval.sample_steps, config.sample's guidance) and decoded by the VAE, beside the true
    clips decoded the same way; with their caption ids for the captions."""
    n = ecfg.videos
    x0 = batch["latents"][:n].astype(jnp.float32)
    text = self._text(model, config, {k: v[:n] for k, v in batch.items()})
    visual = batch["visual_embedding"][:n] if config.model.visual_dim else None
    cond = None
    if model.dit.cfg.keyframe:
      cond = keyframe.keyframe_condition(x0[:, -1], x0.shape, "last")

    def fn(x, t, c, v):
      reps = x.shape[0] // x0.shape[0]
      return model.dit(x, t, c, v, None if cond is None else jnp.concatenate([cond] * reps))

    s = config.sample
    velocity = flow.guided_velocity(
      fn,
      text,
      visual,
      jnp.zeros_like(text),
      None if visual is None else jnp.zeros_like(visual),
      s.text_scale,
      s.visual_scale,
    )
    sampled = flow.euler_sample(
      velocity, jax.random.normal(key, x0.shape), ecfg.sample_steps, s.shift
    )

    def frames(latents):
      video = vae_lib.decode(vae, vae.denormalize(latents))
      return jnp.round(jnp.clip(video + 1.0, 0.0, 2.0) * 127.5).astype(jnp.uint8)

    return {
      "videos": {"sampled": frames(sampled), "true": frames(x0)},
      "caption_ids": batch["caption_ids"][:n] if "caption_ids" in batch else None,
      "caption_mask": batch["caption_mask"][:n] if "caption_mask" in batch else None,
    }

  def eval_media_scores(self, config, ecfg, shown) -> dict[str, float]:
    """With eval.toy_states: the toy state reader on each sampled clip's last frame
    against its reading of the true clip's last frame (state_agreement_vs_true) and on
    the objects whose reading changes over the true clip (changed_objects; skipped when
    no object changes)."""
    if not ecfg.toy_states:
      return {}
    agree, changed = [], []
    for fake, true in zip(
      np.asarray(shown["videos"]["sampled"]), np.asarray(shown["videos"]["true"])
    ):
      ref = read_state(true[-1])
      hits = object_matches(read_state(fake[-1]), ref)
      agree.append(np.mean(list(hits.values())))
      moved = [k for k, same in object_matches(read_state(true[0]), ref).items() if not same]
      changed += [hits.get(k, False) for k in moved]
    out = {"state_agreement_vs_true": float(np.mean(agree))}
    if changed:
      out["changed_objects"] = float(np.mean(changed))
    return out

  def eval_captions(self, config, ids, mask) -> list[str]:
    """Caption ids [N, L] + mask -> the texts (config.data.tokenizer)."""
    if ids is None or not config.data.get("tokenizer"):
      return []
    tok = Tokenizer.load(config.data.tokenizer)
    return [tok.decode(np.asarray(i)[np.asarray(m)]) for i, m in zip(ids, mask)]

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
