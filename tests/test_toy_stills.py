"""Dense toy stills: every slot can hold a piece; written as 1-frame clip records."""

import json

import numpy as np
import pytest

from auteur_jax.data import pipeline, toy_draw, toy_stills, video_io


def _filled_slots(img: np.ndarray, bare: np.ndarray) -> int:
  """Slots whose box differs from the bare surface under the same flags."""
  n = 0
  for loc in toy_draw.SLOTS:
    for g in range(toy_draw.NUM_GROUPS):
      y0, y1, x0, x1 = toy_draw.slot_box(loc, g, img.shape[0], margin=0)
      n += bool((img[y0:y1, x0:x1] != bare[y0:y1, x0:x1]).any())
  return n


def _bare(img: np.ndarray) -> np.ndarray:
  """The surface a still was drawn on (its flags read back from fixed pixels)."""
  geo = toy_draw.geometry(img.shape[0])
  for heat in (False, True):
    for liquid in toy_draw.LIQUIDS:
      for herbs in (False, True):
        s = toy_draw.surface(img.shape[0], heat, liquid, herbs)
        if (
          (s[geo.burner] == img[geo.burner]).all()
          and (s[geo.pot_free] == img[geo.pot_free]).all()
          and (s[geo.plate_free] == img[geo.plate_free]).all()
        ):
          return s
  raise AssertionError("no surface matches the still's flags")


def test_stills_are_dense_and_seeded():
  a = toy_stills.render_still(64, np.random.default_rng(3), fill=1.0)
  b = toy_stills.render_still(64, np.random.default_rng(3), fill=1.0)
  np.testing.assert_array_equal(a, b)
  assert a.shape == (64, 64, 3) and a.dtype == np.uint8
  assert _filled_slots(a, _bare(a)) == 16  # Every slot of the four surfaces.
  rng = np.random.default_rng(0)
  counts = [
    _filled_slots(s, _bare(s))
    for s in (toy_stills.render_still(64, rng, fill=0.5) for _ in range(20))
  ]
  assert 4 <= np.mean(counts) <= 12


def test_write_stills_reads_as_clips(tmp_path):
  summary = toy_stills.write_stills(str(tmp_path), 10, seed=1, num_shards=2, progress=False)
  assert json.loads((tmp_path / "dataset.json").read_text()) == summary
  files = pipeline.split_files(str(tmp_path), "train", "clips")
  assert len(files) == 2
  it = iter(pipeline.make_dataset(files, pipeline.ClipDecoder(num_frames=1), 5, seed=0))
  batch = next(it)
  assert batch["frames"].shape == (5, 1, 64, 64, 3) and batch["frames"].dtype == np.uint8
  first = video_io.decode_jpeg(
    video_io.encode_jpeg(toy_stills.render_still(64, np.random.default_rng(1)))
  )
  frames = [f[0] for b in (batch, next(it)) for f in b["frames"]]
  assert sum((f == first).all() for f in frames) == 1  # Shuffled, each still once.


@pytest.mark.parametrize(
  "kw, msg", [({"num": 0}, "num must be >= 1"), ({"num": 2, "fill": 0.0}, "fill must be in")]
)
def test_write_stills_errors(tmp_path, kw, msg):
  with pytest.raises(ValueError, match=msg):
    toy_stills.write_stills(str(tmp_path / "s"), progress=False, **kw)
  assert not (tmp_path / "s").exists()
