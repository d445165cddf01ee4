"""The head cross-entropy with its written-out backward against plain autodiff."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from auteur_jax.models.cross_entropy import head_cross_entropy


def _reference(h, table, targets):
  logp = jax.nn.log_softmax(jnp.einsum("...w,vw->...v", h, table), axis=-1)
  return -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]


def test_values_and_gradients_equal_autodiff_of_log_softmax():
  rng = np.random.default_rng(0)
  h = jnp.asarray(rng.normal(size=(3, 5, 16)), jnp.float32)
  table = jnp.asarray(rng.normal(size=(40, 16)), jnp.float32)
  targets = jnp.asarray(rng.integers(0, 40, (3, 5)), jnp.int32)
  weights = jnp.asarray(rng.random((3, 5)), jnp.float32)  # Not all tokens count the same.

  nll, top = head_cross_entropy(h, table, targets)
  np.testing.assert_allclose(np.asarray(nll), np.asarray(_reference(h, table, targets)), rtol=1e-5)
  logits = np.asarray(jnp.einsum("...w,vw->...v", h, table))
  np.testing.assert_array_equal(np.asarray(top), logits.argmax(-1) == np.asarray(targets))

  def ours(h, table):
    return jnp.sum(head_cross_entropy(h, table, targets)[0] * weights)

  def theirs(h, table):
    return jnp.sum(_reference(h, table, targets) * weights)

  got = jax.jit(jax.grad(ours, argnums=(0, 1)))(h, table)
  want = jax.grad(theirs, argnums=(0, 1))(h, table)
  for g, w in zip(got, want):
    np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-5, atol=1e-6)


def test_targets_of_another_shape_are_named():
  with pytest.raises(ValueError, match=r"targets: expected shape \(3, 5\)"):
    head_cross_entropy(jnp.zeros((3, 5, 4)), jnp.zeros((7, 4)), jnp.zeros((3, 4), jnp.int32))
