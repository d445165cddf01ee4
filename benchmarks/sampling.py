"""Clip rendering (DiT flow sampling under 3-way CFG + VAE decode): our story sampler vs
diffusers' Wan components, CPU.

  python benchmarks/sampling.py [--clips 4] [--steps 30] [--repeats 3] [--torch-threads N]

Both sides render the same clips from the same weights: a diffusers WanTransformer3DModel
and AutoencoderKLWan built with the toy shapes (toy/dit, toy/vae:
9 frames of 64 x 64 -> latents 3 x 8 x 8 x 16, 16 visual tokens of width 64) and
converted to ours (convert/diffusers_wan.py, diffusers_vae.py). Per clip and per flow
step, three condition sets (none / visual / text + visual) run as one batch of 3 rows, as
our sampler does, then the guided Euler update on the same shifted time grid; then the
VAE decodes (ours: `StorySampler._clips`, chunked in time; theirs: `vae.decode`, which
decodes frame by frame with its causal cache) and frames become uint8.
Text: diffusers' image-conditioned attention takes exactly the last 512 context tokens as
text, so both sides get 512 caption tokens (ours through its id embedding, theirs the
same embeddings precomputed). Clips are rendered one at a time on both sides (our
sampler's rows_per_device = 1 on one device). Medians of `--repeats` timed runs after a
warm-up run, alternating sides. Prints clips/s and the `ratio` line (target >= 2).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile

import cpu_isa  # benchmarks/cpu_isa.py: caps the ISA before jax / torch load.
import timing

ISA = cpu_isa.apply()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from diffusers import AutoencoderKLWan, WanTransformer3DModel  # noqa: E402
from flax import nnx  # noqa: E402

from auteur_jax.config import CONFIG_DIR, load_module_config  # noqa: E402
from auteur_jax.convert.diffusers_vae import load_diffusers_vae  # noqa: E402
from auteur_jax.convert.diffusers_wan import load_diffusers_wan  # noqa: E402
from auteur_jax.data.tokenizer import train_bpe  # noqa: E402
from auteur_jax.diffusion import flow  # noqa: E402
from auteur_jax.models.conditioned_dit import TextConditionedDiT  # noqa: E402
from auteur_jax.models.director import Director, DirectorConfig  # noqa: E402
from auteur_jax.parallel.mesh import make_mesh  # noqa: E402
from auteur_jax.sample import story  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
TEXT_LEN = 512


def diffusers_models(dit_cfg, vae_cfg) -> tuple[WanTransformer3DModel, AutoencoderKLWan]:
  """Their models with the toy shapes; DiT weights perturbed so that no tensor is zero."""
  torch.manual_seed(0)
  m = dit_cfg.model
  dit = WanTransformer3DModel(
    patch_size=tuple(m.patch_size),
    num_attention_heads=m.num_heads,
    attention_head_dim=m.head_dim,
    in_channels=m.in_channels,
    out_channels=m.out_channels,
    text_dim=m.text_dim,
    freq_dim=m.freq_dim,
    ffn_dim=m.ffn_dim,
    num_layers=m.num_layers,
    cross_attn_norm=m.cross_attn_norm,
    eps=m.eps,
    image_dim=m.visual_dim,
    added_kv_proj_dim=m.num_heads * m.head_dim,
    rope_max_seq_len=m.rope_max_len,
  ).eval()
  with torch.no_grad():
    for p in dit.parameters():
      p.add_(0.02 * torch.randn_like(p))
  v = vae_cfg.model
  vae = AutoencoderKLWan(
    base_dim=v.base_dim,
    z_dim=v.z_dim,
    dim_mult=list(v.dim_mult),
    num_res_blocks=v.num_res_blocks,
    temperal_downsample=list(v.temporal_downsample),
  ).eval()
  return dit, vae


def our_sampler(dit_t, vae_t, dit_cfg, vae_cfg, director_cfg, steps: int) -> story.StorySampler:
  with tempfile.TemporaryDirectory() as d:
    dit_t.save_pretrained(os.path.join(d, "dit"))
    vae_t.save_pretrained(os.path.join(d, "vae"))
    dit = load_diffusers_wan(os.path.join(d, "dit"))
    vae = load_diffusers_vae(os.path.join(d, "vae"), latents_mean=(), latents_std=())
  vocab = dit_cfg.text.vocab_size
  with nnx.use_eager_sharding(False):
    cond = nnx.eval_shape(lambda: TextConditionedDiT(dit.cfg, vocab, rngs=nnx.Rngs(0)))
    cond.dit = dit
    cond.text_embed = nnx.Embed(vocab, dit.cfg.text_dim, rngs=nnx.Rngs(1))
  director = story.build_jitted(
    lambda: Director(DirectorConfig.from_config(director_cfg.model.to_dict()), rngs=nnx.Rngs(2))
  )  # Not timed: clips only.
  tok = train_bpe(["chop the tomatoes", "boil the water", "stir the soup"] * 4, 300)
  s = dit_cfg.sample
  settings = story.Settings(
    num_frames=9,
    size=64,
    vae_chunk_frames=1,
    solver="euler",
    sampler_steps=steps,
    shift=s.shift,
    text_scale=s.text_scale,
    visual_scale=s.visual_scale,
    max_text_len=TEXT_LEN,
  )
  return story.StorySampler(
    director, cond, vae, tok, settings, mesh=make_mesh({"data": 1}, jax.devices()[:1])
  )


def theirs_fn(dit, vae, sampler: story.StorySampler, jobs, steps: int):
  """Their loop over the same clips: text embeddings and noise taken from ours."""
  s = sampler.settings
  model = nnx.merge(sampler._dit_graph, sampler._dit_params)
  ts = np.asarray(flow.time_grid(steps, s.shift), np.float32)
  inputs = []
  for caption, z, key in jobs:
    ids, mask = sampler.tokenizer.encode_batch([caption], TEXT_LEN)
    text = np.asarray(model.text_embed(jnp.asarray(ids)) * mask[..., None])
    noise = np.asarray(jax.random.normal(key, sampler.latent_shape()))
    to_t = lambda a: torch.from_numpy(np.array(a))  # noqa: E731  (a writable copy)
    inputs.append((to_t(text), to_t(z[None]), to_t(noise[None].transpose(0, 4, 1, 2, 3))))

  @torch.no_grad()
  def run() -> np.ndarray:
    out = []
    for text, z, x in inputs:
      ctx = torch.cat([torch.zeros_like(text), torch.zeros_like(text), text])
      img = torch.cat([torch.zeros_like(z), z, z])
      for i in range(steps):
        t = torch.full((3,), float(ts[i]) * 1000.0)
        v = dit(torch.cat([x, x, x]), t, ctx, encoder_hidden_states_image=img, return_dict=False)[0]
        v_none, v_vis, v_full = v.chunk(3)
        v = v_none + s.visual_scale * (v_vis - v_none) + s.text_scale * (v_full - v_vis)
        x = x + float(ts[i + 1] - ts[i]) * v
      video = vae.decode(x, return_dict=False)[0]  # [1, 3, T, H, W] in [-1, 1]
      out.append(
        torch.round((video + 1.0) * 127.5).to(torch.uint8).permute(0, 2, 3, 4, 1).numpy()[0]
      )
    return np.stack(out)

  return run


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  cpu_isa.add_argument(ap)
  ap.add_argument("--clips", type=int, default=4, help="clips per timed run")
  ap.add_argument("--steps", type=int, default=30, help="flow steps (toy/dit)")
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument(
    "--torch-threads",
    type=int,
    default=0,
    help="0: torch's default (on a busy machine 1 can be far faster)",
  )
  args = ap.parse_args()
  print(cpu_isa.describe(ISA), flush=True)
  if args.torch_threads:
    torch.set_num_threads(args.torch_threads)
  dit_cfg = load_module_config(os.path.join(CONFIG_DIR, "toy", "dit.py"))
  vae_cfg = load_module_config(os.path.join(CONFIG_DIR, "toy", "vae.py"))
  director_cfg = load_module_config(os.path.join(CONFIG_DIR, "toy", "director.py"))
  dit_t, vae_t = diffusers_models(dit_cfg, vae_cfg)
  sampler = our_sampler(dit_t, vae_t, dit_cfg, vae_cfg, director_cfg, args.steps)
  rng = np.random.default_rng(0)
  jobs = [
    (
      ["chop the tomatoes", "boil the water", "stir the soup"][i % 3],
      rng.standard_normal((16, 64)).astype(np.float32),
      jax.random.fold_in(jax.random.key(1), i),
    )
    for i in range(args.clips)
  ]

  fns = {
    "ours": lambda: sampler._clips(jobs),
    "diffusers": theirs_fn(dit_t, vae_t, sampler, jobs, args.steps),
  }
  outs = {k: fn() for k, fn in fns.items()}  # Warm-up (and compile).
  diff = np.abs(outs["ours"].astype(int) - outs["diffusers"].astype(int))
  print(
    f"{args.clips} clips of 9 x 64 x 64, {args.steps} Euler steps x 3 CFG rows, text "
    f"{TEXT_LEN} + visual 16 tokens; torch threads {torch.get_num_threads()}, jax "
    f"{jax.__version__} on {jax.devices()[0].platform}"
  )
  print(f"frames ours vs diffusers: max |diff| {diff.max()} (uint8), mean {diff.mean():.3f}")
  times = timing.interleaved(fns, args.repeats, warmup=0)  # Warmed up above.
  rate = {}
  for k, ts in times.items():
    med = statistics.median(ts)
    rate[k] = args.clips / med
    print(
      f"{k:9s}: median {med:.3f} s per {args.clips} clips (min {min(ts):.3f}, max "
      f"{max(ts):.3f}) = {rate[k]:.2f} clips/s"
    )
  print(
    f"ratio ours/diffusers clips/s (higher means ours is faster): "
    f"{rate['ours'] / rate['diffusers']:.2f} (target >= 2)"
  )


if __name__ == "__main__":
  main()
