"""Rectified flow: noising, loss, time sampling, samplers on a Gaussian toy, guidance."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from auteur_jax.diffusion import flow

MU, SIGMA = 2.0, 0.5  # Target distribution N(MU, SIGMA^2) per coordinate.


def optimal_velocity(x, t):
  """E[eps - x0 | x_t = x] for x0 ~ N(MU, SIGMA^2), eps ~ N(0, 1) (closed form)."""
  t = t[:, None]
  gain = (t - (1 - t) * SIGMA**2) / ((1 - t) ** 2 * SIGMA**2 + t**2)
  return -MU + gain * (x - (1 - t) * MU)


def test_noising_and_exact_velocity_loss():
  k0, k1 = jax.random.split(jax.random.key(0))
  x0 = jax.random.normal(k0, (3, 2, 4, 4, 5))
  eps = jax.random.normal(k1, x0.shape)
  t = jnp.array([0.0, 0.5, 1.0])
  xt = flow.add_noise(x0, eps, t)
  np.testing.assert_allclose(xt[0], x0[0])
  np.testing.assert_allclose(xt[2], eps[2])
  np.testing.assert_allclose(xt[1], 0.5 * (x0[1] + eps[1]), atol=1e-6)
  v = flow.velocity_target(x0, eps)
  # The target is d x_t / dt: a finite difference in t agrees.
  np.testing.assert_allclose(flow.add_noise(x0, eps, t + 1e-3) - xt, 1e-3 * v, atol=1e-5)
  assert float(flow.flow_loss(v, x0, eps)) == 0.0
  assert float(flow.flow_loss(v + 0.1, x0, eps)) == pytest.approx(0.01, rel=1e-4)
  # Weighted: only the first example counts.
  bad = v.at[1:].add(1.0)
  mask = jnp.array([1.0, 0.0, 0.0]).reshape(3, 1, 1, 1, 1)
  assert float(flow.flow_loss(bad, x0, eps, mask)) == 0.0
  with pytest.raises(ValueError, match="velocity prediction shape"):
    flow.flow_loss(v[:, :1], x0, eps)


def test_time_sampling_and_shift():
  t = jnp.linspace(0, 1, 11)
  np.testing.assert_allclose(flow.shift_time(t, 1.0), t, atol=1e-7)
  shifted = flow.shift_time(t, 3.0)
  assert float(shifted[0]) == 0.0 and float(shifted[-1]) == pytest.approx(1.0)
  assert bool(jnp.all(shifted[1:-1] > t[1:-1]))  # Towards noise.
  assert float(flow.shift_time(jnp.array(0.5), 3.0)) == pytest.approx(0.75)
  key = jax.random.key(1)
  u = flow.sample_time(key, 20000, "uniform")
  assert 0 < float(u.min()) and float(u.max()) < 1
  assert float(u.mean()) == pytest.approx(0.5, abs=0.01)
  ln = flow.sample_time(key, 20000, "logit_normal")
  assert float(jnp.median(ln)) == pytest.approx(0.5, abs=0.02)
  # Logit-normal piles up mid-range: fewer samples in the outer tenths than uniform.
  assert float(jnp.mean((ln < 0.1) | (ln > 0.9))) < 0.1
  ln_shift = flow.sample_time(key, 20000, "logit_normal", shift=3.0)
  assert float(jnp.median(ln_shift)) == pytest.approx(0.75, abs=0.02)
  with pytest.raises(ValueError, match="unknown"):
    flow.sample_time(key, 4, "beta")
  grid = flow.time_grid(4, 3.0)
  assert grid.shape == (5,) and float(grid[0]) == 1.0 and float(grid[-1]) == 0.0
  assert bool(jnp.all(jnp.diff(grid) < 0))


def _moments(x):
  return float(x.mean()), float(x.std())


def test_samplers_match_gaussian_target():
  noise = jax.random.normal(jax.random.key(2), (16384, 4))
  # Tolerances: sampling error of 65k values (~0.002 on the mean) plus the solver's bias.
  mean, std = _moments(flow.euler_sample(optimal_velocity, noise, 200))
  assert mean == pytest.approx(MU, abs=0.01) and std == pytest.approx(SIGMA, rel=0.03)
  mean, std = _moments(flow.heun_sample(optimal_velocity, noise, 20, shift=3.0))
  assert mean == pytest.approx(MU, abs=0.01) and std == pytest.approx(SIGMA, rel=0.015)
  # Second order: at equal steps Heun's std error is far below Euler's.
  err_euler = abs(_moments(flow.euler_sample(optimal_velocity, noise, 10))[1] - SIGMA)
  err_heun = abs(_moments(flow.heun_sample(optimal_velocity, noise, 10))[1] - SIGMA)
  assert err_heun < 0.2 * err_euler
  # A wrong field misses the target: the test can fail.
  wrong = flow.euler_sample(lambda x, t: optimal_velocity(x, t) + 0.3, noise, 200)
  assert abs(_moments(wrong)[0] - MU) > 0.2


def test_guidance_formula():
  v_none, v_vis, v_full = jnp.array(1.0), jnp.array(3.0), jnp.array(7.0)
  assert float(flow.combine_guidance(v_none, v_vis, v_full, 1.0, 1.0)) == 7.0
  assert float(flow.combine_guidance(v_none, v_vis, v_full, 0.0, 1.0)) == 3.0
  assert float(flow.combine_guidance(v_none, v_vis, v_full, 0.0, 0.0)) == 1.0
  # 1 + 2 * (3 - 1) + 5 * (7 - 3) = 25; equal scales are ordinary CFG 1 + 4 * (7 - 1).
  assert float(flow.combine_guidance(v_none, v_vis, v_full, 5.0, 2.0)) == 25.0
  assert float(flow.combine_guidance(v_none, v_vis, v_full, 4.0, 4.0)) == 25.0

  def fn(x, t, text, visual):  # Velocity = what the conditions contribute.
    v = x + text.sum((1, 2))[:, None]
    return v if visual is None else v + 10 * visual.sum((1, 2))[:, None]

  x, t = jnp.zeros((2, 3)), jnp.zeros((2,))
  text, vis = jnp.ones((2, 4, 1)), jnp.ones((2, 1, 1))
  g = flow.guided_velocity(fn, text, vis, jnp.zeros_like(text), jnp.zeros_like(vis), 5.0, 2.0)
  # v_none = 0, v_vis = 10, v_full = 14 -> 0 + 2 * 10 + 5 * 4 = 40.
  np.testing.assert_allclose(g(x, t), 40.0)
  g_text = flow.guided_velocity(fn, text, None, jnp.zeros_like(text), None, 3.0, 99.0)
  np.testing.assert_allclose(g_text(x, t), 12.0)


def test_condition_dropout():
  text, vis = jnp.ones((4000, 3, 2)), jnp.ones((4000, 5, 2))
  t2, v2, keep_t, keep_v = flow.drop_conditions(jax.random.key(3), text, vis, 0.1, 0.3)
  assert float(1 - keep_t.mean()) == pytest.approx(0.1, abs=0.02)
  assert float(1 - keep_v.mean()) == pytest.approx(0.3, abs=0.03)
  np.testing.assert_array_equal(t2.sum((1, 2)) > 0, keep_t)
  np.testing.assert_array_equal(v2.sum((1, 2)) > 0, keep_v)
  # Independent draws: both dropped about p_text * p_visual of the time.
  both = float(jnp.mean(~keep_t & ~keep_v))
  assert both == pytest.approx(0.03, abs=0.012)
  with pytest.raises(ValueError, match="p_text"):
    flow.drop_conditions(jax.random.key(0), text, vis, 1.5, 0.0)
