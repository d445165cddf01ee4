"""Fused attention kernels for the DiT's self-attention, one per platform.

  splash  TPU splash attention (Pallas, jax.experimental.pallas.ops.tpu): compiled on TPU,
          run in Pallas interpret mode on CPU (numerics and tests only: slow). Sequences
          are padded to a multiple of the block (512: 16,464 Wan tokens -> 16,896) and
          the padding is masked with segment ids (padded queries see only padded keys).
  cudnn   cuDNN flash attention through jax.nn.dot_product_attention(implementation=
          "cudnn"): NVIDIA GPUs, bfloat16 / float16 only.

Both take q [B, N, H, K], k / v [B, M, H, K] and return softmax(q k^T / sqrt(K)) v
[B, N, H, K]. The platform is the current mesh's (`jax.set_mesh`; an AOT mesh of a TPU
topology counts as TPU) or else JAX's default backend; a kernel asked for on a platform
it does not exist on raises one clear ValueError (e.g. splash on GPU).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec

from auteur_jax.models.context_parallel import even_split

SPLASH_LANES = 128  # Splash blocks are whole multiples of the TPU's lanes.
PLATFORMS = {"splash": ("tpu", "cpu"), "cudnn": ("cuda", "gpu")}


def platform() -> str:
  """The platform the current computation is for: the mesh's, else the default backend."""
  mesh = jax.sharding.get_abstract_mesh()
  device = getattr(mesh, "abstract_device", None) if mesh is not None and not mesh.empty else None
  where = getattr(device, "platform", None)
  return str(where) if where else jax.default_backend()


def check_platform(kernel: str, where: str | None = None) -> str:
  """`where` (default: platform()) if `kernel` runs there, else a ValueError naming both."""
  where = where or platform()
  if where not in PLATFORMS[kernel]:
    other = {"splash": "TPU (or CPU in interpret mode)", "cudnn": "an NVIDIA GPU"}[kernel]
    raise ValueError(
      f"config.model.attention {kernel!r} needs {other}; this computation is for {where!r}: "
      "use 'full' or 'blockwise' (any platform), 'splash' on TPU, 'cudnn' on GPU"
    )
  return where


def _pad(x: jax.Array, n: int) -> jax.Array:
  return jnp.pad(x, ((0, 0), (0, n - x.shape[1]), (0, 0), (0, 0)))


def splash(q: jax.Array, k: jax.Array, v: jax.Array, block: int = 512) -> jax.Array:
  """Splash attention (module docstring); q [B, N, H, K], k / v [B, M, H, K], in query
  and key blocks of `block` rounded up to whole lanes (128) and cut to the padded
  sequence. Small blocks on long clips overflow the kernel's block metadata in SMEM (at
  75,600 tokens 128 needs 1.08 of 1 MiB with 5 heads a device). On a mesh it runs per
  device in a shard_map over the batch and head splits (a Pallas kernel is not
  partitioned automatically); the sequence must not be split (a `context` split goes
  through models/context_parallel.py first)."""
  local = functools.partial(_splash, block=block)
  mesh = jax.sharding.get_abstract_mesh()
  auto = (
    [] if mesh is None or mesh.empty else [a for a in mesh.axis_names if a not in mesh.manual_axes]
  )
  if any(dict(mesh.shape)[a] > 1 for a in auto):
    spec = _spec(mesh, q.shape, auto)
    return jax.shard_map(
      local, mesh=mesh, in_specs=(spec, spec, spec), out_specs=spec, check_vma=False
    )(q, k, v)
  return local(q, k, v)


def _spec(mesh, shape: tuple[int, ...], axes: list[str]) -> PartitionSpec:
  """[B, N, H, K] split over the mesh axes `axes` as the rules split batch and heads
  (context_parallel.even_split); the sequence must stay whole."""
  sizes = dict(mesh.shape)
  out = even_split(mesh, shape, axes)
  if (
    out[1] is not None
    and math.prod(sizes[a] for a in ((out[1],) if isinstance(out[1], str) else out[1])) > 1
  ):
    raise ValueError(
      "config.model.attention 'splash' with the sequence split over "
      f"{out[1]!r}: set config.model.context_parallel to 'all_to_all' or 'ring'"
    )
  return PartitionSpec(out[0], None, out[2], None)


def _splash(q: jax.Array, k: jax.Array, v: jax.Array, block: int) -> jax.Array:
  """splash() on the arrays of one device (or the whole of them off a mesh)."""
  # Imported here: the Pallas TPU ops load only for the runs that ask for them.
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as sm

  where = check_platform("splash")
  b, n, h, d = q.shape
  m = k.shape[1]
  lanes = lambda x: -(-x // SPLASH_LANES) * SPLASH_LANES  # noqa: E731
  bs = min(lanes(max(block, 1)), lanes(max(n, m)))
  npad, mpad = (-(-x // bs) * bs for x in (n, m))
  blocks = sk.BlockSizes(
    block_q=bs,
    block_kv=bs,
    block_kv_compute=bs,
    block_q_dkv=bs,
    block_kv_dkv=bs,
    block_kv_dkv_compute=bs,
    block_q_dq=bs,
    block_kv_dq=bs,
  )
  kernel = sk.make_splash_mha(
    sm.MultiHeadMask([sm.FullMask((npad, mpad)) for _ in range(h)]),
    block_sizes=blocks,
    head_shards=1,
    q_seq_shards=1,
    interpret=where != "tpu",
  )
  # Segment 0: the real tokens; 1: the padding, which only sees itself.
  segments = sk.SegmentIds(
    q=(jnp.arange(npad) >= n).astype(jnp.int32), kv=(jnp.arange(mpad) >= m).astype(jnp.int32)
  )
  heads_first = lambda x, length: _pad(x, length).transpose(0, 2, 1, 3)  # noqa: E731
  qs = heads_first(q * d**-0.5, npad).astype(q.dtype)
  out = jax.vmap(lambda a, b_, c: kernel(a, b_, c, segment_ids=segments))(
    qs, heads_first(k, mpad), heads_first(v, mpad)
  )
  return out.transpose(0, 2, 1, 3)[:, :n]


def cudnn(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
  """cuDNN flash attention (module docstring); bfloat16 / float16 only."""
  check_platform("cudnn")
  if q.dtype not in (jnp.bfloat16, jnp.float16):
    raise ValueError(
      f"config.model.attention 'cudnn' takes bfloat16 or float16, got {q.dtype}: set "
      "config.model.dtype=bfloat16"
    )
  try:
    return jax.nn.dot_product_attention(q, k, v, implementation="cudnn")
  except RuntimeError as e:  # No cuDNN library here (e.g. a GPU plan compiled on a CPU host).
    if "cudnn" not in str(e).lower():
      raise
    raise ValueError(
      f"config.model.attention 'cudnn': {e} (cuDNN comes with the CUDA runtime)"
    ) from None
