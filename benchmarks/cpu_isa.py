"""`--isa native|avx2` for the benchmarks: one instruction-set cap for XLA, PyTorch and the
C++ decode kernel, set before any of them loads.

  import cpu_isa                  # first, before jax / torch are imported
  ISA = cpu_isa.apply()           # reads --isa from sys.argv (default native)
  print(cpu_isa.describe(ISA))    # the CPU, its AVX flags and what the cap set

`avx2` on an AVX-512 machine: XLA_FLAGS=--xla_cpu_max_isa=AVX2 (XLA's code generator),
ATEN_CPU_CAPABILITY=avx2 (ATen's vectorised kernels), ONEDNN_MAX_CPU_ISA=AVX2 (oneDNN's
convolutions and matmuls), MKL_ENABLE_INSTRUCTIONS=AVX2 (torch's BLAS is MKL) and
AUTEUR_KERNEL_ARCH="-mavx2 -mfma" (the decode kernel is built for AVX2 instead of
-march=native). The variables reach the subprocesses a benchmark starts. `native` sets
nothing. benchmarks/isa_check.py shows that the cap changes the code that runs.
"""

from __future__ import annotations

import os
import platform
import sys

from auteur_jax import host_memory

CAPS = {
  "avx2": {
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
    "AUTEUR_KERNEL_ARCH": "-mavx2 -mfma",
  },
}
XLA_CAP = {"avx2": "--xla_cpu_max_isa=AVX2"}
CHOICES = ("native", *CAPS)


def apply(argv: list[str] | None = None) -> str:
  """Sets the environment for `--isa X` in argv (default: sys.argv); returns X. Call it
  before importing jax or torch: both read these variables once, when they load. Also
  sets the host allocator policy that `auteur` sets (auteur_jax/host_memory.py), so that
  the benchmarks run our code as the CLI does."""
  argv = sys.argv if argv is None else argv
  isa = "native"
  for i, arg in enumerate(argv):
    if arg == "--isa" and i + 1 < len(argv):
      isa = argv[i + 1]
    elif arg.startswith("--isa="):
      isa = arg.split("=", 1)[1]
  if isa not in CHOICES:
    raise SystemExit(f"--isa {isa!r}: expected one of {CHOICES}")
  if "jax" in sys.modules or "torch" in sys.modules:
    raise RuntimeError("cpu_isa.apply() must run before jax / torch are imported")
  if isa != "native":
    os.environ.update(CAPS[isa])
    flags = os.environ.get("XLA_FLAGS", "")
    os.environ["XLA_FLAGS"] = f"{flags} {XLA_CAP[isa]}".strip()
  host_memory.retain_freed_memory()
  return isa


def add_argument(parser) -> None:
  """The `--isa` option (already applied by `apply`; listed for --help)."""
  parser.add_argument(
    "--isa",
    choices=CHOICES,
    default="native",
    help="cap XLA, PyTorch and the decode kernel to this instruction set",
  )


def avx_flags() -> list[str]:
  """The CPU's AVX flags (avx, avx2, avx512f, ...), from /proc/cpuinfo."""
  try:
    with open("/proc/cpuinfo") as f:
      line = next((x for x in f if x.startswith("flags")), "")
  except OSError:
    return []
  return sorted({w for w in line.split() if w.startswith("avx")})


def describe(isa: str) -> str:
  """One line: the CPU, its AVX flags, the cap in force and the host allocator policy."""
  model = platform.processor() or "unknown CPU"
  try:
    with open("/proc/cpuinfo") as f:
      model = next((x.split(":", 1)[1].strip() for x in f if x.startswith("model name")), model)
  except OSError:
    pass
  caps = (
    "no cap"
    if isa == "native"
    else ", ".join([XLA_CAP[isa]] + [f"{k}={v}" for k, v in CAPS[isa].items()])
  )
  malloc = os.environ.get(host_memory.ENV, "retain")
  return (
    f"cpu: {model}; flags {' '.join(avx_flags()) or '-'}; --isa {isa} ({caps}); "
    f"host allocator: {malloc}"
  )
