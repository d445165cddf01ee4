"""Per-device state bytes of the paper configs' train steps under 8-way FSDP (8 CPU devices).

For each paper config the trainer's own jitted step (`train.trainer.setup`) is compiled
for an 8-device CPU mesh with every weight's `embed` axis on `fsdp` (mesh fsdp=8), from
abstract inputs only (nothing is allocated), and XLA's memory analysis of the compiled
step gives the per-device bytes of its state arguments (params + AdamW state). Printed
against the whole state's bytes / 8: FSDP is working when the two agree.

  python benchmarks/train_memory.py [--configs director_7b dit_wan_1_3b dit_wan_14b]

Compiling a 14B step on this 2-core CPU takes a few minutes.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ["XLA_FLAGS"] = (
  os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from auteur_jax.config import CONFIG_DIR, load_config  # noqa: E402
from auteur_jax.parallel.mesh import make_mesh  # noqa: E402
from auteur_jax.train import tasks, trainer  # noqa: E402
from auteur_jax.train.batch_specs import abstract_batch  # noqa: E402

PAPER = os.path.join(CONFIG_DIR, "paper")


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--configs", nargs="+", default=["director_7b", "dit_wan_1_3b", "dit_wan_14b"])
  args = ap.parse_args()
  worst = 0.0
  for name in args.configs:
    # A batch of 8 (one example per device): state bytes do not depend on it. The DiT's
    # embedding std is fixed (it would be estimated from the training data at start).
    config = load_config(os.path.join(PAPER, f"{name}.py"), ["--config.data.batch_size=8"])
    if config.get("train", {}).get("visual_reg"):
      config.train.visual_reg.embedding_std = 1.0
    start = time.perf_counter()
    s = trainer.setup(config, tasks.get(config.task), make_mesh({"fsdp": 8}))
    mem = trainer.step_memory(s, abstract_batch(config))
    ideal = mem["state_replicated"] / 8
    ratio = mem["state"] / ideal
    worst = max(worst, abs(ratio - 1))
    print(
      f"{name}: state {mem['state_replicated'] / 2**30:.2f} GiB in all; per device "
      f"{mem['state'] / 2**30:.3f} GiB compiled vs {ideal / 2**30:.3f} GiB = all / 8 "
      f"(ratio {ratio:.4f}); temporaries {mem['temp'] / 2**30:.2f} GiB "
      f"({time.perf_counter() - start:.0f} s to compile)"
    )
  print(
    f"ratio per-device state bytes / (replicated / 8), worst distance from 1 (lower is "
    f"better): {worst:.4f} (target <= 0.05)"
  )


if __name__ == "__main__":
  main()
