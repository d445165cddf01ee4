"""Video feature extractors for FVD (eval/fvd.py), by name: `clip` and `videomae`.

An extractor maps videos (each uint8 [T, H, W, 3]) to float64 features [N, F]. Get one
with `get(name, checkpoint=, model=, frames=)`; pass `model=` (already loaded) to build it
without reading files, and build it once when calling it many times (it holds the
jitted model).

clip (`ClipVideoFeatures`): our own CLIP vision tower (models/vision.py), by default the
  shipped toy CLIP (assets/checkpoints/toy/clip); any `clip` training run or converted
  clip_vision / siglip_vision checkpoint serves. Each frame -> its pooled image embedding
  e_t, unit norm (the CLIP-T space, with eval/clip_score.py's pre-processing: centre crop
  to a square, bicubic resize to the tower's size, the family's pixel statistics). Video
  feature = [mean_t e_t, mean_t |e_{t+1} - e_t|] (2P values): what the clip shows, plus
  how much each embedding coordinate moves from frame to frame, a motion term that a
  frame-wise feature alone would miss (zeros for one-frame videos). `frames`: that many
  frames evenly spaced over each video (default: all).
videomae (`VideoMAEFeatures`): models/videomae.py with the user's weights, an orbax
  checkpoint made by `auteur convert import --family videomae` from an HF VideoMAE folder.
  Each video -> cfg.num_frames frames evenly spaced, each frame short side resized to the
  model's size and centre-cropped, ImageNet pixel statistics -> `VideoMAE.features`
  (mean-pooled last hidden state, then fc_norm for classification checkpoints).
No i3d: pytorchvideo 0.1.5, the pip-installable PyTorch I3D, installs from the registry
  but does not import here without torchvision (a second torch-family dependency), and its
  I3D is a ResNet-50 (`i3d_r50`, weights fetched from a URL at run time), not the
  Kinetics-400 Inception I3D that published FVD numbers use, so it was not ported.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any, Protocol, cast

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from auteur_jax.checkpoint import layout
from auteur_jax.checkpoint.restore import restore_model
from auteur_jax.data.video_io import resize_center_crop
from auteur_jax.eval.video_sets import take_frames
from auteur_jax.models.videomae import VideoMAE, VideoMAEConfig, normalize_video
from auteur_jax.models.vision import VisionConfig, VisionTower, normalize_pixels

TOY_CLIP = os.path.join(
  os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
  "assets",
  "checkpoints",
  "toy",
  "clip",
)
WHERE = "--checkpoint"  # What restore errors name.


class FeatureError(ValueError):
  """An extractor cannot be built: unknown name, wrong checkpoint, bad frame count."""


class VideoFeatures(Protocol):
  """Videos (uint8 [T, H, W, 3] each) -> float64 [N, dim]."""

  num_frames: int | None  # Frames each video needs at least (None: any number).
  dim: int

  def __call__(self, videos: Sequence[np.ndarray]) -> np.ndarray: ...


def _square(frames: np.ndarray) -> np.ndarray:
  """[..., H, W, 3] -> the centred square of side min(H, W)."""
  h, w = frames.shape[-3:-1]
  s = min(h, w)
  return frames[..., (h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s, :]


def _check(videos: Sequence[np.ndarray], need: int | None) -> None:
  if not len(videos):
    raise FeatureError("no videos")
  for i, v in enumerate(videos):
    if v.dtype != np.uint8 or v.ndim != 4 or v.shape[-1] != 3:
      raise FeatureError(f"video {i}: {v.dtype} {v.shape}; expected uint8 [T, H, W, 3]")
    if need is not None and v.shape[0] < need:
      raise FeatureError(f"video {i}: {v.shape[0]} frames; expected at least {need}")


class ClipVideoFeatures:
  """The `clip` extractor (module docstring); features [N, 2P]."""

  def __init__(self, tower: VisionTower, frames: int | None = None, batch_frames: int = 64):
    self.num_frames: int | None = frames
    self.batch = batch_frames
    vcfg = tower.cfg
    self.dim = 2 * (
      vcfg.projection_dim if vcfg.family == "clip" and vcfg.projection_dim else vcfg.width
    )
    graphdef, params = nnx.split(tower)
    s = vcfg.image_size

    @jax.jit
    def embed(params, x):
      x = x.astype(jnp.float32)
      if x.shape[1:3] != (s, s):
        x = jnp.clip(jax.image.resize(x, (x.shape[0], s, s, 3), "bicubic", antialias=True), 0, 255)
      e = nnx.merge(graphdef, params).embed_images(normalize_pixels(x / 255.0, vcfg.family))
      e = e.astype(jnp.float32)
      return e / jnp.linalg.norm(e, axis=-1, keepdims=True)

    self._embed = lambda x: np.asarray(embed(params, x))

  def frame_embeddings(self, frames: np.ndarray) -> np.ndarray:
    """uint8 [M, H, W, 3] -> float32 [M, P], unit norm; fixed-size batches (one compile)."""
    frames = _square(frames)
    out = []
    for i in range(0, len(frames), self.batch):
      chunk = frames[i : i + self.batch]
      pad = self.batch - len(chunk)
      if pad:
        chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)])
      out.append(self._embed(chunk)[: self.batch - pad])
    return np.concatenate(out)

  def __call__(self, videos: Sequence[np.ndarray]) -> np.ndarray:
    _check(videos, self.num_frames)
    clips = [take_frames(v, self.num_frames) for v in videos]
    sizes = {c.shape[1:3] for c in clips}
    if len(sizes) > 1:
      raise FeatureError(f"videos of several frame sizes {sorted(sizes)}; expected one")
    e = self.frame_embeddings(np.concatenate(clips)).astype(np.float64)
    out, start = [], 0
    for c in clips:
      f = e[start : start + len(c)]
      start += len(c)
      motion = np.abs(np.diff(f, axis=0)).mean(0) if len(f) > 1 else np.zeros(f.shape[1])
      out.append(np.concatenate([f.mean(0), motion]))
    return np.stack(out)


class VideoMAEFeatures:
  """The `videomae` extractor (module docstring); features [N, D]."""

  def __init__(self, model: VideoMAE, frames: int | None = None, batch_videos: int = 4):
    cfg = model.cfg
    if frames is not None and frames != cfg.num_frames:
      raise FeatureError(f"frames={frames}: this VideoMAE takes exactly {cfg.num_frames} frames")
    self.num_frames: int | None = cfg.num_frames  # Exactly these are taken.
    self.dim, self.batch, self.size = cfg.width, batch_videos, cfg.image_size
    graphdef, params = nnx.split(model)

    @jax.jit
    def features(params, x):
      return nnx.merge(graphdef, params).features(normalize_video(x))

    self._features = lambda x: np.asarray(features(params, x))

  def _prepare(self, video: np.ndarray) -> np.ndarray:
    v = take_frames(video, self.num_frames)  # The model's num_frames.
    return np.stack([resize_center_crop(f, self.size) for f in v])

  def __call__(self, videos: Sequence[np.ndarray]) -> np.ndarray:
    _check(videos, self.num_frames)
    out = []
    for i in range(0, len(videos), self.batch):
      x = np.stack([self._prepare(v) for v in videos[i : i + self.batch]])
      pad = self.batch - len(x)
      if pad:
        x = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)])
      out.append(self._features(x)[: self.batch - pad])
    return np.concatenate(out).astype(np.float64)


def _config_item(path: str) -> dict:
  if not os.path.exists(path):
    raise FileNotFoundError(f"{WHERE}: {path} does not exist")
  item = layout.read_config_item(layout.find_step_dir(path))
  if not item:
    raise FeatureError(f"{WHERE}: {path} has no `config` item; cannot tell the model's shapes")
  return item


def load_clip_tower(checkpoint: str | None = None) -> VisionTower:
  """The CLIP / SigLIP vision tower of a `clip` run or a converted clip_vision /
  siglip_vision checkpoint (default: the shipped toy CLIP)."""
  path = checkpoint or TOY_CLIP
  item = _config_item(path)
  rec = item.get(layout.RECORD)
  if rec is not None and rec.get("family") in ("clip_vision", "siglip_vision"):
    cfg, prefix = VisionConfig.from_dict(rec["cfg"], f"{path}: cfg"), tuple(rec["prefix"])
  elif rec is None and item.get("task") == "clip":
    cfg, prefix = VisionConfig.from_dict(item["model"]["vision"]), ("model", "vision")
  else:
    what = rec.get("family") if rec else item.get("task")
    raise FeatureError(
      f"{WHERE}: {path} holds a {what!r} model; expected a `clip` training run or a "
      "clip_vision / siglip_vision conversion"
    )
  return cast(
    VisionTower, restore_model(path, lambda: VisionTower(cfg, rngs=nnx.Rngs(0)), prefix, WHERE)
  )


def load_videomae(checkpoint: str | None) -> VideoMAE:
  """The VideoMAE of a checkpoint converted by `auteur convert import --family videomae`."""
  hint = "`auteur convert import --family videomae --src HF_FOLDER --dst PATH`"
  if not checkpoint:
    raise FeatureError(f"{WHERE}: videomae features need weights; convert them with {hint}")
  if os.path.isfile(os.path.join(checkpoint, "config.json")):
    raise FeatureError(f"{WHERE}: {checkpoint} is an HF folder; convert it first with {hint}")
  rec = _config_item(checkpoint).get(layout.RECORD)
  if rec is None or rec.get("family") != "videomae":
    what = rec.get("family") if rec else "training run"
    raise FeatureError(f"{WHERE}: {checkpoint} holds a {what!r} model; expected {hint}")
  cfg = VideoMAEConfig.from_dict(rec["cfg"], f"{checkpoint}: cfg")
  return cast(
    VideoMAE,
    restore_model(checkpoint, lambda: VideoMAE(cfg, rngs=nnx.Rngs(0)), tuple(rec["prefix"]), WHERE),
  )


def clip_features(
  checkpoint: str | None = None, model: Any = None, frames: int | None = None
) -> ClipVideoFeatures:
  """`clip` from a VisionTower or ClipModel already loaded, else from `checkpoint`."""
  tower = model.vision if hasattr(model, "vision") else model
  return ClipVideoFeatures(tower if tower is not None else load_clip_tower(checkpoint), frames)


def videomae_features(
  checkpoint: str | None = None, model: VideoMAE | None = None, frames: int | None = None
) -> VideoMAEFeatures:
  """`videomae` from a VideoMAE already loaded, else from the converted `checkpoint`."""
  return VideoMAEFeatures(model if model is not None else load_videomae(checkpoint), frames)


EXTRACTORS: dict[str, Callable[..., VideoFeatures]] = {
  "clip": clip_features,
  "videomae": videomae_features,
}


def get(
  name: str, *, checkpoint: str | None = None, model: Any = None, frames: int | None = None
) -> VideoFeatures:
  """The extractor `name` (EXTRACTORS), built from `model` or `checkpoint`."""
  if name not in EXTRACTORS:
    raise FeatureError(f"features {name!r} is unknown; expected one of {sorted(EXTRACTORS)}")
  if frames is not None and frames < 1:
    raise FeatureError(f"frames={frames}; expected a positive frame count")
  return EXTRACTORS[name](checkpoint=checkpoint, model=model, frames=frames)
