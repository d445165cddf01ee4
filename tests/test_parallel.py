"""Meshes and logical axis rules on 8 simulated CPU devices."""

import jax
import numpy as np
import pytest
from flax import nnx

from auteur_jax.parallel import rules as R
from auteur_jax.parallel.mesh import make_mesh


def test_make_mesh_sizes():
  assert dict(make_mesh({"data": 2, "fsdp": -1, "tensor": 2}).shape) == {
    "data": 2,
    "fsdp": 2,
    "tensor": 2,
  }
  assert dict(make_mesh({"fsdp": -1}).shape) == {"fsdp": 8}
  with pytest.raises(ValueError, match="needs 6 devices, this process has 8"):
    make_mesh({"data": 3, "tensor": 2})
  with pytest.raises(ValueError, match="unknown"):
    make_mesh({"model": 8})


class _Mlp(nnx.Module):
  def __init__(self, rngs):
    init = nnx.initializers.lecun_normal()
    self.up = nnx.Linear(
      16, 32, kernel_init=nnx.with_partitioning(init, ("embed", "mlp")), rngs=rngs
    )
    self.down = nnx.Linear(
      32, 16, kernel_init=nnx.with_partitioning(init, ("mlp", "embed")), rngs=rngs
    )

  def __call__(self, x):
    return self.down(R.constrain(jax.nn.gelu(self.up(x)), ("batch", "length", "mlp")))


def test_sharded_params_and_equal_outputs():
  x = jax.random.normal(jax.random.key(0), (8, 4, 16))
  with nnx.use_eager_sharding(False):  # Single device: no mesh, names kept as metadata.
    ref = _Mlp(nnx.Rngs(0))(x)
  mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  with R.use_mesh(mesh):  # DEFAULT_RULES name `context`, absent here: dropped.
    m = _Mlp(nnx.Rngs(0))
    y = jax.jit(lambda m, x: m(x))(m, x)
  assert tuple(m.up.kernel[...].sharding.spec) == ("fsdp", "tensor")
  assert len(m.up.kernel[...].addressable_shards) == 8
  np.testing.assert_allclose(np.asarray(y), np.asarray(ref), rtol=1e-5, atol=1e-5)
  with nnx.use_eager_sharding(False):
    abstract = nnx.state(nnx.eval_shape(lambda: _Mlp(nnx.Rngs(0))))
  shardings = R.state_shardings(abstract, mesh)
  assert tuple(shardings["down"]["kernel"].spec) == ("tensor", "fsdp")
  assert R.logical_to_spec(("batch", "vocab")) == jax.sharding.PartitionSpec(
    ("data", "fsdp"), "tensor"
  )


def test_weights_split_over_fsdp_and_context_where_they_divide():
  """`embed` goes over fsdp x context (a context split keeps the weights' split); a
  dimension keeps only the leading axes that divide it."""

  class Two(nnx.Module):
    def __init__(self, rngs):
      init = nnx.with_partitioning(nnx.initializers.lecun_normal(), ("embed", "mlp"))
      self.wide = nnx.Linear(64, 8, use_bias=False, kernel_init=init, rngs=rngs)
      self.odd = nnx.Linear(20, 8, use_bias=False, kernel_init=init, rngs=rngs)

  mesh = make_mesh({"fsdp": 2, "context": 4})
  with nnx.use_eager_sharding(False):
    state = nnx.state(nnx.eval_shape(lambda: Two(nnx.Rngs(0))))
  shard = R.state_shardings(state, mesh)
  assert shard["wide"]["kernel"].spec == jax.sharding.PartitionSpec(("fsdp", "context"), None)
  assert shard["odd"]["kernel"].spec == jax.sharding.PartitionSpec("fsdp", None)  # 20 % 8.
