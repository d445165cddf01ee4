"""Evaluation during training (`config.eval`): held-out scalars and pictures, written by
process 0 to metrics.jsonl and TensorBoard under `eval/`.

Every `eval.every` steps and at the end, the evaluator runs the task's loss on a fixed
set of validation batches (the first `eval.batches` of `eval.split`, in file order, read
once at start) with a fixed key per batch, plus the task's own scalars
(`task.eval_scalars(config, model, batch)`, e.g. the DiT's flow loss at fixed times, the
director's step top-1 with the true texts), averaged over the batches. Every
`eval.video_every` steps a task with `eval_media(config, ecfg, model, batch, key, extra)`
(extra: `task.eval_extras(config, ecfg)`'s model, e.g. the DiT's VAE) adds
pictures: the VAE's reconstruction strip, the DiT's sampled validation clips (decoded
by the VAE run in `eval.vae`) as GIFs with their captions; also as files in
WORKDIR/eval/<step>/. `task.eval_media_scores` scores the pictures on the host (the
DiT's toy-kitchen state reading, with eval.toy_states).

Evaluation never touches the training state, its data iterator or its keys: the losses
with and without it are the same. It runs on the training mesh (the batches are sharded
as training batches are), so every process takes part; process 0 writes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
from collections.abc import Mapping
from typing import Any

import jax
import ml_collections
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils
from PIL import Image

from auteur_jax import paths
from auteur_jax.config import ConfigError
from auteur_jax.config_sections import from_section
from auteur_jax.data.pipeline import GlobalBatches
from auteur_jax.parallel import rules as rules_lib


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  """`config.eval` (absent: no evaluation)."""

  every: int = 0  # Scalars every N steps and at the end (0: off).
  batches: int = 2  # Fixed validation batches (global batch size as training).
  split: str = "val"
  video_every: int = 0  # Pictures / videos every N steps and at the end (0: off).
  videos: int = 2  # Clips sampled per preview (DiT).
  sample_steps: int = 10  # Flow-matching steps of a preview clip (DiT).
  vae: str = ""  # DiT: the VAE run / checkpoint whose decoder shows the clips.
  vae_config: str = "toy/vae"  # Its config (a packaged name or a path).
  # Toy-kitchen data: score the sampled clips with the toy state reader (task_dit).
  toy_states: bool = False
  ema: bool = False  # Evaluate the EMA weights (config.train.ema_decay > 0) instead.

  def validate(self) -> None:
    for name in ("every", "video_every"):
      if getattr(self, name) < 0:
        raise ValueError(f"{name} must be >= 0 (0: off), got {getattr(self, name)}")
    for name in ("batches", "videos", "sample_steps"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


def eval_defaults(**overrides) -> ml_collections.ConfigDict:
  """A config.eval section at EvalConfig's defaults (off) with `overrides`."""
  section = dataclasses.asdict(EvalConfig())
  section.update(overrides)
  return ml_collections.ConfigDict(section)


def eval_config(config) -> EvalConfig | None:
  """config.eval checked, or None when the config has no eval section."""
  section = config.get("eval")
  return None if section is None else from_section(EvalConfig, section, "config.eval")


def _gif(frames: np.ndarray, fps: float = 4.0) -> bytes:
  """uint8 [T, H, W, 3] -> GIF bytes (looping)."""
  images = [Image.fromarray(f) for f in frames]
  buf = io.BytesIO()
  images[0].save(
    buf, "GIF", save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0
  )
  return buf.getvalue()


class Evaluator:
  """Holds the validation batches and the jitted evaluation of one run."""

  def __init__(self, config, task, setup, workdir: str, ecfg: EvalConfig):
    self.config, self.task, self.setup, self.workdir, self.ecfg = config, task, setup, workdir, ecfg
    self.extra_state: Any = None
    val = config.copy_and_resolve_references()
    with val.unlocked():
      val.data.split, val.data.shuffle, val.data.num_epochs = ecfg.split, False, 1
    data = GlobalBatches(
      task.dataset(val, jax.process_index(), jax.process_count()),
      setup.mesh,
      config.mesh.batch_axes,
    )
    self.batches = []
    for _ in range(ecfg.batches):
      try:
        self.batches.append(next(data))
      except StopIteration:
        break
    if not self.batches:
      raise ConfigError(
        f"config.eval.split {ecfg.split!r}: no validation batch of "
        f"{config.data.batch_size} examples in {config.data.get('dir', 'the data')}"
      )
    graphdef = setup.graphdef
    # Models the pictures need besides the trained one (the DiT's VAE), as arguments.
    extra = task.eval_extras(config, ecfg, setup.mesh) if hasattr(task, "eval_extras") else None
    extra_graph, self.extra_state = None, None
    if extra is not None:
      extra_graph, self.extra_state = nnx.split(extra)

    if ecfg.ema and not config.train.get("ema_decay", 0.0):
      raise ConfigError("config.eval.ema: the run keeps no EMA (set config.train.ema_decay > 0)")

    def model_of(state):
      ts = nnx.merge(graphdef, state)
      if ecfg.ema:
        ts.use_ema()
      return ts.model

    def scalars(state, batch, key):
      model = model_of(state)
      loss, parts = task.loss(config, model, batch, key)
      out = {"loss": loss, **{k: v for k, v in parts.items() if k != "num_tokens"}}
      if hasattr(task, "eval_scalars"):
        out.update(task.eval_scalars(config, model, batch))
      return out

    def media(state, batch, key, extra_state):
      model = model_of(state)
      extra = nnx.merge(extra_graph, extra_state) if extra_graph is not None else None
      return task.eval_media(config, ecfg, model, batch, key, extra)

    self._scalars = jax.jit(scalars)
    self._media = jax.jit(media) if hasattr(task, "eval_media") else None

  def due(self, step: int, end: int) -> tuple[bool, bool]:
    """(scalars, media) due after `step` of a run that ends at `end`."""
    e = self.ecfg
    last = step == end
    return (
      bool(e.every) and (step % e.every == 0 or last),
      self._media is not None and bool(e.video_every) and (step % e.video_every == 0 or last),
    )

  def run(self, state, step: int, writer, media: bool, timed=None) -> dict[str, float]:
    """Evaluates `state` (not modified); writes eval/ scalars (and media); returns them.
    `timed(part)`, if given, is a context manager timing the scalars ("eval") and the
    pictures ("previews") apart (train/throughput.py's Goodput)."""
    timed = timed or (lambda part: contextlib.nullcontext())
    rules = rules_lib.mesh_rules(self.config)
    totals: dict[str, float] = {}
    with timed("eval"), rules_lib.use_mesh(self.setup.mesh, rules):
      for i, batch in enumerate(self.batches):
        key = jax.random.fold_in(jax.random.key(0x5EED), i)
        out = jax.device_get(self._scalars(state, batch, key))
        for k, v in out.items():
          totals[k] = totals.get(k, 0.0) + float(v) / len(self.batches)
    if not (media and self._media is not None):
      return self._write_scalars(step, totals, writer)
    with timed("previews"):
      with rules_lib.use_mesh(self.setup.mesh, rules):
        shown = self._media(state, self.batches[0], jax.random.key(0x5EED), self.extra_state)
        shown = multihost_utils.process_allgather(shown, tiled=True)
      if hasattr(self.task, "eval_media_scores"):
        totals.update(self.task.eval_media_scores(self.config, self.ecfg, shown))
      scalars = self._write_scalars(step, totals, writer)
      self._write_media(step, shown, writer)
    return scalars

  @staticmethod
  def _write_scalars(step: int, totals: Mapping[str, float], writer) -> dict[str, float]:
    scalars = {f"eval/{k}": v for k, v in totals.items()}
    writer.write(step, scalars)
    return scalars

  def _write_media(self, step: int, shown: Mapping[str, Any], writer) -> None:
    """images {name: uint8 [H, W, 3]}, videos {name: uint8 [N, T, H, W, 3]}, and the
    shown rows' caption_ids / caption_mask (task.eval_captions decodes them) ->
    TensorBoard and WORKDIR/eval/<step>/."""
    if not writer.enabled:
      return
    out = paths.join(self.workdir, "eval", str(step))
    paths.makedirs(out)
    captions = []
    if "caption_ids" in shown and hasattr(self.task, "eval_captions"):
      captions = self.task.eval_captions(self.config, shown["caption_ids"], shown["caption_mask"])
    for name, img in shown.get("images", {}).items():
      img = np.asarray(img)
      writer.image(f"eval/{name}", img, step)
      with paths.open_file(paths.join(out, f"{name}.png"), "wb") as f:
        Image.fromarray(img).save(f, format="PNG")
    for name, clips in shown.get("videos", {}).items():
      for i, clip in enumerate(np.asarray(clips)):
        gif = _gif(clip)
        tag = f"eval/{name}_{i}"
        writer.gif(tag, gif, clip.shape[1], clip.shape[2], step)
        with paths.open_file(paths.join(out, f"{name}_{i}.gif"), "wb") as f:
          f.write(gif)
        if i < len(captions):
          writer.text(tag, captions[i], step)
