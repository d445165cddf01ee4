"""The `clip` task: contrastive CLIP towers (models/clip_text.py) on (keyframe, caption)
pairs from clip batches (data/pipeline.py).

Per clip the image is the middle valid frame of the batch's window (about the clip's
middle: the keyframe `auteur encode` embeds unless a clip sets its own), resized to the
tower's image size if needed and normalised with the family's pixel statistics; the
text is the pipeline's
`caption_ids` / `caption_mask` (config.data.tokenizer) with the end-of-text token
(config.model.text.eos_token_id) written after the caption, overwriting the last token
of a caption that fills max_text_len: the pipeline adds none, and the text tower pools
at it. Loss: `clip_loss` (config.model.loss "softmax") or `sigmoid_loss` ("sigmoid").
Logged parts: i2t_acc / t2i_acc (in-batch retrieval accuracy) and temperature
(exp(logit_scale)).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from auteur_jax.config import ConfigError
from auteur_jax.data import pipeline
from auteur_jax.data.tokenizer import Tokenizer
from auteur_jax.models.clip_text import ClipModel, clip_loss, sigmoid_loss, with_eos
from auteur_jax.models.vision import normalize_pixels


def keyframes(frames: jax.Array, frame_mask: jax.Array) -> jax.Array:
  """frames [B, T, H, W, 3], frame_mask [B, T] (valid frames first) -> [B, H, W, 3]:
  each clip's middle valid frame."""
  n = jnp.maximum(jnp.sum(frame_mask.astype(jnp.int32), axis=1), 1)
  idx = (n - 1) // 2
  return jnp.take_along_axis(frames, idx[:, None, None, None, None], axis=1)[:, 0]


class ClipTask:
  """config.model: vision (VisionConfig), text (TextConfig), loss; config.data: clips
  with a tokenizer."""

  def loss(self, config: ml_collections.ConfigDict, model: ClipModel, batch: dict, rng: jax.Array):
    vcfg, tcfg = model.vision.cfg, model.text.cfg
    images = keyframes(batch["frames"], batch["frame_mask"]).astype(jnp.float32)
    s = vcfg.image_size
    if images.shape[1:3] != (s, s):
      images = jnp.clip(
        jax.image.resize(images, (images.shape[0], s, s, 3), "bicubic", antialias=True), 0.0, 255.0
      )
    images = normalize_pixels(images / 255.0, vcfg.family)
    ids, mask = with_eos(batch["caption_ids"], batch["caption_mask"], tcfg.eos_token_id)
    img, txt = model(images, ids, mask)
    scale = model.logit_scale[...]
    if model.loss_kind == "softmax":
      loss = clip_loss(img, txt, scale)
    else:
      loss = sigmoid_loss(img, txt, scale, model.logit_bias[...])
    unit = lambda x: x / jnp.linalg.norm(x, axis=-1, keepdims=True)
    sim = unit(img.astype(jnp.float32)) @ unit(txt.astype(jnp.float32)).T
    labels = jnp.arange(sim.shape[0])
    parts = {
      "i2t_acc": jnp.mean(jnp.argmax(sim, axis=1) == labels),
      "t2i_acc": jnp.mean(jnp.argmax(sim, axis=0) == labels),
      "temperature": jnp.exp(scale),
    }
    return loss, parts

  def dataset(self, config: ml_collections.ConfigDict, process_index: int, process_count: int):
    d, t = config.data, config.model.text
    if d.kind != "clips":
      raise ConfigError(f"config.data.kind: the clip task trains on 'clips', got {d.kind!r}")
    if not d.tokenizer:
      raise ConfigError(
        "config.data.tokenizer: the clip task needs caption ids "
        "(auteur data tokenizer --stories S --out DIR)"
      )
    if d.max_text_len > t.max_len:
      raise ConfigError(
        f"config.data.max_text_len {d.max_text_len} exceeds the text tower's "
        f"config.model.text.max_len {t.max_len}"
      )
    tok = Tokenizer.load(d.tokenizer)
    if tok.vocab_size > t.vocab_size:
      raise ConfigError(
        f"config.model.text.vocab_size {t.vocab_size} is smaller than the "
        f"tokenizer's {tok.vocab_size} ({d.tokenizer})"
      )
    if tok.eos_id != t.eos_token_id:
      raise ConfigError(
        f"config.model.text.eos_token_id {t.eos_token_id} is not the "
        f"tokenizer's eos id {tok.eos_id} ({d.tokenizer})"
      )
    return pipeline.dataset_from_config(d, process_index, process_count)


TASK = ClipTask()
