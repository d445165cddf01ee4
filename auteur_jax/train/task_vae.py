"""The `vae` task: the causal video VAE (models/vae.py) on clip batches (data/pipeline.py).

The clip pipeline gives frames uint8 [B, T, H, W, 3]; the VAE sees the first
1 + f k of them (f: its temporal factor) scaled to [-1, 1] (a short clip's window ends
in copies of its last frame, reconstructed like the rest). Loss:

  recon (config.loss.recon: "l1" | "mse" | "l1+mse", mean per pixel element, each
         element weighted by 1 + config.loss.detail_weight * its frame's local contrast)
  + config.loss.kl_weight * kl

with z sampled from the posterior with the step's rng, and `kl` the posterior's KL to
N(0, 1) summed over the latent and divided by the number of pixel elements, so that
kl_weight weighs a summed KL against a summed reconstruction as LDM / Wan do (1e-6).
The decoder output is not clipped to [-1, 1] here (`decode_chunk` clips for sampling),
so pixels outside the range keep their gradient. Logged parts: recon, kl, psnr (dB, of
the clipped output, peak-to-peak 2).

Local contrast is |x - its 3 x 3 box mean|, averaged over RGB (0 on flat colour, ~0.5 at a
strong edge): small objects are mostly edge, and with a plain mean they are a percent
of the loss, so a VAE learns the backgrounds long before it draws them. With
config.loss.train_encoder False the encoder gets no gradient: the decoder is fine-tuned
on the latents a DiT was trained on, which stay valid.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections

from auteur_jax.config import ConfigError
from auteur_jax.config_sections import from_section
from auteur_jax.data import pipeline
from auteur_jax.models.vae import (
  VAEConfig,
  VideoVAE,
  inflate_image_weights,
  kl_divergence,
  sample_posterior,
)
from auteur_jax.models.vae_blocks import Stream

RECON = ("l1", "mse", "l1+mse")


@dataclasses.dataclass(frozen=True)
class VAELossConfig:
  """`config.loss` of a VAE config (train/task_vae.py): recon + kl_weight * kl, each pixel
  weighted by 1 + detail_weight * local contrast; train_encoder False: decoder only."""

  recon: str  # "l1" | "mse" | "l1+mse".
  kl_weight: float
  detail_weight: float
  train_encoder: bool

  def validate(self) -> None:
    if self.recon not in RECON:
      raise ValueError(f"recon: expected one of {RECON}, got {self.recon!r}")
    if self.kl_weight < 0 or self.detail_weight < 0:
      raise ValueError(
        f"kl_weight and detail_weight must be >= 0, got {self.kl_weight}, {self.detail_weight}"
      )


def _check(config: ml_collections.ConfigDict, cfg: VAEConfig) -> None:
  f = cfg.temporal_factor
  t = config.data.num_frames
  if t < 1 or (t - 1) % f:
    k = max((t - 1) // f, 0)
    raise ConfigError(
      f"config.data.num_frames: the VAE takes 1 + {f}k frames, got {t} "
      f"(e.g. {1 + f * k} or {1 + f * (k + 1)})"
    )
  if config.data.kind != "clips":
    raise ConfigError(f"config.data.kind: the vae task trains on 'clips', got {config.data.kind!r}")
  from_section(VAELossConfig, config.loss, "config.loss")


class VAETask:
  """config.model: VAEConfig fields; config.loss: recon, kl_weight; config.data: clips."""

  def loss(self, config: ml_collections.ConfigDict, model: VideoVAE, batch: dict, rng: jax.Array):
    cfg = model.cfg
    frames = batch["frames"]
    t = 1 + cfg.temporal_factor * ((frames.shape[1] - 1) // cfg.temporal_factor)
    x = frames[:, :t].astype(jnp.float32) / 127.5 - 1.0
    mean, logvar, _ = model.encode_chunk(x)
    if not config.loss.train_encoder:
      mean, logvar = jax.lax.stop_gradient(mean), jax.lax.stop_gradient(logvar)
    z = sample_posterior(mean, logvar, rng)
    h = model.post_quant_conv(z.astype(jnp.dtype(cfg.dtype)))
    y = model.decoder(h, Stream(None)).astype(jnp.float32)  # Unclipped (see docstring).
    err = y - x
    w = 1.0 + config.loss.detail_weight * local_contrast(x) if config.loss.detail_weight else 1.0
    l1, mse = jnp.mean(w * jnp.abs(err)), jnp.mean(w * err**2)
    recon = {"l1": l1, "mse": mse, "l1+mse": l1 + mse}[config.loss.recon]
    kl = jnp.mean(kl_divergence(mean, logvar)) / (x.size // x.shape[0])
    psnr = 10.0 * jnp.log10(4.0 / jnp.mean((jnp.clip(y, -1.0, 1.0) - x) ** 2))  # As sampled.
    return recon + config.loss.kl_weight * kl, {"recon": recon, "kl": kl, "psnr": psnr}

  def eval_media(self, config, ecfg, model: VideoVAE, batch: dict, key, extra) -> dict:
    """The reconstruction strip (train/evaluate.py): the middle frame of up to 4
    validation clips (top) over its reconstruction from the posterior mean (bottom)."""
    cfg = model.cfg
    frames = batch["frames"][:4]
    t = 1 + cfg.temporal_factor * ((frames.shape[1] - 1) // cfg.temporal_factor)
    x = frames[:, :t].astype(jnp.float32) / 127.5 - 1.0
    mean, _, _ = model.encode_chunk(x)
    h = model.post_quant_conv(mean.astype(jnp.dtype(cfg.dtype)))
    y = jnp.clip(model.decoder(h, Stream(None)).astype(jnp.float32), -1.0, 1.0)
    mid = t // 2
    rows = [jnp.concatenate(list(v[:, mid]), axis=1) for v in (x, y)]  # [H, n W, C] each.
    strip = jnp.round((jnp.concatenate(rows, axis=0) + 1.0) * 127.5).astype(jnp.uint8)
    return {"images": {"reconstruction": strip}}

  def adapt_init(self, config: ml_collections.ConfigDict, model: VideoVAE) -> None:
    """config.init.inflate: the init checkpoint is an image-stage run (1-frame clips);
    its weights start the video run as the image model applied per frame."""
    if config.init.get("inflate"):
      inflate_image_weights(model)

  def dataset(self, config: ml_collections.ConfigDict, process_index: int, process_count: int):
    _check(config, VAEConfig.from_dict(config.model))
    return pipeline.dataset_from_config(config.data, process_index, process_count)


def local_contrast(x: jax.Array) -> jax.Array:
  """x [B, T, H, W, C] -> [B, T, H, W, 1]: mean over C of |x - its 3 x 3 box mean|."""
  padded = jnp.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")  # No edge at borders.
  box = jax.lax.reduce_window(padded, 0.0, jax.lax.add, (1, 1, 3, 3, 1), (1,) * 5, "VALID") / 9
  return jnp.mean(jnp.abs(x - box), axis=-1, keepdims=True)


TASK = VAETask()
