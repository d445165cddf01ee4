"""CLIP-T: how well frames match their caption in our own CLIP space (models/clip_text.py).

CLIP-T of a clip = the mean, over its frames, of the cosine similarity between the
frame's pooled image embedding and its caption's text embedding (the towers trained by
train/task_clip.py, with that task's pre-processing: resize to the tower's image size,
the family's pixel statistics, eos written after the caption). Raw cosine in [-1, 1]
(papers often print 100 x cosine).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from auteur_jax.checkpoint.restore import restore_model
from auteur_jax.data.tokenizer import Tokenizer
from auteur_jax.models import registry
from auteur_jax.models.clip_text import ClipModel, with_eos
from auteur_jax.models.vision import normalize_pixels
from auteur_jax.parallel.mesh import make_mesh
from auteur_jax.parallel.rules import mesh_rules


class ClipScorer:
  """Unit image / text embeddings of a ClipModel, jitted."""

  def __init__(self, model: ClipModel, tokenizer: Tokenizer, max_len: int | None = None):
    self.tokenizer = tokenizer
    self.max_len = max_len or model.text.cfg.max_len
    vcfg, eos = model.vision.cfg, model.text.cfg.eos_token_id
    graphdef, params = nnx.split(model)
    unit = lambda x: x / jnp.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731

    @jax.jit
    def images(params, x):
      m = nnx.merge(graphdef, params)
      x = x.astype(jnp.float32)
      s = vcfg.image_size
      if x.shape[1:3] != (s, s):
        x = jnp.clip(
          jax.image.resize(x, (x.shape[0], s, s, 3), "bicubic", antialias=True), 0.0, 255.0
        )
      return unit(
        m.vision.embed_images(normalize_pixels(x / 255.0, vcfg.family)).astype(jnp.float32)
      )

    @jax.jit
    def texts(params, ids, mask):
      ids, mask = with_eos(ids, mask, eos)
      return unit(nnx.merge(graphdef, params).text(ids, mask)[1].astype(jnp.float32))

    self._images = lambda x: np.asarray(images(params, x))
    self._texts = lambda ids, mask: np.asarray(texts(params, ids, mask))

  def image_embeddings(self, frames: np.ndarray) -> np.ndarray:
    """uint8 [N, H, W, 3] -> float32 [N, P], unit norm."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
      raise ValueError(f"image_embeddings: expected frames [N, H, W, 3], got {frames.shape}")
    return self._images(frames)

  def text_embeddings(self, texts: Sequence[str]) -> np.ndarray:
    """Texts -> float32 [M, P], unit norm."""
    ids, mask = self.tokenizer.encode_batch(list(texts), self.max_len)
    return self._texts(ids, mask)

  def clip_t(self, clips: Sequence[np.ndarray], captions: Sequence[str]) -> np.ndarray:
    """Clips (each uint8 [T, H, W, 3]) and their captions -> CLIP-T per clip, float [N]."""
    if len(clips) != len(captions):
      raise ValueError(f"clip_t: {len(clips)} clips vs {len(captions)} captions")
    if not len(clips):
      return np.zeros((0,), np.float32)
    txt = self.text_embeddings(captions)
    return np.asarray([float(np.mean(self.image_embeddings(c) @ t)) for c, t in zip(clips, txt)])


def load_clip(config: ml_collections.ConfigDict, workdir: str) -> ClipModel:
  """The ClipModel of a `clip` training run (config: toy/clip and overrides), restored
  onto the mesh of config.mesh over this process's devices."""
  mesh = make_mesh(dict(config.mesh.shape), jax.local_devices())
  model = restore_model(
    workdir,
    lambda: registry.build(config, nnx.Rngs(0)),
    ("model",),
    "the clip run",
    mesh,
    mesh_rules(config),
  )
  return cast(ClipModel, model)
