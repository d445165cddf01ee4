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

import dataclasses
import os
from typing import Any

import jax
import ml_collections

from auteur_jax.config import ConfigError
from auteur_jax.config_sections import from_section

MODES = ("none", "auto", "explicit")


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
  """`config.distributed` (see the module docstring); -1 / "": from the environment."""

  mode: str = "none"
  coordinator: str = ""
  num_processes: int = -1
  process_id: int = -1
  initialization_timeout: int = 300  # Seconds.
  heartbeat_timeout: int = 100  # Seconds.

  def validate(self) -> None:
    if self.mode not in MODES:
      raise ValueError(f"mode must be none, auto or explicit; got {self.mode!r}")
    if self.initialization_timeout < 1 or self.heartbeat_timeout < 1:
      raise ValueError(
        f"initialization_timeout and heartbeat_timeout must be >= 1 s, got "
        f"{self.initialization_timeout}, {self.heartbeat_timeout}"
      )


def distributed_defaults() -> ml_collections.ConfigDict:
  """`config.distributed` at DistributedConfig's defaults (one process)."""
  return ml_collections.ConfigDict(dataclasses.asdict(DistributedConfig()))


def initialize(d: DistributedConfig | ml_collections.ConfigDict) -> None:
  """Starts jax.distributed per `d` (see the module docstring); a no-op for mode none."""
  d = from_section(DistributedConfig, d, "config.distributed")
  if d.mode == "none":
    return
  kw: dict[str, Any] = dict(
    initialization_timeout=d.initialization_timeout, heartbeat_timeout_seconds=d.heartbeat_timeout
  )
  if d.mode == "explicit":
    coordinator = d.coordinator or os.environ.get("AUTEUR_COORDINATOR", "")
    num = (
      d.num_processes if d.num_processes > 0 else int(os.environ.get("AUTEUR_NUM_PROCESSES", -1))
    )
    pid = d.process_id if d.process_id >= 0 else int(os.environ.get("AUTEUR_PROCESS_ID", -1))
    if not coordinator or num < 1 or pid < 0:
      raise ConfigError(
        "config.distributed (mode explicit): needs coordinator, num_processes "
        "and process_id (or AUTEUR_COORDINATOR / AUTEUR_NUM_PROCESSES / "
        f"AUTEUR_PROCESS_ID); got {coordinator!r}, {num}, {pid}"
      )
    kw.update(coordinator_address=coordinator, num_processes=num, process_id=pid)
  try:
    jax.distributed.initialize(**kw)
  except Exception as e:  # Name what we tried: the JAX error alone rarely says.
    raise RuntimeError(f"jax.distributed.initialize({kw}) failed: {e}") from e
