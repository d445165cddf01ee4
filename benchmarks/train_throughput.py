"""Examples/s and matmul-peak fraction of the toy DiT and director train steps (CPU).

Runs the trainer's own jitted step (forward, backward, AdamW) on a fixed synthetic
batch of the toy configs' shapes, and a large matmul in the same process. The step's
FLOPs are counted analytically as 6 x parameters x tokens (matmul work of forward +
backward; attention scores add a little more, so the fraction is a lower bound).

  python benchmarks/train_throughput.py [--repeats 5] [--batch 8]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import cpu_isa

ISA = cpu_isa.apply()  # Before jax / torch load.

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from auteur_jax.config import CONFIG_DIR, load_config  # noqa: E402
from auteur_jax.parallel.mesh import make_mesh  # noqa: E402
from auteur_jax.train import tasks, trainer  # noqa: E402

CONFIGS = os.path.join(CONFIG_DIR, "toy")


def _timed(fn, repeats: int) -> float:
  fn()  # Warm-up (compilation).
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def matmul_flops(repeats: int) -> float:
  a = jnp.ones((2048, 2048), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  return 2 * 2048**3 / _timed(lambda: f(a).block_until_ready(), repeats)


def _batches(name: str, config, b: int) -> tuple[dict, int]:
  """A synthetic global batch of the task's shapes, and its token count."""
  rng = np.random.default_rng(0)
  if name == "dit":
    lat = (b, 3, 8, 8, config.model.in_channels)
    visual = (b, 16, config.model.visual_dim)
    batch = {
      "latents": rng.normal(size=lat).astype(np.float32),
      "visual_embedding": rng.normal(size=visual).astype(np.float32),
      "caption_ids": rng.integers(0, 100, (b, config.data.max_text_len)).astype(np.int32),
      "caption_mask": np.ones((b, config.data.max_text_len), bool),
    }
    p = config.model.patch_size
    return batch, b * 3 * 8 * 8 // (p[0] * p[1] * p[2])
  d = config.data
  k, dim = config.model.num_queries, config.model.visual_dim
  ids = lambda *shape: rng.integers(10, 100, shape).astype(np.int32)
  batch = {
    "task_ids": ids(b, d.max_action_tokens),
    "task_mask": np.ones((b, d.max_action_tokens), bool),
    "action_ids": ids(b, d.max_steps, d.max_action_tokens),
    "action_mask": np.ones((b, d.max_steps, d.max_action_tokens), bool),
    "caption_ids": ids(b, d.max_steps, d.max_caption_tokens),
    "caption_mask": np.ones((b, d.max_steps, d.max_caption_tokens), bool),
    "step_mask": np.ones((b, d.max_steps), bool),
    "visual_embedding": rng.normal(size=(b, d.max_steps, k, dim)).astype(np.float32),
  }
  per_step = d.max_action_tokens + d.max_caption_tokens + 2 * k + 6
  return batch, b * (d.max_action_tokens + d.max_steps * per_step)


def bench(name: str, batch_size: int, repeats: int, peak: float) -> float:
  overrides = ["--config.train.visual_reg.embedding_std=1.0"] if name == "dit" else []
  config = load_config(os.path.join(CONFIGS, f"{name}.py"), overrides)
  s = trainer.setup(config, tasks.get(name), make_mesh({"data": 1}, jax.devices()[:1]))
  batch, tokens = _batches(name, config, batch_size)
  batch = jax.device_put(batch, s.batch_sharding)
  n_params = sum(x.size for x in jax.tree.leaves(s.abstract["model"]))
  state = [s.init()]
  step = jnp.asarray(1, jnp.int32)

  def run():
    state[0], m = s.step(state[0], batch, step)
    jax.block_until_ready(m)

  dt = _timed(run, repeats)
  flops = 6 * n_params * tokens
  frac = flops / dt / peak
  print(
    f"{name}: {n_params / 1e6:.2f}M params, batch {batch_size} ({tokens} tokens): "
    f"{dt * 1e3:.1f} ms/step, {batch_size / dt:.1f} examples/s, "
    f"{flops / dt / 1e9:.1f} GFLOP/s = {frac:.2f} of the matmul peak"
  )
  return frac


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__)
  cpu_isa.add_argument(ap)
  ap.add_argument("--repeats", type=int, default=5)
  ap.add_argument("--batch", type=int, default=8)
  args = ap.parse_args()
  print(cpu_isa.describe(ISA), flush=True)
  peak = matmul_flops(args.repeats)
  print(f"matmul 2048^3 float32: {peak / 1e9:.1f} GFLOP/s ({os.cpu_count()} cores)")
  fracs = [bench(n, args.batch, args.repeats, peak) for n in ("dit", "director")]
  # The issue sets no target; 0.70 is what diffusers' Wan train step reaches here (PERF.md).
  print(
    f"ratio toy DiT step FLOP/s over matmul FLOP/s, higher is better: {fracs[0]:.2f} "
    "(target >= 0.70)"
  )
  print(
    f"ratio toy director step FLOP/s over matmul FLOP/s, higher is better: {fracs[1]:.2f} "
    "(target >= 0.70)"
  )


if __name__ == "__main__":
  sys.exit(main())
