"""Does `--isa avx2` change the code that runs? Matmul GFLOP/s of XLA and PyTorch under
each instruction-set cap (benchmarks/cpu_isa.py), each in a fresh process.

  python benchmarks/isa_check.py [--size 2048] [--repeats 7]

On an AVX-512 machine the AVX2 cap should lower both (the cap reaches the code
generators); on an AVX2-only machine both caps run the same code and the ratios sit near 1.
Prints the CPU, then `ratio ...` lines (median of repeats after warm-up).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import cpu_isa

ISA = cpu_isa.apply()

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402


def _child(size: int, repeats: int) -> dict:
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  import jax
  import numpy as np
  import torch

  torch.set_num_threads(os.cpu_count() or 1)
  a = np.random.default_rng(0).standard_normal((size, size), np.float32)
  x = jax.device_put(a)
  dot = jax.jit(lambda u, v: u @ v)
  t = torch.from_numpy(a)
  flops = 2 * size**3

  def rate(fn) -> float:
    fn()
    times = []
    for _ in range(repeats):
      start = time.perf_counter()
      fn()
      times.append(time.perf_counter() - start)
    return flops / statistics.median(times) / 1e9

  return {
    "jax": rate(lambda: dot(x, x).block_until_ready()),
    "torch": rate(lambda: torch.mm(t, t)),
    "torch_capability": torch.backends.cpu.get_cpu_capability(),
  }


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  cpu_isa.add_argument(ap)
  ap.add_argument("--size", type=int, default=2048)
  ap.add_argument("--repeats", type=int, default=7)
  ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
  args = ap.parse_args()
  if args.child:
    print(json.dumps(_child(args.size, args.repeats)))
    return
  print(cpu_isa.describe("native"))
  got = {}
  for isa in cpu_isa.CHOICES:
    cmd = [
      sys.executable,
      __file__,
      "--child",
      "--isa",
      isa,
      "--size",
      str(args.size),
      "--repeats",
      str(args.repeats),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    got[isa] = json.loads(out.strip().splitlines()[-1])
    r = got[isa]
    print(
      f"--isa {isa:6s}: jnp.dot {args.size}^3 {r['jax']:.0f} GFLOP/s, torch.mm "
      f"{r['torch']:.0f} GFLOP/s (torch capability {r['torch_capability']})"
    )
  wide = any(f.startswith("avx512") for f in cpu_isa.avx_flags())
  target = "< 0.95 (this CPU has AVX-512)" if wide else "~ 1 (AVX2 only: same code)"
  for lib in ("jax", "torch"):
    ratio = got["avx2"][lib] / got["native"][lib]
    print(
      f"ratio {lib} matmul GFLOP/s avx2 / native, lower = the cap works: {ratio:.2f} "
      f"(target {target})"
    )


if __name__ == "__main__":
  main()
