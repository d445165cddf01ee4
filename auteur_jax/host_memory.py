"""The host allocator's policy: freed memory is kept for reuse, not handed back.

XLA:CPU allocates a compiled step's temporary buffers as one block per call (768 MB for
the toy director's training step) with posix_memalign and frees it after the call.
glibc serves a block that large with a fresh mmap: from the main arena above its mmap
threshold (32 MiB at most), and from a thread's own arena always. So every step touched
~190,000 new pages, which the kernel faults in and zeroes: ~0.3 s of system time per
step on 2 cores (AMD EPYC), a sixth of the step. `retain_freed_memory()` puts every
thread on glibc's main arena, serves all blocks from its heap and never trims the heap:
from the second step on, the steps reuse the same pages. The process keeps its peak
memory resident, as a caching allocator would.

`auteur` (cli.main) sets it first thing; a script that drives the trainer itself calls it
before JAX starts its backend. AUTEUR_HOST_MALLOC=system keeps glibc's defaults.
"""

from __future__ import annotations

import ctypes
import os
import sys

_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8  # glibc's mallopt parameters.
ENV = "AUTEUR_HOST_MALLOC"
CHOICES = ("retain", "system")


def retain_freed_memory() -> bool:
  """Sets the policy above where the C library is glibc; True if it is set.

  Call it before any thread allocates (before the first JAX computation): a thread keeps
  the arena it first allocated from. Raises ValueError for an AUTEUR_HOST_MALLOC other
  than retain or system.
  """
  choice = os.environ.get(ENV, "retain")
  if choice not in CHOICES:
    raise ValueError(f"{ENV}={choice!r}: expected one of {', '.join(CHOICES)}")
  if choice == "system" or not sys.platform.startswith("linux"):
    return False
  try:
    mallopt = ctypes.CDLL("libc.so.6").mallopt
  except (OSError, AttributeError):  # Not glibc (musl has no mallopt).
    return False
  mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
  settings = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1))
  return all(mallopt(key, value) == 1 for key, value in settings)
