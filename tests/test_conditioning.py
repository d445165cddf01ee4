"""Visual-embedding regularisation z' = Shuffle(Mask(z + eps)): statistics and config."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from auteur_jax.diffusion.conditioning import VisualRegConfig, estimate_embedding_std, regularize

B, K, D = 512, 64, 16


def _z(seed=0, std=2.0):
  return std * jax.random.normal(jax.random.key(seed), (B, K, D)) + 1.0


def test_mask_and_shuffle_fractions():
  z = _z()
  cfg = VisualRegConfig(mask_prob=0.25, shuffle_prob=0.25, noise_scale=0.0)
  r = regularize(jax.random.key(1), z, cfg)
  assert float(r.masked.mean()) == pytest.approx(0.25, abs=0.01)
  assert float(r.picked.mean()) == pytest.approx(0.25, abs=0.01)
  # Masked tokens are zero before the shuffle; zero tokens count is preserved after it.
  zero_after = jnp.all(r.z == 0, axis=-1)
  np.testing.assert_array_equal(zero_after.sum(1), r.masked.sum(1))
  # Positions outside the pick keep their own token; picked ones are a permutation.
  src = np.asarray(r.source)
  picked = np.asarray(r.picked)
  rows = np.arange(K)[None].repeat(B, 0)
  np.testing.assert_array_equal(src[~picked], rows[~picked])
  for b in range(8):
    assert sorted(src[b][picked[b]]) == sorted(np.nonzero(picked[b])[0])
  moved = float(np.mean(src != rows))
  # A random permutation of n items fixes one on average: moved ~ 0.25 - 1 / K.
  assert moved == pytest.approx(0.25 - 1 / K, abs=0.015)
  # The output is the masked input gathered at `source`.
  masked_z = jnp.where(r.masked[..., None], 0.0, z)
  np.testing.assert_array_equal(r.z, jnp.take_along_axis(masked_z, r.source[..., None], 1))


def test_noise_std_is_scale_times_embedding_std():
  z = _z(std=2.0)
  std = estimate_embedding_std(np.asarray(z), num_samples=2000)
  assert std == pytest.approx(2.0, rel=0.01)
  cfg = VisualRegConfig(mask_prob=0.0, shuffle_prob=0.0, noise_scale=0.5, embedding_std=std)
  r = regularize(jax.random.key(2), z, cfg)
  assert not bool(r.masked.any()) and not bool(r.picked.any())
  noise = np.asarray(r.z - z)
  assert noise.std() == pytest.approx(0.5 * std, rel=0.01)
  assert abs(noise.mean()) < 0.01


def test_estimate_std_over_batches_and_sample_cap():
  rng = np.random.default_rng(0)
  first = rng.normal(0, 1.0, (100, K, D))
  later = rng.normal(0, 5.0, (100, K, D))
  # Only the first 100 samples count: the wide later batch is ignored.
  assert estimate_embedding_std([first[:60], first[60:], later], 100) == pytest.approx(
    1.0, rel=0.02
  )
  assert estimate_embedding_std([first, later], 200) > 3.0
  with pytest.raises(ValueError, match="expected"):
    estimate_embedding_std([np.zeros((3,))])


def test_config_checks():
  with pytest.raises(ValueError, match="embedding_std is not set"):
    regularize(jax.random.key(0), _z(), VisualRegConfig())
  with pytest.raises(ValueError, match="config.train.visual_reg: unknown key 'mask_p'"):
    VisualRegConfig.from_dict({"mask_p": 0.1})
  with pytest.raises(ValueError, match="mask_prob"):
    VisualRegConfig.from_dict({"mask_prob": 1.5})
  cfg = VisualRegConfig.from_dict({"mask_prob": 0.0, "shuffle_prob": 0.0, "noise_scale": 0.0})
  z = _z()
  np.testing.assert_array_equal(regularize(jax.random.key(0), z, cfg).z, z)
