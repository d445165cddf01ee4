"""Frechet video distance: the Frechet distance between Gaussians fitted to two feature sets.

  d^2 = |mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a^1/2 S_b S_a^1/2)^1/2)

(the squared 2-Wasserstein distance of N(mu_a, S_a) and N(mu_b, S_b); FID / FVD report
d^2 itself). Everything is float64. The trace term uses tr((S_a S_b)^1/2) =
tr((S_a^1/2 S_b S_a^1/2)^1/2), whose inner matrix is symmetric positive semi-definite: two
symmetric eigen-decompositions with eigenvalues clipped at 0, so no complex numbers and no
failure when a covariance is singular (fewer samples than feature dimensions, constant
features). Units: those of the features, squared.

The features of a video come from an extractor named in eval/video_features.py (`clip`,
`videomae`); `fvd` runs one on two video sets, `fvd_of_folders` on two folders
(eval/video_sets.py) — what `auteur eval fvd` calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from auteur_jax.eval import video_features, video_sets


def _null_to_zero(w: np.ndarray) -> np.ndarray:
  """Eigenvalues of a PSD matrix with those at round-off level (<= F eps max|w|, the
  numerical rank's cut, as numpy's matrix_rank) set to 0; sqrt of round-off would add
  ~1e-8 per null direction."""
  tol = w.size * np.finfo(np.float64).eps * max(float(np.max(np.abs(w), initial=0.0)), 1e-300)
  return np.where(w > tol, w, 0.0)


def sqrt_psd(a: np.ndarray) -> np.ndarray:
  """The symmetric square root of a symmetric PSD matrix [F, F] (float64), via eigh;
  round-off and negative eigenvalues count as 0, so rank-deficient inputs are fine."""
  a = np.asarray(a, np.float64)
  w, v = np.linalg.eigh((a + a.T) / 2)
  return (v * np.sqrt(_null_to_zero(w))) @ v.T


def trace_sqrt_product(a: np.ndarray, b: np.ndarray) -> float:
  """tr((a b)^1/2) for symmetric PSD a, b [F, F]: the sum of the square roots of the
  (non-negative) eigenvalues of a^1/2 b a^1/2."""
  r = sqrt_psd(a)
  m = r @ np.asarray(b, np.float64) @ r
  w = np.linalg.eigvalsh((m + m.T) / 2)
  return float(np.sum(np.sqrt(_null_to_zero(w))))


def gaussian_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Features [N, F] -> (mean [F], covariance [F, F], unbiased), float64; N >= 2."""
  x = np.asarray(x, np.float64)
  if x.ndim != 2 or x.shape[0] < 2:
    raise ValueError(f"features must be [N >= 2, F] (a covariance needs 2 samples), got {x.shape}")
  if not np.all(np.isfinite(x)):
    raise ValueError("features hold NaN or infinite values")
  return x.mean(axis=0), np.atleast_2d(np.cov(x, rowvar=False))


def frechet_from_stats(
  mu_a: np.ndarray, cov_a: np.ndarray, mu_b: np.ndarray, cov_b: np.ndarray
) -> float:
  """The Frechet distance (d^2, see the module docstring) of two Gaussians; >= 0."""
  mu_a, mu_b = np.asarray(mu_a, np.float64), np.asarray(mu_b, np.float64)
  cov_a, cov_b = np.asarray(cov_a, np.float64), np.asarray(cov_b, np.float64)
  if mu_a.shape != mu_b.shape or cov_a.shape != cov_b.shape:
    raise ValueError(
      f"feature sizes differ: means {mu_a.shape} vs {mu_b.shape}, "
      f"covariances {cov_a.shape} vs {cov_b.shape}"
    )
  d = float(np.sum((mu_a - mu_b) ** 2))
  d += float(np.trace(cov_a) + np.trace(cov_b)) - 2.0 * trace_sqrt_product(cov_a, cov_b)
  return max(d, 0.0)  # Round-off can leave -1e-13 for equal sets.


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
  """Features a [N, F] and b [M, F] (N, M >= 2) -> the Frechet distance of their Gaussian
  fits. Symmetric; 0 for identical sets."""
  a, b = np.asarray(a), np.asarray(b)
  if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
    raise ValueError(f"features must be [N, F] and [M, F] with one F, got {a.shape}, {b.shape}")
  return frechet_from_stats(*gaussian_stats(a), *gaussian_stats(b))


def fvd(
  real_videos: Sequence[np.ndarray],
  fake_videos: Sequence[np.ndarray],
  features: str | video_features.VideoFeatures = "clip",
  **kw: Any,
) -> float:
  """FVD of two video sets (each video uint8 [T, H, W, 3]; at least 2 per set).

  features: an extractor's name (eval/video_features.py; `kw` go to its loader, e.g.
  checkpoint=, model=, frames=) or an extractor already built (load once, call often).
  """
  extract = video_features.get(features, **kw) if isinstance(features, str) else features
  return frechet_distance(extract(real_videos), extract(fake_videos))


def fvd_of_folders(
  real_dir: str,
  fake_dir: str,
  features: str = "clip",
  *,
  checkpoint: str | None = None,
  frames: int | None = None,
) -> float:
  """FVD between the videos of two folders (eval/video_sets.py: .mp4, .gif, .npy uint8
  [T, H, W, 3]); every video of both needs one frame size. Raises VideoSetError /
  FeatureError naming the file or the name."""
  extract = video_features.get(features, checkpoint=checkpoint, frames=frames)
  real = video_sets.read_folder(real_dir)
  fake = video_sets.read_folder(fake_dir)
  video_sets.check_same_size({real_dir: real, fake_dir: fake})
  video_sets.check_frames({real_dir: real, fake_dir: fake}, extract.num_frames)
  return frechet_distance(extract(list(real.values())), extract(list(fake.values())))
