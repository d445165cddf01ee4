"""Multi-process start-up: `jax.distributed.initialize` from the config or environment.

`config.distributed.mode`:
  none      one process (the default; tests, single host).
  auto      JAX detects the cluster (TPU pod slices, SLURM, Open MPI) by itself.
  explicit  coordinator address / process count / process id from the config, or from
            AUTEUR_COORDINATOR, AUTEUR_NUM_PROCESSES, AUTEUR_PROCESS_ID (launch/ scripts).
Timeouts are bounded by config so that a missing peer fails with a clear error instead
of hanging.
"""

from __future__ import annotations

import os

import jax
import ml_collections

from auteur_jax.config import ConfigError


def distributed_defaults() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      mode="none", coordinator="", num_processes=-1, process_id=-1,
      initialization_timeout=300, heartbeat_timeout=100))


def initialize(d: ml_collections.ConfigDict) -> None:
  """Starts jax.distributed per `d` (see the module docstring); a no-op for mode none."""
  if d.mode == "none":
    return
  kw = dict(initialization_timeout=d.initialization_timeout,
            heartbeat_timeout_seconds=d.heartbeat_timeout)
  if d.mode == "explicit":
    coordinator = d.coordinator or os.environ.get("AUTEUR_COORDINATOR", "")
    num = d.num_processes if d.num_processes > 0 else int(os.environ.get("AUTEUR_NUM_PROCESSES", -1))
    pid = d.process_id if d.process_id >= 0 else int(os.environ.get("AUTEUR_PROCESS_ID", -1))
    if not coordinator or num < 1 or pid < 0:
      raise ConfigError("config.distributed (mode explicit): needs coordinator, num_processes "
                        "and process_id (or AUTEUR_COORDINATOR / AUTEUR_NUM_PROCESSES / "
                        f"AUTEUR_PROCESS_ID); got {coordinator!r}, {num}, {pid}")
    kw.update(coordinator_address=coordinator, num_processes=num, process_id=pid)
  elif d.mode != "auto":
    raise ConfigError(f"config.distributed.mode must be none, auto or explicit; got {d.mode!r}")
  try:
    jax.distributed.initialize(**kw)
  except Exception as e:  # Name what we tried: the JAX error alone rarely says.
    raise RuntimeError(f"jax.distributed.initialize({kw}) failed: {e}") from e
