"""One DiT training step (forward, backward, AdamW): ours (JAX) vs diffusers (torch), CPU.

  python benchmarks/dit_step.py                 # visual-conditioned layout (the default)
  python benchmarks/dit_step.py --layout text   # text-to-video layout, 64 text tokens
  python benchmarks/dit_step.py --sweep         # also time our remat / scan variants

Both models have the same Wan 2.1 shapes (ours is converted from the diffusers model the
script builds), the same batch and float32. Repeats alternate ours / theirs / a
2048^3 matmul so that both see the same machine load (benchmarks/timing.py, with a pause
before each call); medians after warm-up. FLOPs are
the matmul FLOPs of the model (attention included) x 3 for forward + backward.
Prints `ratio ...` lines; the target is ours at most 0.9x their step time.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile

import cpu_isa  # benchmarks/cpu_isa.py: caps the ISA before jax / torch load.
import timing

ISA = cpu_isa.apply()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import torch  # noqa: E402
from diffusers import WanTransformer3DModel  # noqa: E402
from flax import nnx  # noqa: E402

from auteur_jax.convert.diffusers_wan import load_diffusers_wan  # noqa: E402
from auteur_jax.diffusion import flow  # noqa: E402
from auteur_jax.models.dit import DiTConfig, VideoDiT, count_params  # noqa: E402

# Benchmark shapes: 8 blocks of width 512 (8 heads x 64), latents 4 x 16 x 32 x 16 ->
# 512 tokens per clip, batch 2. Wan's text encoder pads captions to 512 tokens, and
# diffusers' image-conditioned attention needs exactly those 512 before the visual ones.
WAN = dict(
  patch_size=(1, 2, 2),
  num_attention_heads=8,
  attention_head_dim=64,
  in_channels=16,
  out_channels=16,
  text_dim=512,
  freq_dim=256,
  ffn_dim=2048,
  num_layers=8,
)
BATCH, LATENT = 2, (4, 16, 32)
LAYOUTS = {
  "visual": dict(text_len=512, visual_len=64, visual_dim=512),
  "text": dict(text_len=64, visual_len=0, visual_dim=0),
}
ADAM = dict(lr=1e-4, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.0)  # Paper, Table 12.


def train_flops(cfg: DiTConfig, batch: int, tokens: int, text_len: int, visual_len: int) -> float:
  """Matmul FLOPs of one training step: 3 x forward (backward = 2 x forward)."""
  d, f, bn = cfg.width, cfg.ffn_dim, batch * tokens
  p = int(np.prod(cfg.patch_size))
  block = (
    2 * bn * d * 3 * d
    + 4 * bn * tokens * d
    + 2 * bn * d * d  # self-attention
    + 2 * bn * d * d
    + 4 * batch * text_len * d * d
    + 4 * bn * text_len * d  # text
    + 2 * bn * d * d  # cross-attention output
    + 4 * bn * d * f
  )  # MLP
  if visual_len:
    block += 4 * batch * visual_len * d * d + 4 * bn * visual_len * d
  embed = (
    2 * bn * p * cfg.in_channels * d
    + 2 * bn * d * p * cfg.out_channels
    + 2 * batch * text_len * (cfg.text_dim * d + d * d)
  )
  if visual_len:
    embed += 2 * batch * visual_len * (cfg.visual_dim**2 + cfg.visual_dim * d)
  return 3.0 * (cfg.num_layers * block + embed)


def make_data(layout: dict, seed: int = 0) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(seed)
  x0 = rng.standard_normal((BATCH, *LATENT, WAN["in_channels"]), np.float32)
  noise = rng.standard_normal(x0.shape, np.float32)
  t = np.array([0.3, 0.8], np.float32)
  out = dict(
    x_t=np.asarray(flow.add_noise(x0, noise, jnp.asarray(t))),
    t=t,
    target=noise - x0,
    text=rng.standard_normal((BATCH, layout["text_len"], WAN["text_dim"]), np.float32),
  )
  if layout["visual_len"]:
    out["visual"] = rng.standard_normal(
      (BATCH, layout["visual_len"], layout["visual_dim"]), np.float32
    )
  return out


def torch_step_fn(model: WanTransformer3DModel, data: dict[str, np.ndarray]):
  """Their step: diffusers forward, MSE to the velocity, backward, torch AdamW."""
  model.train()
  kw = dict(ADAM)
  opt = torch.optim.AdamW(
    model.parameters(),
    lr=kw["lr"],
    betas=(kw["b1"], kw["b2"]),
    eps=kw["eps"],
    weight_decay=kw["weight_decay"],
    fused=True,
  )

  def to_ncthw(a):  # Ours is channels-last; diffusers takes [B, C, T, H, W].
    return torch.from_numpy(np.ascontiguousarray(a.transpose(0, 4, 1, 2, 3)))

  x, target = to_ncthw(data["x_t"]), to_ncthw(data["target"])
  t = torch.from_numpy(data["t"] * 1000.0)  # diffusers' Wan takes t in [0, 1000].
  text = torch.from_numpy(data["text"])
  visual = torch.from_numpy(data["visual"]) if "visual" in data else None

  def step():
    out = model(x, t, text, encoder_hidden_states_image=visual, return_dict=False)[0]
    loss = torch.mean((out - target) ** 2)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return float(loss.detach())

  return step


def jax_step_fn(model: VideoDiT, data: dict[str, np.ndarray]):
  """Our step: one jitted function (donated state) of forward, grad and optax AdamW."""
  kw = dict(ADAM)
  tx = optax.adamw(kw.pop("lr"), **kw)
  opt = nnx.Optimizer(model, tx, wrt=nnx.Param)
  graphdef, state = nnx.split((model, opt))
  state = jax.tree.map(jnp.copy, state)  # Donated below: keep the caller's arrays valid.
  args = {k: jnp.asarray(v) for k, v in data.items()}

  @jax.jit
  def train_step(state, args):
    model, opt = nnx.merge(graphdef, state)

    def loss_fn(m):
      v = m(args["x_t"], args["t"], args["text"], args.get("visual"))
      return jnp.mean(jnp.square(v - args["target"]))

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    opt.update(model, grads)
    return nnx.state((model, opt)), loss

  step_jit = jax.jit(train_step.__wrapped__, donate_argnums=0)
  box = [state]

  def step():
    box[0], loss = step_jit(box[0], args)
    return float(loss)

  return step


def matmul_fn(n: int = 2048):
  a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n), np.float32))
  mm = jax.jit(lambda a: a @ a)

  def step():
    mm(a).block_until_ready()

  return step, 2.0 * n**3


def main(argv: list[str] | None = None) -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  cpu_isa.add_argument(ap)
  ap.add_argument("--layout", choices=sorted(LAYOUTS), default="visual")
  ap.add_argument("--repeats", type=int, default=7)
  ap.add_argument("--warmup", type=int, default=2)
  ap.add_argument("--remat", default="names", help="our DiTConfig.remat for the main line")
  ap.add_argument("--no-scan", action="store_true", help="unroll our layers")
  ap.add_argument("--sweep", action="store_true", help="also time other remat / scan choices")
  args = ap.parse_args(argv)
  print(cpu_isa.describe(ISA), flush=True)

  layout = LAYOUTS[args.layout]
  torch.set_num_threads(os.cpu_count() or 1)
  torch.manual_seed(0)
  extra = (
    dict(
      image_dim=layout["visual_dim"],
      added_kv_proj_dim=WAN["num_attention_heads"] * WAN["attention_head_dim"],
    )
    if layout["visual_len"]
    else {}
  )
  theirs = WanTransformer3DModel(**WAN, **extra)
  with tempfile.TemporaryDirectory() as tmp:
    theirs.save_pretrained(tmp)
    ours = load_diffusers_wan(tmp, remat=args.remat, scan_layers=not args.no_scan)
  cfg = ours.cfg
  data = make_data(layout)
  tokens = int(np.prod(LATENT)) // int(np.prod(cfg.patch_size))
  flops = train_flops(cfg, BATCH, tokens, layout["text_len"], layout["visual_len"])
  n_theirs = sum(p.numel() for p in theirs.parameters())
  print(
    f"layout {args.layout}: batch {BATCH}, latents {LATENT} x {cfg.in_channels} -> "
    f"{tokens} tokens, text {layout['text_len']}, visual {layout['visual_len']}; "
    f"width {cfg.width}, {cfg.num_layers} layers; params ours {count_params(ours) / 1e6:.2f}M"
    f", theirs {n_theirs / 1e6:.2f}M; float32; {os.cpu_count()} cores; "
    f"{flops / 1e9:.1f} GFLOP per step"
  )

  def name(c):
    return f"ours remat={c.remat} scan={c.scan_layers}"

  main_name = name(cfg)
  fns = {main_name: jax_step_fn(ours, data), "theirs": torch_step_fn(theirs, data)}
  mm, mm_flops = matmul_fn()
  fns["matmul"] = mm
  if args.sweep:
    for remat, scan in (
      ("names", True),
      ("none", True),
      ("dots_no_batch", True),
      ("full", True),
      ("names", False),
    ):
      vcfg = dataclasses.replace(cfg, remat=remat, scan_layers=scan)
      if name(vcfg) not in fns:
        with nnx.use_eager_sharding(False):
          graphdef = nnx.graphdef(nnx.eval_shape(lambda c=vcfg: VideoDiT(c, rngs=nnx.Rngs(0))))
        fns[name(vcfg)] = jax_step_fn(nnx.merge(graphdef, nnx.state(ours)), data)
  times = timing.interleaved(fns, args.repeats, args.warmup)

  med = {k: statistics.median(v) for k, v in times.items()}
  peak = mm_flops / med["matmul"]
  print(f"matmul 2048^3: {peak / 1e9:.0f} GFLOP/s (median)")
  for k, v in times.items():
    if k != "matmul":
      print(
        f"{k:44s} median {med[k]:.3f} s  min {min(v):.3f} s  "
        f"{flops / med[k] / 1e9:6.1f} GFLOP/s = {flops / med[k] / peak:.2f} of matmul"
      )
  theirs_frac = flops / med["theirs"] / peak
  ratio = med[main_name] / med["theirs"]
  print(f"ratio ours/theirs step time (lower is better): {ratio:.2f} (target <= 0.9)")
  print(
    f"ratio ours step FLOP/s / matmul FLOP/s (higher is better): "
    f"{flops / med[main_name] / peak:.2f} (target >= {theirs_frac / 0.9:.2f})"
  )


if __name__ == "__main__":
  main(sys.argv[1:])
