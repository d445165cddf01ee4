"""The encoders `auteur encode` runs, built from a config and a weight source.

`config.task` picks the model: "vae" -> `VideoVAE` (config.model), writing `latents`;
"clip" -> the vision tower of `ClipModel` (config.model.vision), writing
`visual_embedding`. `config.init` says where the weights come from:

  init.checkpoint      a training run (WORKDIR, WORKDIR/checkpoints or one step
                       folder): the params are restored from the latest orbax
                       checkpoint's `state` item (the optimizer state is not read)
  init.diffusers_vae / init.hf_vision
                       a diffusers / HF model folder (config.json + safetensors),
                       converted on the fly (convert/diffusers_vae.py, hf_vision.py)
  neither              random initialisation (seed config.encode.seed): smoke tests

Each encoder turns one host batch of decoded clips into one array per clip, running
jitted on the mesh of config.mesh over this process's devices: the params sharded by
their logical axes under the config's rules (restored straight onto those shardings),
the batch split over the mesh's batch axes.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import TypeVar, cast

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from auteur_jax.checkpoint.errors import WeightError
from auteur_jax.checkpoint.restore import restore_model
from auteur_jax.config import ConfigError
from auteur_jax.convert.diffusers_vae import load_diffusers_vae
from auteur_jax.convert.hf_vision import load_hf_vision
from auteur_jax.models import vae as vae_lib
from auteur_jax.models.vision import VisionConfig, VisionTower, normalize_pixels
from auteur_jax.parallel import rules as rules_lib
from auteur_jax.parallel.mesh import batch_axes


@dataclasses.dataclass
class Encoder:
  """`run` maps a uint8 host batch to a float32 numpy array [B, ...] per clip."""

  field: str  # The clip array it writes (data/examples.ARRAY_FIELDS).
  inputs: str  # "clip" (frames [B, T, H, W, 3]) or "keyframe" ([B, H, W, 3]).
  run: Callable[[np.ndarray], np.ndarray]
  description: dict


M = TypeVar("M", bound=nnx.Module)


def _build(
  config: ml_collections.ConfigDict,
  mesh: jax.sharding.Mesh,
  rules: rules_lib.Rules,
  make: Callable[[nnx.Rngs], M],
  convert: Callable[[str], M],
  key_path: tuple[str, ...],
  folder_key: str,
) -> M:
  """The encoder's model, its params on `mesh` by `rules` (the config's)."""
  init = config.get("init") or {}
  ckpt, folder = init.get("checkpoint", ""), init.get(folder_key, "")
  if ckpt and folder:
    raise ConfigError(f"config.init: set checkpoint or {folder_key}, not both")
  if not ckpt and not folder:
    with nnx.use_eager_sharding(False):
      return make(nnx.Rngs(config.encode.seed))
  if ckpt:
    restored = restore_model(
      ckpt,
      lambda: make(nnx.Rngs(0)),
      key_path,
      "config.init.checkpoint",
      mesh,
      rules,
    )
    return cast(M, restored)  # make()'s model; restore_model types it as nnx.Module.
  key = f"config.init.{folder_key}"
  if not os.path.exists(folder):
    raise FileNotFoundError(f"{key}: {folder} does not exist")
  if not os.path.isfile(os.path.join(folder, "config.json")):
    raise FileNotFoundError(f"{key}: {folder} has no config.json (expected a model folder)")
  try:
    return convert(folder)
  except WeightError as e:  # A checkpoint that does not fit: a user error, no traceback.
    raise ConfigError(f"{key}: {e}") from e


def _runner(
  model: nnx.Module,
  fn: Callable,
  config: ml_collections.ConfigDict,
  mesh: jax.sharding.Mesh,
  rules: rules_lib.Rules,
) -> Callable[[np.ndarray], np.ndarray]:
  """Jits fn(model, batch): params sharded by their logical axes (moved there if they
  are not already: random or converted weights), the batch over the batch axes."""
  graphdef, params = nnx.split(model)
  params = jax.device_put(params, rules_lib.state_shardings(params, mesh, rules))
  axes = batch_axes(mesh, config.mesh.batch_axes)
  batch_sharding = NamedSharding(mesh, PartitionSpec(axes or None))

  @jax.jit
  def step(params, batch):
    return fn(nnx.merge(graphdef, params), batch)

  def run(batch: np.ndarray) -> np.ndarray:
    with rules_lib.use_mesh(mesh, rules):
      return np.asarray(step(params, jax.device_put(batch, batch_sharding)))

  return run


def vae_encoder(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> Encoder:
  """Clips [B, T, H, W, 3] uint8 -> normalised posterior means [B, t, h, w, z_dim]."""
  overrides = {k: config.model[k] for k in ("dtype", "conv_impl") if k in config.model}
  rules = rules_lib.mesh_rules(config)
  model = _build(
    config,
    mesh,
    rules,
    lambda r: vae_lib.VideoVAE(vae_lib.VAEConfig.from_dict(config.model), rngs=r),
    lambda p: load_diffusers_vae(p, mesh=mesh, rules=rules, **overrides),
    ("model",),
    "diffusers_vae",
  )

  def fn(vae, frames):
    x = frames.astype(jnp.float32) / 127.5 - 1.0
    mean, _, _ = vae.encode_chunk(x)
    return vae.normalize(mean)

  cfg = model.cfg
  desc = dict(
    model="vae",
    z_dim=cfg.z_dim,
    spatial_factor=cfg.spatial_factor,
    temporal_factor=cfg.temporal_factor,
    content="posterior mean, (mean - latents_mean) / latents_std per channel",
  )
  return Encoder("latents", "clip", _runner(model, fn, config, mesh, rules), desc)


def clip_encoder(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> Encoder:
  """Keyframes [B, H, W, 3] uint8 -> visual tokens [B, K, D] of the vision tower."""
  vcfg = VisionConfig.from_dict(config.model.vision)
  rules = rules_lib.mesh_rules(config)
  keep = ("feature_layer", "resampler", "num_tokens", "project_tokens", "dtype")
  model = _build(
    config,
    mesh,
    rules,
    lambda r: VisionTower(vcfg, rngs=r),
    lambda p: load_hf_vision(p, mesh=mesh, rules=rules, **{k: getattr(vcfg, k) for k in keep}),
    ("model", "vision"),
    "hf_vision",
  )
  cfg = model.cfg

  def fn(tower, images):
    x = images.astype(jnp.float32)
    if x.shape[1:3] != (cfg.image_size, cfg.image_size):
      shape = (x.shape[0], cfg.image_size, cfg.image_size, 3)
      x = jnp.clip(jax.image.resize(x, shape, "bicubic", antialias=True), 0.0, 255.0)
    return tower.visual_tokens(normalize_pixels(x / 255.0, cfg.family))

  desc = dict(
    model="clip",
    family=cfg.family,
    num_tokens=cfg.num_tokens,
    dim=cfg.out_dim,
    feature_layer=cfg.feature_layer,
    resampler=cfg.resampler,
    content="visual tokens of the clip's keyframe",
  )
  return Encoder("visual_embedding", "keyframe", _runner(model, fn, config, mesh, rules), desc)


ENCODERS = {"vae": vae_encoder, "clip": clip_encoder}


def make_encoder(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> Encoder:
  if config.task not in ENCODERS:
    raise ConfigError(f"config.task: `auteur encode` runs {sorted(ENCODERS)}, got {config.task!r}")
  return ENCODERS[config.task](config, mesh)
