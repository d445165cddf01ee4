"""Self-attention over a sequence split on the mesh's `context` axis, explicitly.

`attend(q, k, v, strategy, full)` with q [B, N, H, K], k / v [B, M, H, K] (M = N: self-
attention) under a mesh context (`jax.set_mesh`; parallel/rules.use_mesh) whose
`context` axis has c > 1 devices, the sequence split c ways:

  xla         `full(q, k, v)` as it is; XLA's partitioner decides what moves (it gathers
              the keys and values of the whole sequence on every device).
  ring        shard_map over the mesh: each device keeps its query block and passes its
              key / value block around the ring (`ppermute`, c - 1 hops), adding each block
              to an online softmax (running max, sum and output in float32;
              models/blockwise_attention.py's, `block` keys at a time). Its backward (a
              custom VJP) sends the blocks round once more with their dk / dv sums and
              recomputes the probabilities from the saved log-sum-exp, so no hop's
              scores are kept. Per device: scores of N/c x block at a time, 2 (c - 1) / c
              of the keys and values sent forward, twice that backward (the blocks and their
              gradient sums).
  all_to_all  (Ulysses) an all-to-all turns the sequence split into a head split (each
              device: the whole sequence for H / (c t) of the heads, t the `tensor` split),
              `full` runs on that, and a second all-to-all turns it back. Needs the heads
              to divide by c x t (refused with a clear error otherwise).

Without a `context` axis of more than one device every strategy is `full`. The batch
axis keeps its split (`batch` -> data / fsdp) and the heads theirs (`heads` -> tensor),
read from the active logical rules. All-to-all's gradients are JAX's own through
shard_map (the transpose of an all-to-all is the reverse all-to-all); ring's are its
custom VJP's. Both equal full attention's to float rounding.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec

from auteur_jax.models import blockwise_attention
from auteur_jax.parallel.rules import dividing_axes, logical_to_spec

STRATEGIES = ("xla", "ring", "all_to_all")
AXIS = "context"
F32 = jnp.float32

Full = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


def even_split(mesh, shape: tuple[int, ...], axes) -> list:
  """Mesh axes (of `axes`) per dimension of a [B, N, H, K] array of `shape`, as the rules
  split batch / length / heads; each dimension drops trailing mesh axes that do not
  divide it (shard_map needs even splits where XLA would pad)."""
  sizes = {a: n for a, n in mesh.shape.items() if a in axes}
  spec = logical_to_spec(("batch", "length", "heads", "head_dim"))
  return [dividing_axes(p, d, sizes) for p, d in zip(spec, shape)]


def _spec(mesh, shape: tuple[int, ...]) -> PartitionSpec:
  """even_split over every mesh axis; the sequence must be on `context`."""
  out = even_split(mesh, shape, set(mesh.axis_names))
  if out[1] != AXIS:  # The rules must put the sequence on `context` for these strategies.
    raise ValueError(f"context parallelism: the rules map `length` to {out[1]!r}, not {AXIS!r}")
  return PartitionSpec(*out)


def _hop(c: int, *xs: jax.Array) -> tuple[jax.Array, ...]:
  """Each device's arrays to the next device on the ring."""
  return tuple(jax.lax.ppermute(x, AXIS, [(i, (i + 1) % c) for i in range(c)]) for x in xs)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _ring(q: jax.Array, k: jax.Array, v: jax.Array, c: int, block: int) -> jax.Array:
  """One device's part of ring attention: local blocks q / k / v [B, n, H, K]."""
  return _ring_fwd(q, k, v, c, block)[0]


def _ring_fwd(q, k, v, c, block):
  qs = q * q.shape[-1] ** -0.5

  def step(carry, _):
    state, kj, vj = carry
    state = blockwise_attention.online_add(state, qs, kj, vj, block)
    return (state, *_hop(c, kj, vj)), None

  init = blockwise_attention.online_init(q, v)
  (state, kj, vj), _ = jax.lax.scan(step, (init, k, v), None, length=c - 1)
  state = blockwise_attention.online_add(state, qs, kj, vj, block)  # No hop after the last.
  out, lse = blockwise_attention.online_finish(state, q.dtype)
  return out, (q, k, v, out, lse)


def _ring_bwd(c, block, res, dout):
  """The key / value blocks go round again, each with its gradient sums; after the last
  block one more hop brings every block's dk / dv home."""
  q, k, v, out, lse = res
  scale = q.shape[-1] ** -0.5
  qs = q * scale
  delta = jnp.einsum("bnhk,bnhk->bhn", dout.astype(F32), out.astype(F32))

  def add(dq, kj, vj, dkj, dvj):
    g = blockwise_attention.key_grads(qs, kj, vj, dout, lse, delta, block)
    return dq + g[0], dkj + g[1], dvj + g[2]

  def step(carry, _):
    dq, kj, vj, dkj, dvj = carry
    dq, dkj, dvj = add(dq, kj, vj, dkj, dvj)
    return (dq, *_hop(c, kj, vj, dkj, dvj)), None

  zeros = [jnp.zeros(x.shape, F32) for x in (q, k, v)]
  carry, _ = jax.lax.scan(step, (zeros[0], k, v, *zeros[1:]), None, length=c - 1)
  dq, dk, dv = add(*carry)
  dk, dv = _hop(c, dk, dv)  # Home: each device now holds its own block's sums.
  return (dq * scale).astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype)


_ring.defvjp(_ring_fwd, _ring_bwd)


def _all_to_all(q: jax.Array, k: jax.Array, v: jax.Array, full: Full) -> jax.Array:
  """One device's part of Ulysses attention: sequence split -> head split -> back."""
  to_heads = functools.partial(
    jax.lax.all_to_all, axis_name=AXIS, split_axis=2, concat_axis=1, tiled=True
  )
  out = full(*(to_heads(x) for x in (q, k, v)))
  return jax.lax.all_to_all(out, AXIS, split_axis=1, concat_axis=2, tiled=True)


def attend(
  q: jax.Array, k: jax.Array, v: jax.Array, strategy: str, full: Full, block: int | None = None
) -> jax.Array:
  """Self-attention of q [B, N, H, K] over k / v [B, N, H, K] with `strategy` (module
  docstring); `full(q, k, v)` is the attention each strategy reduces to. Ring attention
  takes each visiting key block `block` keys at a time (None: all N / c at once)."""
  if strategy not in STRATEGIES:
    raise ValueError(f"context_parallel: expected one of {STRATEGIES}, got {strategy!r}")
  mesh = jax.sharding.get_abstract_mesh()
  c = 1 if mesh is None or mesh.empty else dict(mesh.shape).get(AXIS, 1)
  if strategy == "xla" or c == 1:
    return full(q, k, v)
  if q.shape[1] % c or k.shape[1] != q.shape[1]:
    raise ValueError(
      f"context parallelism ({strategy}): {q.shape[1]} queries and {k.shape[1]} keys must be "
      f"equal and divide by the context axis ({c})"
    )
  spec = _spec(mesh, q.shape)
  if strategy == "all_to_all":
    t = dict(mesh.shape).get(spec[2], 1) if isinstance(spec[2], str) else 1
    if q.shape[2] % (c * t):
      raise ValueError(
        f"context_parallel all_to_all: {q.shape[2]} heads must divide by context x tensor "
        f"= {c} x {t}"
      )
    local: Full = functools.partial(_all_to_all, full=full)
  else:
    n = q.shape[1] // c
    step = min(block or n, n)
    local = lambda q, k, v: _ring(q, k, v, c, step)  # noqa: E731
  # check_vma off: the online softmax's carries start replicated and become per-device.
  return jax.shard_map(
    local, mesh=mesh, in_specs=(spec, spec, spec), out_specs=spec, check_vma=False
  )(q, k, v)
