"""Whole configs by task, the sections of `init` and `loss`, and the checks at the start
of `auteur train`, `auteur encode` and `auteur sample`.

  check_config(config)   every section of a config (as its task reads them)
  check_train(config)    check_config + the sections `auteur train` reads are there
  check_encode(config)   ... `auteur encode`
  check_sample(config)   ... `auteur sample`

A config is a dataclass here too (VAERun, ClipRun, DirectorRun, DiTRun, KeyframeRun,
TextEncoderRun, SampleRun, DataRun for a config without a task) whose fields are the
section classes of the modules that read them, so `config_sections.from_section` checks
every section, nested ones included, and refuses a key that no code reads. A section
only some uses of a task read is optional (the paper VAE is only encoded with: no
`train`); the command checks require what they read. A task without a run class (tests
register their own) gets its generic sections checked: train, mesh, distributed and
init. Errors are ConfigErrors naming the key. Here, in train/, because a run's sections include
config.train; the sample layer checks its own sections where it reads them.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import ml_collections

from auteur_jax.config import ConfigError
from auteur_jax.config_sections import from_section
from auteur_jax.data.pipeline import DataConfig
from auteur_jax.diffusion.flow import SamplerConfig
from auteur_jax.models.clip_text import ClipModelConfig
from auteur_jax.models.conditioned_dit import DiTTextConfig
from auteur_jax.models.director import DirectorConfig
from auteur_jax.models.dit import DiTConfig
from auteur_jax.models.keyframe_renderer import KeyframeRendererConfig
from auteur_jax.models.text_encoder import T5Config
from auteur_jax.models.vae import VAEConfig
from auteur_jax.parallel.distributed import DistributedConfig
from auteur_jax.parallel.mesh import MeshConfig
from auteur_jax.sample.director import DirectorSampleConfig
from auteur_jax.sample.encode import EncodeConfig
from auteur_jax.sample.story import StorySampleConfig
from auteur_jax.train.evaluate import EvalConfig
from auteur_jax.train.optim import TrainConfig
from auteur_jax.train.task_vae import VAELossConfig

# --- sections whose readers are tasks (train/task_*.py), the trainer and encoders --------


@dataclasses.dataclass(frozen=True)
class InitConfig:
  """`config.init`: where a run's params start ("" = random initialisation)."""

  checkpoint: str = ""  # A training run (its workdir) or a converted checkpoint.
  # Read the run's EMA weights (config.train.ema_decay > 0 there) instead of its params:
  # sampling, evaluation and `auteur encode` restore the model from them.
  ema: bool = False


@dataclasses.dataclass(frozen=True)
class VAEInitConfig(InitConfig):
  """`config.init` of a VAE config."""

  inflate: bool = False  # The checkpoint is an image-stage run: inflate it to video.
  diffusers_vae: str = ""  # Or a diffusers AutoencoderKLWan folder (`auteur encode`).


@dataclasses.dataclass(frozen=True)
class ClipInitConfig(InitConfig):
  """`config.init` of a CLIP config."""

  hf_vision: str = ""  # Or an HF CLIP / SigLIP folder (`auteur encode`: vision tower).


@dataclasses.dataclass(frozen=True)
class DiTInitConfig(InitConfig):
  """`config.init` of a DiT config."""

  # The checkpoint's DiT has fewer input channels (no keyframe condition): its patch
  # embedding is widened with zero weights for the new ones (task_dit.init_adapters).
  widen_inputs: bool = False


# --- whole configs ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainRun:
  """A config of a trainable task: the model, the mesh, and what training / encoding /
  sampling with it read."""

  TASK: ClassVar[str] = ""
  task: str
  model: Any
  mesh: MeshConfig
  distributed: DistributedConfig | None = None
  data: DataConfig | None = None
  train: TrainConfig | None = None
  init: InitConfig | None = None
  eval: EvalConfig | None = None  # Evaluation during training (train/evaluate.py).

  def validate(self) -> None:
    if self.task != self.TASK:
      raise ValueError(f"task: expected {self.TASK!r}, got {self.task!r}")
    if self.train is None:
      return
    if self.TASK not in ("dit", "keyframe") and self.train.flow:
      raise ValueError(
        f"train: flow is the dit and keyframe tasks'; this is a {self.task!r} config"
      )
    if self.TASK != "dit" and self.train.visual_reg:
      raise ValueError(f"train: visual_reg is the dit task's; this is a {self.task!r} config")


@dataclasses.dataclass(frozen=True, kw_only=True)
class VAERun(TrainRun):
  TASK: ClassVar[str] = "vae"
  model: VAEConfig
  init: VAEInitConfig | None = None
  loss: VAELossConfig | None = None
  encode: EncodeConfig | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class ClipRun(TrainRun):
  TASK: ClassVar[str] = "clip"
  model: ClipModelConfig
  init: ClipInitConfig | None = None
  encode: EncodeConfig | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class DirectorRun(TrainRun):
  TASK: ClassVar[str] = "director"
  model: DirectorConfig
  sample: DirectorSampleConfig | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class DiTRun(TrainRun):
  TASK: ClassVar[str] = "dit"
  model: DiTConfig
  init: DiTInitConfig | None = None
  text: DiTTextConfig
  sample: SamplerConfig | None = None

  def validate(self) -> None:
    super().validate()
    if self.train is not None and (self.train.flow is None or self.train.visual_reg is None):
      raise ValueError("train: the dit task reads train.flow and train.visual_reg")
    if self.init is not None and self.init.widen_inputs and not self.model.keyframe:
      raise ValueError(
        "init.widen_inputs: only a keyframe-conditioned DiT (model.visual_condition "
        f"'keyframe' or 'both') has new input channels; got {self.model.visual_condition!r}"
      )


@dataclasses.dataclass(frozen=True, kw_only=True)
class KeyframeRun(TrainRun):
  """The keyframe renderer (task_keyframe): stories with keyframe latents; config.sample
  is sample/keyframes.py's solver and guidance (visual_scale: on the references)."""

  TASK: ClassVar[str] = "keyframe"
  model: KeyframeRendererConfig
  sample: SamplerConfig | None = None

  def validate(self) -> None:
    super().validate()
    if self.train is not None and self.train.flow is None:
      raise ValueError("train: the keyframe task reads train.flow")
    if self.data is not None and (
      self.data.kind != "stories" or len(self.data.keyframe_shape) != 3
    ):
      raise ValueError(
        "data: the keyframe task reads stories with keyframes; expected kind 'stories' and "
        f"keyframe_shape (h, w, C), got {self.data.kind!r} and {self.data.keyframe_shape}"
      )
    if self.data is not None and self.data.keyframe_shape[-1] != self.model.out_channels:
      raise ValueError(
        f"data.keyframe_shape {self.data.keyframe_shape}: C must be model.out_channels "
        f"({self.model.out_channels})"
      )


@dataclasses.dataclass(frozen=True, kw_only=True)
class TextEncoderRun:
  """A text encoder config (paper/umt5_xxl): the model and the mesh `auteur convert
  import --config` places its weights on."""

  task: str
  model: T5Config
  mesh: MeshConfig


@dataclasses.dataclass(frozen=True, kw_only=True)
class SampleRun:
  """A sampling config (toy/sample): the three models' training configs, the tokenizer,
  the job settings and the mesh of each process's local devices."""

  task: str
  director: DirectorRun
  dit: DiTRun
  vae: VAERun
  tokenizer: str  # The director's (and the DiT's caption) tokenizer folder.
  allow_random_init: bool  # True: a model with no init.checkpoint gets random weights.
  sample: StorySampleConfig
  mesh: MeshConfig
  distributed: DistributedConfig
  # The language-centric director's models (sample.director "language"): the keyframe
  # renderer, the keyframe-conditioned DiT and the vision tower of its image tokens.
  keyframe: KeyframeRun | None = None
  dit_keyframe: DiTRun | None = None
  clip: ClipRun | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class DataRun:
  """A config with no task (toy/data): only the data section."""

  data: DataConfig


RUNS: dict[str | None, type] = {
  "vae": VAERun,
  "clip": ClipRun,
  "director": DirectorRun,
  "dit": DiTRun,
  "keyframe": KeyframeRun,
  "text_encoder": TextEncoderRun,
  "sample": SampleRun,
  None: DataRun,
}
# Sections of a task without a run class that are the same for every task.
GENERIC = {
  "eval": EvalConfig,
  "train": TrainConfig,
  "mesh": MeshConfig,
  "distributed": DistributedConfig,
  "init": InitConfig,
}


def check_config(config: ml_collections.ConfigDict) -> Any:
  """Every section of `config` checked by its task's run class (see the module
  docstring); returns the run instance (or, for a task without a run class, a dict of
  its generic sections)."""
  task = config.get("task")
  if task in RUNS:
    return from_section(RUNS[task], config, "config")
  return {
    name: from_section(cls, config[name], f"config.{name}")
    for name, cls in GENERIC.items()
    if name in config
  }


def _require(config: ml_collections.ConfigDict, names: tuple[str, ...], command: str) -> None:
  missing = [n for n in names if config.get(n) is None]
  if missing:
    raise ConfigError(f"config: `{command}` reads {missing}, which this config lacks")


def check_train(config: ml_collections.ConfigDict) -> Any:
  """check_config, and the sections `auteur train` reads are there."""
  run = check_config(config)
  extra = {"vae": ("loss",), "dit": ("text",)}.get(config.get("task"), ())
  _require(config, ("task", "data", "train", "mesh", "distributed", *extra), "auteur train")
  if isinstance(run, ClipRun) and run.model.text is None:
    raise ConfigError(
      "config.model.text: `auteur train` trains the pair; this config holds only the vision tower"
    )
  return run


def check_encode(config: ml_collections.ConfigDict) -> Any:
  """check_config, and the sections `auteur encode` reads are there."""
  run = check_config(config)
  if config.get("task") not in ("vae", "clip"):
    raise ConfigError(
      f"config.task: `auteur encode` runs 'vae' or 'clip', got {config.get('task')!r}"
    )
  _require(config, ("encode",), "auteur encode")
  return run


def check_sample(config: ml_collections.ConfigDict) -> SampleRun:
  """check_config of a sampling config (task "sample")."""
  if config.get("task") != "sample":
    raise ConfigError(
      f"config.task: `auteur sample` takes a sampling config (task "
      f"'sample', e.g. toy/sample), got {config.get('task')!r}"
    )
  return check_config(config)
