"""Context parallelism (models/context_parallel.py): ring and all-to-all attention over a
sequence split on `context`, on 8 CPU devices, against one device's full attention."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from auteur_jax.models import blockwise_attention, context_parallel
from auteur_jax.models.dit import _attend
from auteur_jax.parallel import rules
from auteur_jax.parallel.mesh import make_mesh

B, N, H, K = 2, 64, 8, 16


def _qkv():
  keys = jax.random.split(jax.random.key(0), 4)
  q, k, v = (jax.random.normal(x, (B, N, H, K), jnp.float32) for x in keys[:3])
  g = jax.random.normal(keys[3], (B, N, H, K), jnp.float32)  # Upstream gradient.
  return q, k, v, g


def _value_and_grads(fn, q, k, v, g):
  out, vjp = jax.vjp(fn, q, k, v)
  return (out, *vjp(g))


MESHES = {
  "context4_fsdp2": {"data": 1, "fsdp": 2, "tensor": 1, "context": 4},
  "context8": {"data": 1, "fsdp": 1, "tensor": 1, "context": 8},
  "context2_tensor2_data2": {"data": 2, "fsdp": 1, "tensor": 2, "context": 2},
}


@pytest.mark.parametrize("strategy", ["ring", "all_to_all"])
@pytest.mark.parametrize("mesh_name", sorted(MESHES))
@pytest.mark.parametrize("inner", ["full", "blockwise"])
def test_matches_one_device_full_attention(strategy, mesh_name, inner):
  q, k, v, g = _qkv()
  want = _value_and_grads(_attend, q, k, v, g)
  full = _attend if inner == "full" else functools.partial(blockwise_attention.attend, block=4)
  shape = MESHES[mesh_name]
  if strategy == "all_to_all" and H % (shape["context"] * shape["tensor"]):
    pytest.skip("heads do not divide by context x tensor")
  mesh = make_mesh(shape)
  with rules.use_mesh(mesh):
    spec = rules.logical_to_spec(("batch", "length", "heads", "head_dim"))
    spec = PartitionSpec(*[rules._keep(p, set(mesh.axis_names)) for p in spec])
    put = lambda x: jax.device_put(x, NamedSharding(mesh, spec))  # noqa: E731
    fn = jax.jit(
      lambda q, k, v, g: _value_and_grads(
        lambda q, k, v: context_parallel.attend(
          q, k, v, strategy, full, block=4 if inner == "blockwise" else None
        ),
        q,
        k,
        v,
        g,
      )
    )
    args = [put(x) for x in (q, k, v, g)]
    got = fn(*args)
    hlo = fn.lower(*args).as_text()
  # The strategy really ran: its collective is in the program.
  assert ("collective_permute" if strategy == "ring" else "all_to_all") in hlo
  for w, x in zip(want, got, strict=True):
    np.testing.assert_allclose(np.asarray(x), np.asarray(w), rtol=1e-5, atol=1e-5)


def test_ring_backward_keeps_no_hop_scores():
  """Ring attention's gradient on 8 devices needs less scratch than one hop's scores for
  every hop (what autodiff through the hops would keep)."""
  b, n, h, c = 1, 2048, 2, 8
  x = jnp.ones((b, n, h, K), jnp.float32)
  mesh = make_mesh({"data": 1, "fsdp": 1, "tensor": 1, "context": c})
  with rules.use_mesh(mesh):
    loss = lambda q, k, v: context_parallel.attend(q, k, v, "ring", _attend, 32).sum()  # noqa: E731
    put = NamedSharding(mesh, PartitionSpec(None, "context"))
    args = [jax.device_put(x, put) for _ in range(3)]
    mem = jax.jit(jax.grad(loss, (0, 1, 2))).lower(*args).compile().memory_analysis()
  every_hop = c * b * h * (n // c) ** 2 * 4
  assert 0 < mem.temp_size_in_bytes < every_hop / 2


def test_all_to_all_needs_heads_divisible_by_context_x_tensor():
  q, k, v, _ = _qkv()
  mesh = make_mesh({"data": 1, "fsdp": 1, "tensor": 1, "context": 8})
  with rules.use_mesh(mesh):
    with pytest.raises(ValueError, match="heads must divide by context x tensor"):
      context_parallel.attend(q[:, :, :4], k[:, :, :4], v[:, :, :4], "all_to_all", _attend)


def test_without_a_context_axis_every_strategy_is_full():
  q, k, v, _ = _qkv()
  want = _attend(q, k, v)
  for strategy in context_parallel.STRATEGIES:
    np.testing.assert_allclose(context_parallel.attend(q, k, v, strategy, _attend), want)
  with pytest.raises(ValueError, match="context_parallel"):
    context_parallel.attend(q, k, v, "nope", _attend)
