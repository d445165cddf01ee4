"""FVD: the Frechet distance (exact cases, rank-deficient covariances), the clip features
and `auteur eval fvd` on folders of .npy videos with the shipped toy CLIP."""

import os

import numpy as np
import pytest

from auteur_jax import cli
from auteur_jax.eval import fvd as F
from auteur_jax.eval import video_features


def _gauss(n, f, seed, shift=0.0):
  rng = np.random.default_rng(seed)
  return rng.normal(size=(n, f)) @ rng.normal(size=(f, f)) + shift


def test_identical_sets_are_at_zero_and_the_distance_is_symmetric():
  a, b = _gauss(300, 12, 0), _gauss(200, 12, 1, shift=0.3)
  assert F.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
  assert F.frechet_distance(a, a[::-1]) == pytest.approx(0.0, abs=1e-6)  # Order: no matter.
  assert F.frechet_distance(a, b) == pytest.approx(F.frechet_distance(b, a), rel=1e-10)
  assert F.frechet_distance(a, b) > 0


def test_a_mean_shift_adds_its_squared_length():
  a = _gauss(100, 8, 2)
  direction = np.ones(8) / np.sqrt(8)
  d = [F.frechet_distance(a, a + s * direction) for s in (0.0, 0.5, 1.0, 2.0, 4.0)]
  assert np.all(np.diff(d) > 0)
  np.testing.assert_allclose(d, [0.0, 0.25, 1.0, 4.0, 16.0], atol=1e-8)


def test_closed_form_for_known_gaussians():
  # Diagonal (commuting) covariances: |mu_a - mu_b|^2 + sum (sqrt(s_a) - sqrt(s_b))^2.
  mu_a, mu_b = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
  s_a, s_b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 9.0])
  want = 1.0 + 4.0 + (1.0 + 1.0 + 0.0)
  assert F.frechet_from_stats(mu_a, np.diag(s_a), mu_b, np.diag(s_b)) == pytest.approx(want)
  # Non-commuting: against the 2 x 2 closed form tr((A B)^1/2) = sqrt(tr(AB) + 2 sqrt(det AB)).
  A = np.array([[2.0, 0.5], [0.5, 1.0]])
  B = np.array([[1.0, -0.3], [-0.3, 3.0]])
  AB = A @ B
  tr_sqrt = np.sqrt(np.trace(AB) + 2 * np.sqrt(np.linalg.det(AB)))
  assert F.trace_sqrt_product(A, B) == pytest.approx(tr_sqrt, rel=1e-12)
  want = 2.0 + np.trace(A) + np.trace(B) - 2 * tr_sqrt
  assert F.frechet_from_stats(np.zeros(2), A, np.array([1.0, 1.0]), B) == pytest.approx(want)


def test_rank_deficient_covariances():
  rng = np.random.default_rng(3)
  v = rng.normal(size=(6, 2))
  c = v @ v.T  # Rank 2 of 6.
  r = F.sqrt_psd(c)
  np.testing.assert_allclose(r @ r, c, atol=1e-10)
  assert np.allclose(r, r.T) and np.all(np.isreal(r))
  assert F.trace_sqrt_product(np.diag([1.0, 0.0]), np.diag([4.0, 9.0])) == pytest.approx(2.0)
  few = rng.normal(size=(3, 16))  # 3 samples, 16 features: covariance of rank 2.
  assert F.frechet_distance(few, few) == pytest.approx(0.0, abs=1e-9)
  assert F.frechet_distance(few, few + 1.0) == pytest.approx(16.0, abs=1e-8)
  with pytest.raises(ValueError, match="2 samples"):
    F.frechet_distance(few[:1], few)


def _videos(seed, n=3, t=4, size=32, bright=0):
  rng = np.random.default_rng(seed)
  x = rng.integers(0, 120, size=(n, t, size, size, 3)) + bright
  return [v.astype(np.uint8) for v in x]


def _folder(path, videos):
  os.makedirs(path)
  for i, v in enumerate(videos):
    np.save(os.path.join(path, f"v{i}.npy"), v)
  return str(path)


@pytest.fixture(scope="module")
def toy_clip():
  return video_features.load_clip_tower()  # The shipped toy CLIP.


def test_clip_features_and_fvd_with_a_loaded_model(toy_clip):
  extract = video_features.get("clip", model=toy_clip)
  real, fake = _videos(0), _videos(1, bright=120)
  feats = extract(real)
  assert feats.shape == (3, 128) and feats.dtype == np.float64 and extract.dim == 128
  still = [np.repeat(v[:1], 4, axis=0) for v in real]
  assert np.all(extract(still)[:, 64:] == 0)  # No motion in a still video.
  assert F.fvd(real, real, extract) == pytest.approx(0.0, abs=1e-6)
  assert F.fvd(real, fake, "clip", model=toy_clip) > F.fvd(real, _videos(2), extract)


def test_cli_fvd_on_npy_folders(tmp_path, capsys):
  real = _folder(tmp_path / "real", _videos(0))
  fake = _folder(tmp_path / "fake", _videos(1, bright=120))
  cli.main(["eval", "fvd", "--real", real, "--fake", real, "--features", "clip"])
  assert float(capsys.readouterr().out) == pytest.approx(0.0, abs=1e-4)
  cli.main(["eval", "fvd", "--real", real, "--fake", fake, "--frames", "2"])
  assert float(capsys.readouterr().out) > 0
  assert sorted(os.listdir(tmp_path)) == ["fake", "real"]  # Writes nothing.


def test_cli_fvd_bad_input_is_one_line(tmp_path):
  real = _folder(tmp_path / "real", _videos(0))
  small = _folder(tmp_path / "small", _videos(1, size=16))
  os.makedirs(tmp_path / "empty")
  cases = [
    (["--fake", str(tmp_path / "empty")], "empty: 0 videos; expected at least 2"),
    (["--fake", small], "v0.npy: frames 16x16 (WxH); expected 32x32"),
    (["--fake", real, "--features", "i3d"], "features 'i3d' is unknown; expected one of"),
    (["--fake", real, "--frames", "9"], "v0.npy: 4 frames; expected at least 9"),
    (["--fake", real, "--checkpoint", str(tmp_path / "nope")], "nope does not exist"),
    (["--fake", real, "--features", "videomae"], "videomae features need weights"),
  ]
  for extra, message in cases:
    with pytest.raises(SystemExit) as e:
      cli.main(["eval", "fvd", "--real", real, *extra])
    assert message in str(e.value) and "\n" not in str(e.value), (extra, e.value)


def test_a_folder_of_mp4_gif_and_npy_videos(tmp_path):
  from PIL import Image

  from auteur_jax.data import video_io
  from auteur_jax.eval import video_sets

  v = _videos(0, n=1, t=5)[0]
  video_io.write_video(str(tmp_path / "a.mp4"), v, 8)
  frames = [Image.fromarray(f) for f in v]
  frames[0].save(tmp_path / "b.gif", save_all=True, append_images=frames[1:], duration=125)
  np.save(tmp_path / "c.npy", v)
  (tmp_path / "notes.txt").write_text("not a video")
  got = video_sets.read_folder(str(tmp_path))
  assert [os.path.basename(p) for p in got] == ["a.mp4", "b.gif", "c.npy"]
  assert all(x.shape == (5, 32, 32, 3) and x.dtype == np.uint8 for x in got.values())
  assert video_sets.take_frames(v, 3).tolist() == v[[0, 2, 4]].tolist()
