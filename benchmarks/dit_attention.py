"""DiT train step with full vs blockwise self-attention: scratch memory and time, CPU.

  python benchmarks/dit_attention.py [--tokens 4096] [--block 512] [--repeats 5]

One jitted step (forward, backward, AdamW) of a 4-block Wan-style DiT (width 256, 4 heads
x 64, remat "full" as in the paper configs, float32) on one clip of `--tokens` video
tokens, with
config.model.attention "full" and "blockwise" side by side. Memory is XLA's scratch
(temp) bytes of the compiled step: what the attention scores cost grows with
tokens^2 under "full" and with tokens x block under "blockwise". Times are medians after
a warm-up, alternating the two. The last line is the memory ratio; the target is
blockwise at most 0.3x full's scratch at 4,096 tokens (the paper configs' 16,464
tokens make the gap far larger: `auteur plan`, README).

  python benchmarks/dit_attention.py --strategies [--tokens 4096]

compiles the same step on 8 CPU devices (mesh context 4 x fsdp 2, the sequence split 4
ways) once per self-attention strategy (config.model.attention x context_parallel:
models/context_parallel.py) and prints each one's XLA scratch bytes per device next to
`full` on one device (compile only; nothing runs).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import os
import statistics
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
if "--strategies" in sys.argv:  # 8 CPU devices, fixed before jax loads.
  os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
  )

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

from auteur_jax.models.dit import DiTConfig, VideoDiT  # noqa: E402
from auteur_jax.parallel import rules  # noqa: E402
from auteur_jax.parallel.mesh import make_mesh  # noqa: E402

CFG = DiTConfig(
  patch_size=(1, 2, 2),
  in_channels=16,
  out_channels=16,
  num_heads=4,
  head_dim=64,
  ffn_dim=1024,
  num_layers=4,
  text_dim=64,
  freq_dim=64,
  visual_dim=64,
  remat="full",
)
TEXT, VISUAL = 64, 16  # Context tokens per clip.


def make_step(cfg: DiTConfig, tokens: int):
  """(jitted step, its arguments): AdamW on a squared error of the DiT's output (a stand-in
  for the flow loss: what is measured is the step's shape, not its values)."""
  side = 2 * math.isqrt(tokens // 4)  # Latents [4, side, side, 16]: 4 x (side / 2)^2 tokens.
  if 4 * (side // 2) ** 2 != tokens:
    raise SystemExit(f"--tokens must be 4 x a square, got {tokens}")
  with nnx.use_eager_sharding(False):
    model = VideoDiT(cfg, rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(model)
  tx = optax.adamw(1e-4, b1=0.9, b2=0.95)
  ks = jax.random.split(jax.random.key(1), 4)
  batch = (
    jax.random.normal(ks[0], (1, 4, side, side, cfg.in_channels)),
    jax.random.uniform(ks[1], (1,)),
    jax.random.normal(ks[2], (1, TEXT, cfg.text_dim)),
    jax.random.normal(ks[3], (1, VISUAL, cfg.visual_dim)),
  )

  def loss(p, x, t, text, vis):
    return jnp.mean((nnx.merge(graphdef, p)(x, t, text, vis) - x) ** 2)

  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def step(p, opt, x, t, text, vis):
    val, grads = jax.value_and_grad(loss)(p, x, t, text, vis)
    updates, opt = tx.update(grads, opt, p)
    return optax.apply_updates(p, updates), opt, val

  return step, (params, tx.init(params), *batch)


STRATEGIES = (
  ("full", "xla"),
  ("blockwise", "xla"),
  ("full", "ring"),
  ("blockwise", "ring"),
  ("full", "all_to_all"),
  ("blockwise", "all_to_all"),
)


def strategies(tokens: int, block: int) -> None:
  """Scratch bytes per device of each strategy on 8 CPU devices vs full on one."""
  step, state = make_step(CFG, tokens)
  base = step.lower(*state).compile().memory_analysis().temp_size_in_bytes
  mesh = make_mesh({"data": 1, "fsdp": 2, "tensor": 1, "context": 4})
  print(
    f"DiT train step, {CFG.num_layers} blocks of width {CFG.width}, {tokens} video tokens, "
    f"batch 1; 8 CPU devices (context 4 x fsdp 2); full on one device: "
    f"{base / 2**20:.1f} MiB scratch"
  )
  ratios = {}
  for attention, cp in STRATEGIES:
    cfg = dataclasses.replace(CFG, attention=attention, attention_block=block, context_parallel=cp)
    step, state = make_step(cfg, tokens)
    with rules.use_mesh(mesh):
      temp = step.lower(*state).compile().memory_analysis().temp_size_in_bytes
    ratios[f"{attention}/{cp}"] = temp / base
    print(
      f"  {attention + '/' + cp:<22} scratch {temp / 2**20:8.1f} MiB per device = "
      f"{temp / base:.3f} of full on one device"
    )
  best = min(ratios, key=ratios.get)
  print(
    f"ratio {best} scratch per device / full on one device, lower is better: "
    f"{ratios[best]:.3f} (for information)"
  )


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--tokens", type=int, default=4096)
  ap.add_argument("--block", type=int, default=512)
  ap.add_argument("--repeats", type=int, default=5)
  ap.add_argument("--strategies", action="store_true", help="scratch per strategy, 8 devices")
  args = ap.parse_args()
  if args.strategies:
    strategies(args.tokens, args.block)
    return
  variants = {
    "full": CFG,
    "blockwise": dataclasses.replace(CFG, attention="blockwise", attention_block=args.block),
  }
  steps, temp, times = {}, {}, {k: [] for k in variants}
  for name, cfg in variants.items():
    step, state = make_step(cfg, args.tokens)
    compiled = step.lower(*state).compile()
    temp[name] = compiled.memory_analysis().temp_size_in_bytes
    p, opt, *batch = state
    p, opt, val = compiled(p, opt, *batch)  # Warm-up.
    val.block_until_ready()
    steps[name] = [compiled, p, opt, batch]
  for _ in range(args.repeats):  # Alternate, so both see the same machine load.
    for name, s in steps.items():
      t0 = time.perf_counter()
      s[1], s[2], val = s[0](s[1], s[2], *s[3])
      val.block_until_ready()
      times[name].append(time.perf_counter() - t0)
  print(
    f"DiT train step, {CFG.num_layers} blocks of width {CFG.width}, {args.tokens} video "
    f"tokens, batch 1, key block {args.block} (median of {args.repeats})"
  )
  for name in variants:
    print(
      f"  {name:<10} scratch {temp[name] / 2**20:8.1f} MiB   step "
      f"{statistics.median(times[name]) * 1e3:8.1f} ms"
    )
  t = statistics.median(times["blockwise"]) / statistics.median(times["full"])
  print(f"ratio blockwise / full step time, lower is better: {t:.2f} (for information)")
  m = temp["blockwise"] / temp["full"]
  print(f"ratio blockwise / full step scratch memory, lower is better: {m:.3f} (target <= 0.3)")


if __name__ == "__main__":
  main()
