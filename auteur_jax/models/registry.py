"""Models by task name: what `config.task` builds from its config.

  build(config, rngs)   "vae" -> VideoVAE (config.model), "clip" -> ClipModel
                        (config.model.vision / .text / .loss; the VisionTower alone for a
                        config without a text tower: encoding only), "director" ->
                        Director (config.model), "dit" -> TextConditionedDiT
                        (config.model, with a caption embedding table when
                        config.text.source is "ids"), "keyframe" -> KeyframeRenderer
                        (config.model), "text_encoder" -> T5Encoder

Training (train/tasks.py: losses and data), sampling, encoding, evaluation and
conversion all build their models here. Parameters carry logical axis names: build
under `parallel.rules.use_mesh` or `nnx.eval_shape` + `nnx.use_eager_sharding(False)`.
"""

from __future__ import annotations

from collections.abc import Callable

import ml_collections
from flax import nnx

from auteur_jax.config import ConfigError
from auteur_jax.config_sections import from_section
from auteur_jax.models.clip_text import ClipModel, ClipModelConfig
from auteur_jax.models.conditioned_dit import DiTTextConfig, TextConditionedDiT
from auteur_jax.models.director import Director, DirectorConfig
from auteur_jax.models.dit import DiTConfig
from auteur_jax.models.keyframe_renderer import KeyframeRenderer, KeyframeRendererConfig
from auteur_jax.models.text_encoder import T5Config, T5Encoder
from auteur_jax.models.vae import VAEConfig, VideoVAE
from auteur_jax.models.vision import VisionTower

Builder = Callable[[ml_collections.ConfigDict, nnx.Rngs], nnx.Module]


def _vae(config: ml_collections.ConfigDict, rngs: nnx.Rngs) -> VideoVAE:
  return VideoVAE(VAEConfig.from_dict(config.model), rngs=rngs)


def _clip(config: ml_collections.ConfigDict, rngs: nnx.Rngs) -> ClipModel | VisionTower:
  m = from_section(ClipModelConfig, config.model, "config.model")
  if m.text is None or m.loss is None:  # The vision tower alone: a config to encode with.
    return VisionTower(m.vision, rngs=rngs)
  return ClipModel(m.vision, m.text, loss=m.loss, rngs=rngs)


def _director(config: ml_collections.ConfigDict, rngs: nnx.Rngs) -> Director:
  return Director(DirectorConfig.from_config(config.model), rngs=rngs)


def _dit(config: ml_collections.ConfigDict, rngs: nnx.Rngs) -> TextConditionedDiT:
  text = from_section(DiTTextConfig, config.text, "config.text")
  return TextConditionedDiT(
    DiTConfig.from_dict(config.model), text.vocab_size if text.source == "ids" else 0, rngs=rngs
  )


def _keyframe(config: ml_collections.ConfigDict, rngs: nnx.Rngs) -> KeyframeRenderer:
  return KeyframeRenderer(KeyframeRendererConfig.from_dict(config.model), rngs=rngs)


def _text_encoder(config: ml_collections.ConfigDict, rngs: nnx.Rngs) -> T5Encoder:
  return T5Encoder(T5Config.from_dict(config.model), rngs=rngs)


_BUILDERS: dict[str, Builder] = {
  "vae": _vae,
  "clip": _clip,
  "director": _director,
  "dit": _dit,
  "keyframe": _keyframe,
  "text_encoder": _text_encoder,
}


def register(task: str, builder: Builder) -> None:
  """Registers the model builder of a task (tests and extensions)."""
  _BUILDERS[task] = builder


def build(config: ml_collections.ConfigDict, rngs: nnx.Rngs) -> nnx.Module:
  """The model of `config.task` (see the module docstring)."""
  if config.task not in _BUILDERS:
    raise ConfigError(
      f"config.task: no model for task {config.task!r}; expected one of {sorted(_BUILDERS)}"
    )
  return _BUILDERS[config.task](config, rngs)
