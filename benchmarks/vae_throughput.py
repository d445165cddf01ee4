"""Frames/s of VAE encode + decode: ours (JAX, models/vae.py) vs diffusers' AutoencoderKLWan.

One run, one config, the same weights: the diffusers model is built from a seed, saved,
and converted into ours, and the decoded videos are compared before anything is timed.
Each side encodes a clip to the posterior mean and decodes it; timings are the median
of the repeats after a warm-up (compilation for ours), taken in alternating blocks
(diffusers, ours, diffusers, ours) so that load from other processes hits both sides.

First a table times every 3-D conv formulation of models/vae_ops.py on each distinct
conv shape of the model at this input (ms per conv, GFLOP/s), and names what "auto"
picks.

  python benchmarks/vae_throughput.py [--frames 17] [--size 64] [--base-dim 32]
      [--repeats 3] [--blocks 2] [--torch-threads N] [--no-table]
"""

from __future__ import annotations

import argparse
import collections
import functools
import os
import statistics
import tempfile
import time

import cpu_isa  # benchmarks/cpu_isa.py: caps the ISA before jax / torch load.

ISA = cpu_isa.apply()
os.environ.setdefault("JAX_PLATFORMS", "cpu")  # Before jax loads: no accelerator probing.

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from diffusers import AutoencoderKLWan  # noqa: E402

from auteur_jax.convert.diffusers_vae import load_diffusers_vae  # noqa: E402
from auteur_jax.models import vae as V  # noqa: E402
from auteur_jax.models import vae_ops as ops  # noqa: E402

FORMS = ("fold_in", "fold_out", "taps", "im2col", "tap_dots", "xla3d")


def conv_shapes(cfg: V.VAEConfig, frames: int, size: int) -> collections.Counter:
  """(T, H, C_in, C_out) -> count of the 3x3x3 causal convs a whole-clip run does."""
  out: collections.Counter = collections.Counter()
  dims = [cfg.base_dim * m for m in (1, *cfg.dim_mult)]
  t, h = frames, size
  out[(t, h, cfg.in_channels, dims[0])] += 1
  for i, (cin, cout) in enumerate(zip(dims[:-1], dims[1:])):
    for j in range(cfg.num_res_blocks):
      out[(t, h, cin if j == 0 else cout, cout)] += 1
      out[(t, h, cout, cout)] += 1
    if i < len(cfg.dim_mult) - 1:
      h //= 2
      t = 1 + (t - 1) // 2 if cfg.temporal_downsample[i] else t
  out[(t, h, dims[-1], dims[-1])] += 4  # Mid block: two residual blocks.
  out[(t, h, dims[-1], 2 * cfg.z_dim)] += 1
  base = cfg.decoder_base_dim or cfg.base_dim
  ddims = [base * m for m in (cfg.dim_mult[-1], *cfg.dim_mult[::-1])]
  out[(t, h, cfg.z_dim, ddims[0])] += 1
  out[(t, h, ddims[0], ddims[0])] += 4
  up_t = cfg.temporal_downsample[::-1]
  for i, (cin, cout) in enumerate(zip(ddims[:-1], ddims[1:])):
    cin = cin // 2 if i > 0 else cin
    for j in range(cfg.num_res_blocks + 1):
      out[(t, h, cin if j == 0 else cout, cout)] += 1
      out[(t, h, cout, cout)] += 1
    if i < len(cfg.dim_mult) - 1:
      h *= 2
      t = 1 + 2 * (t - 1) if up_t[i] else t
  out[(t, h, ddims[-1], cfg.out_channels)] += 1
  return out


def _time(fn, repeats: int) -> list[float]:
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return times


def conv_table(cfg: V.VAEConfig, frames: int, size: int, repeats: int) -> None:
  print(
    f"3x3x3 causal convs of one {frames}x{size}x{size} encode+decode "
    "(ms per conv, median; GFLOP/s):"
  )
  print(
    f"  {'T x H x W, Cin->Cout':24s} {'n':>2s}  " + "  ".join(f"{f:>14s}" for f in FORMS) + "  auto"
  )
  total = collections.Counter()
  for (t, h, cin, cout), n in sorted(conv_shapes(cfg, frames, size).items()):
    x = jax.random.normal(jax.random.key(0), (1, t, h, h, cin))
    prev = jnp.zeros((1, 2, h, h, cin))
    w = jax.random.normal(jax.random.key(1), (3, 3, 3, cin, cout)) * 0.05
    flops = 2 * t * h * h * 27 * cin * cout
    cells, row = [], {}
    for form in FORMS:
      f = jax.jit(lambda x, p, w, form=form: ops.causal_conv3d(x, p, w, form)[0])
      call = functools.partial(lambda f, *a: f(*a).block_until_ready(), f, x, prev, w)
      call()
      ms = 1e3 * statistics.median(_time(call, repeats))
      row[form] = ms
      total[form] += n * ms
      cells.append(f"{ms:7.2f} {flops / ms / 1e6:4.0f}GF")
    auto = ops.auto_conv_impl(t, cin, cout)
    total["auto"] += n * row[auto]
    print(
      f"  {f'{t}x{h}x{h}, {cin}->{cout}':24s} {n:2d}  "
      + "  ".join(f"{c:>14s}" for c in cells)
      + f"  {auto}"
    )
  print(
    "  sum over the model's convs (ms): "
    + ", ".join(f"{f} {total[f]:.0f}" for f in (*FORMS, "auto"))
  )


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  cpu_isa.add_argument(ap)
  ap.add_argument("--frames", type=int, default=17)
  ap.add_argument("--size", type=int, default=64)
  ap.add_argument("--base-dim", type=int, default=32)
  ap.add_argument("--repeats", type=int, default=3, help="timed runs per block")
  ap.add_argument("--blocks", type=int, default=2, help="alternating blocks per side")
  ap.add_argument("--torch-threads", type=int, default=0, help="0: torch's default")
  ap.add_argument("--no-table", action="store_true", help="skip the per-shape conv table")
  args = ap.parse_args()
  print(cpu_isa.describe(ISA), flush=True)
  if args.torch_threads:
    torch.set_num_threads(args.torch_threads)

  torch.manual_seed(0)
  ref = AutoencoderKLWan(base_dim=args.base_dim).eval()
  with tempfile.TemporaryDirectory() as d:
    ref.save_pretrained(d)
    ours = load_diffusers_vae(d)
  cfg = ours.cfg
  print(
    f"config: base_dim {cfg.base_dim}, z_dim {cfg.z_dim}, dim_mult {cfg.dim_mult}, "
    f"num_res_blocks {cfg.num_res_blocks}; clip 1 x {args.frames} x {args.size} x "
    f"{args.size} x 3, float32; torch threads {torch.get_num_threads()}, "
    f"jax {jax.__version__} on {jax.devices()[0].platform}"
  )
  if not args.no_table:
    conv_table(cfg, args.frames, args.size, args.repeats)

  xt = (
    torch.rand(1, 3, args.frames, args.size, args.size, generator=torch.Generator().manual_seed(1))
    * 2
    - 1
  )
  xj = jnp.asarray(xt.permute(0, 2, 3, 4, 1).numpy())

  def run_theirs():
    with torch.no_grad():
      return ref.decode(ref.encode(xt).latent_dist.mean).sample

  def run_ours():
    mean, _ = V.encode(ours, xj)
    return V.decode(ours, mean).block_until_ready()

  a = run_theirs().permute(0, 2, 3, 4, 1).numpy()
  b = np.asarray(run_ours())
  print(f"max |ours - diffusers| over the decoded clip: {np.abs(a - b).max():.2e}")
  times = {"diffusers": [], "ours": []}
  for _ in range(args.blocks):
    times["diffusers"] += _time(run_theirs, args.repeats)
    times["ours"] += _time(run_ours, args.repeats)
  fps = {}
  for side, ts in times.items():
    med = statistics.median(ts)
    fps[side] = args.frames / med
    print(
      f"{side:9s}: median {med:.3f} s per encode+decode over {len(ts)} runs "
      f"(min {min(ts):.3f}, max {max(ts):.3f}) = {fps[side]:.1f} frames/s"
    )
  print(
    f"ratio ours/diffusers frames/s (higher means ours is faster): "
    f"{fps['ours'] / fps['diffusers']:.2f} (target >= 2)"
  )


if __name__ == "__main__":
  main()
