"""Fused attention kernels (models/attention_kernels.py): splash in Pallas interpret mode
on CPU equals full attention (values and gradients, padded lengths); clear errors where a
kernel does not exist."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from auteur_jax.models import attention_kernels as ak
from auteur_jax.models.dit import _attend


def _value_and_grads(fn, q, k, v, g):
  out, vjp = jax.vjp(fn, q, k, v)
  return (out, *vjp(g))


# Lengths that are no multiple of the block; 200 keys a block round up to 256 (2 blocks).
@pytest.mark.parametrize("n,block", [(48, 512), (130, 128), (300, 200)])
def test_splash_interpret_equals_full(n, block):
  keys = jax.random.split(jax.random.key(n), 4)
  q, k, v, g = (jax.random.normal(x, (2, n, 2, 16), jnp.float32) for x in keys)
  want = _value_and_grads(_attend, q, k, v, g)
  splash = functools.partial(ak.splash, block=block)
  got = jax.jit(lambda *a: _value_and_grads(splash, *a))(q, k, v, g)
  for w, x in zip(want, got, strict=True):
    np.testing.assert_allclose(np.asarray(x), np.asarray(w), rtol=1e-5, atol=1e-5)


def test_kernels_refuse_platforms_without_them():
  with pytest.raises(ValueError, match="'splash' needs TPU"):
    ak.check_platform("splash", "cuda")
  with pytest.raises(ValueError, match="'cudnn' needs an NVIDIA GPU"):
    ak.check_platform("cudnn", "cpu")
  assert ak.check_platform("splash", "tpu") == "tpu"
  q = jnp.zeros((1, 8, 2, 16), jnp.bfloat16)
  with pytest.raises(
    ValueError, match="'cudnn' needs an NVIDIA GPU; this computation is for 'cpu'"
  ):
    ak.cudnn(q, q, q)


def test_dit_with_splash_equals_full():
  from test_dit import CFG, _build, _fwd, _inputs

  x, t, text, vis = _inputs(b=2, t=2, h=4, w=4)
  ref = _fwd(_build(), x, t, text, vis)
  out = _fwd(_build(dataclasses.replace(CFG, attention="splash")), x, t, text, vis)
  np.testing.assert_allclose(np.asarray(out), np.asarray(ref), rtol=1e-5, atol=1e-5)


def test_splash_on_a_mesh_runs_per_device_and_refuses_a_split_sequence():
  from auteur_jax.parallel import rules
  from auteur_jax.parallel.mesh import make_mesh

  keys = jax.random.split(jax.random.key(1), 3)
  q, k, v = (jax.random.normal(x, (2, 48, 2, 16), jnp.float32) for x in keys)
  want = _attend(q, k, v)
  with rules.use_mesh(make_mesh({"data": 2, "fsdp": 2, "tensor": 2})):
    got = jax.jit(ak.splash)(q, k, v)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)
  with rules.use_mesh(make_mesh({"data": 2, "context": 2, "tensor": 2})):
    with pytest.raises(ValueError, match="set config.model.context_parallel"):
      jax.jit(ak.splash)(q, k, v)
