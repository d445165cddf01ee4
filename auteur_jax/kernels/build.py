"""Compiling the C++ CPU kernels at first use, once per machine, and registering them.

A kernel's source ships in this folder with the headers the kernels share (simd.h).
`load(name)` compiles `name.cc` with the system C++ compiler (`$CXX`, else `c++`) against
the XLA FFI headers that jaxlib ships, for this CPU (-march=native, or
$AUTEUR_KERNEL_ARCH), into a cache folder ($AUTEUR_KERNEL_CACHE, else
~/.cache/auteur_jax/kernels) under a name hashed from the source and headers, flags,
compiler, jax version and CPU flags, so a changed source or another machine compiles afresh. The
library is written to a temporary name and renamed, so concurrent processes never load
half a file. Failures are reported once with the compiler's message and callers fall
back to plain XLA (`AUTEUR_CPU_KERNELS=0` turns the kernels off).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import pathlib
import platform
import shutil
import subprocess
import tempfile
import warnings

import jax

FLAGS = ("-O3", "-std=c++17", "-shared", "-fPIC", "-fno-math-errno")


def _arch() -> list[str]:
  """The target flags: this CPU (-march=native) unless $AUTEUR_KERNEL_ARCH names others
  (e.g. "-mavx2 -mfma": an AVX2 build on an AVX-512 machine, for benchmarks)."""
  return os.environ.get("AUTEUR_KERNEL_ARCH", "-march=native").split()


def enabled() -> bool:
  return os.environ.get("AUTEUR_CPU_KERNELS", "1") != "0"


def _cpu_flags() -> str:
  try:
    text = pathlib.Path("/proc/cpuinfo").read_text()
  except OSError:
    return platform.processor()
  return next((line for line in text.splitlines() if line.startswith(("flags", "Features"))), "")


def _cache_dir() -> pathlib.Path:
  root = os.environ.get("AUTEUR_KERNEL_CACHE") or os.path.join(
    os.path.expanduser("~"), ".cache", "auteur_jax", "kernels"
  )
  return pathlib.Path(root)


def compile_library(name: str) -> pathlib.Path:
  """`name`.cc -> path of its compiled shared library (compiled now if not cached).

  Raises RuntimeError naming the compiler command and its output when it fails.
  """
  source = pathlib.Path(__file__).with_name(f"{name}.cc")
  cxx = shutil.which(os.environ.get("CXX", "c++"))
  if cxx is None:
    raise RuntimeError(f"no C++ compiler ({os.environ.get('CXX', 'c++')}) on PATH")
  version = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout
  headers = sorted(source.parent.glob("*.h"))  # Shared by the kernels (#include "x.h").
  key = hashlib.sha256(
    "\0".join(
      [
        source.read_text(),
        *(h.read_text() for h in headers),
        " ".join([*FLAGS, *_arch()]),
        version,
        jax.__version__,
        _cpu_flags(),
      ]
    ).encode()
  ).hexdigest()[:16]
  out = _cache_dir() / f"{name}-{key}.so"
  if out.exists():
    return out
  out.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
  os.close(fd)
  cmd = [cxx, *FLAGS, *_arch(), f"-I{jax.ffi.include_dir()}", str(source), "-o", tmp]
  try:
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
      raise RuntimeError(f"compiling {source} failed ({' '.join(cmd)}):\n{done.stderr[-4000:]}")
    os.replace(tmp, out)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return out


@functools.cache
def load(name: str, symbols: tuple[str, ...]) -> bool:
  """Compiles `name`.cc if needed and registers each symbol as a CPU FFI target of the
  same name. False (after one warning) when kernels are off or this fails."""
  if not enabled():
    return False
  try:
    lib = ctypes.cdll.LoadLibrary(str(compile_library(name)))
    for symbol in symbols:
      jax.ffi.register_ffi_target(symbol, jax.ffi.pycapsule(getattr(lib, symbol)), platform="cpu")
  except (OSError, RuntimeError, AttributeError) as e:
    warnings.warn(f"CPU kernel {name} unavailable, using XLA instead: {e}", stacklevel=2)
    return False
  return True
