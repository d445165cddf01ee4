"""Models by task name: what `config.task` builds from its config.

  build(config, rngs)   "vae" -> VideoVAE (config.model), "clip" -> ClipModel
                        (config.model.vision / .text / .loss), "director" -> Director
                        (config.model), "dit" -> TextConditionedDiT (config.model, with a
                        caption embedding table when config.text.source is "ids")

Training (train/tasks.py: losses and data), sampling, encoding, evaluation and
conversion all build their models here. Parameters carry logical axis names: build
under `parallel.rules.use_mesh` or `nnx.eval_shape` + `nnx.use_eager_sharding(False)`.
"""

from __future__ import annotations

from collections.abc import Callable

import ml_collections
from flax import nnx

from auteur_jax.config import ConfigError
from auteur_jax.models.clip_text import ClipModel, TextConfig
from auteur_jax.models.conditioned_dit import TextConditionedDiT
from auteur_jax.models.director import Director, DirectorConfig
from auteur_jax.models.dit import DiTConfig
from auteur_jax.models.vae import VAEConfig, VideoVAE
from auteur_jax.models.vision import VisionConfig

Builder = Callable[[ml_collections.ConfigDict, nnx.Rngs], nnx.Module]
CLIP_LOSSES = ("softmax", "sigmoid")


def _vae(config: ml_collections.ConfigDict, rngs: nnx.Rngs) -> VideoVAE:
  return VideoVAE(VAEConfig.from_dict(config.model), rngs=rngs)


def _clip(config: ml_collections.ConfigDict, rngs: nnx.Rngs) -> ClipModel:
  m = config.model
  if m.loss not in CLIP_LOSSES:
    raise ConfigError(f"config.model.loss: expected one of {CLIP_LOSSES}, got {m.loss!r}")
  return ClipModel(VisionConfig.from_dict(m.vision), TextConfig.from_dict(m.text),
                   loss=m.loss, rngs=rngs)


def _director(config: ml_collections.ConfigDict, rngs: nnx.Rngs) -> Director:
  return Director(DirectorConfig.from_config(config.model.to_dict()), rngs=rngs)


def _dit(config: ml_collections.ConfigDict, rngs: nnx.Rngs) -> TextConditionedDiT:
  if config.text.source not in ("ids", "embedding"):
    raise ConfigError(f"config.text.source must be 'ids' or 'embedding', got "
                      f"{config.text.source!r}")
  vocab = config.text.vocab_size if config.text.source == "ids" else 0
  return TextConditionedDiT(DiTConfig.from_dict(config.model.to_dict()), vocab, rngs=rngs)


_BUILDERS: dict[str, Builder] = {"vae": _vae, "clip": _clip, "director": _director,
                                 "dit": _dit}


def register(task: str, builder: Builder) -> None:
  """Registers the model builder of a task (tests and extensions)."""
  _BUILDERS[task] = builder


def build(config: ml_collections.ConfigDict, rngs: nnx.Rngs) -> nnx.Module:
  """The model of `config.task` (see the module docstring)."""
  if config.task not in _BUILDERS:
    raise ConfigError(f"config.task: no model for task {config.task!r}; expected one of "
                      f"{sorted(_BUILDERS)}")
  return _BUILDERS[config.task](config, rngs)
