"""The host allocator policy (auteur_jax/host_memory.py): freed blocks are reused, so a
loop that allocates and frees a large block faults its pages in once, not every time."""

import subprocess
import sys

import pytest

from auteur_jax import host_memory

# Allocates, touches and frees a 64 MiB block 4 times; prints the page faults of the last 3.
_LOOP = """
import ctypes, resource, sys
from auteur_jax import host_memory
print(host_memory.retain_freed_memory())
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
faults = []
for _ in range(4):
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  block = libc.malloc(64 << 20)
  ctypes.memset(block, 1, 64 << 20)
  libc.free(block)
  faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(sum(faults[1:]))
"""


def _faults(policy: str) -> tuple[str, int]:
  env = {"AUTEUR_HOST_MALLOC": policy, "PATH": "/usr/bin:/bin"}
  out = subprocess.run(
    [sys.executable, "-c", _LOOP], env=env, capture_output=True, text=True, check=True
  ).stdout.split()
  return out[0], int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_retained_blocks_are_not_faulted_in_again():
  set_, retained = _faults("retain")
  unset, system = _faults("system")
  assert (set_, unset) == ("True", "False")
  pages = 3 * (64 << 20) // 4096
  assert system > pages // 2  # glibc maps each 64 MiB block afresh...
  assert retained < pages // 100  # ...the policy reuses the first one's pages.


def test_an_unknown_policy_is_named(monkeypatch):
  monkeypatch.setenv("AUTEUR_HOST_MALLOC", "jemalloc")
  with pytest.raises(ValueError, match="AUTEUR_HOST_MALLOC='jemalloc': expected one of"):
    host_memory.retain_freed_memory()
