"""Seconds per story: the language-centric director's path vs the interleaved one, CPU.

  python benchmarks/keyframe_sampling.py [--tokenizer demo_out/work/tokenizer] [--steps 30]
      [--story-steps 6] [--stories 2]

Both render the same free-run stories (the director writes the text from the dish name,
--story-steps steps each) with the shipped toy checkpoints (auteur_jax/assets/
checkpoints/toy, with the demo's tokenizer: `auteur demo` writes it; --random: random
weights of the same shapes and a BPE trained here) through
`StorySampler.render` (sample/story.py), one story per model call row:
  interleaved  director text + visual states -> toy DiT (embedding-conditioned) -> VAE
  language     director text -> keyframe renderer (rolling context, 3-way CFG) -> VAE
               decode + CLIP image tokens of each keyframe -> keyframe DiT (the toy DiT
               widened to 36 input channels: the same blocks) -> VAE
with the same flow steps (--steps) for the DiTs and the renderer and the demo's CFG.
One timed run of each after a warm-up run (benchmarks/timing.py, interleaved); prints
seconds per story and `ratio language / interleaved seconds per story` (no target: the
language path does strictly more work, a keyframe draw per step; the ratio says how much).
"""

from __future__ import annotations

import argparse
import os
import tempfile

import cpu_isa  # benchmarks/cpu_isa.py: caps the ISA before jax loads.
import timing

ISA = cpu_isa.apply()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from auteur_jax.config import load_config  # noqa: E402
from auteur_jax.demo.plans import SHIPPED  # noqa: E402
from auteur_jax.sample.story import StoryRequest, StorySampler  # noqa: E402

TASKS = ["make a tomato salad", "cook a carrot soup", "make fried rice", "bake a potato"]


def sampler(director: str, steps: int, random: bool, tokenizer: str) -> StorySampler:
  c = load_config("toy/sample", [f"--config.sample.director={director}"])
  for name, run in (
    ("director", "director"),
    ("dit", "dit"),
    ("vae", "vae"),
    ("keyframe", "keyframe"),
    ("dit_keyframe", "dit_keyframe"),
    ("clip", "clip"),
  ):
    c[name].init.checkpoint = "" if random else os.path.join(SHIPPED, run)
  c.allow_random_init = random
  c.tokenizer = tokenizer
  for name in ("dit", "dit_keyframe", "keyframe"):
    c[name].sample.num_steps = steps
  for name in ("dit", "dit_keyframe"):  # The demo's CFG (demo/plans.py).
    c[name].sample.text_scale, c[name].sample.visual_scale = 2.0, 1.5
  c.director.data.max_action_tokens = 16
  c.director.sample.max_action_tokens, c.director.sample.max_caption_tokens = 16, 72
  return StorySampler.from_config(c)


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  cpu_isa.add_argument(ap)
  ap.add_argument("--steps", type=int, default=30, help="flow steps per clip / keyframe")
  ap.add_argument("--story-steps", type=int, default=6, help="steps (clips) per story")
  ap.add_argument("--stories", type=int, default=2, help="stories per timed run")
  ap.add_argument("--random", action="store_true", help="random weights (no shipped files)")
  ap.add_argument("--tokenizer", default="demo_out/work/tokenizer", help="the demo's tokenizer")
  args = ap.parse_args()
  print(f"ISA cap: {ISA}")
  tokenizer = args.tokenizer
  if args.random:  # Any tokenizer of the toy vocabulary size.
    from auteur_jax.data.tokenizer import train_bpe

    tokenizer = os.path.join(tempfile.mkdtemp(), "tokenizer")
    train_bpe(TASKS * 8, 2048, out_dir=tokenizer)
  samplers = {
    d: sampler(d, args.steps, args.random, tokenizer) for d in ("interleaved", "language")
  }
  reqs = [
    StoryRequest(f"s{i}", TASKS[i % len(TASKS)], num_steps=args.story_steps, seed=i)
    for i in range(args.stories)
  ]
  times = timing.interleaved(
    {d: (lambda s=s: s.render(reqs)) for d, s in samplers.items()}, repeats=1
  )
  per_story = {d: t[0] / args.stories for d, t in times.items()}
  for d, t in per_story.items():
    print(f"{d}: {t:.2f} s per story ({args.story_steps} steps, {args.steps} flow steps)")
  ratio = per_story["language"] / per_story["interleaved"]
  print(f"ratio language / interleaved seconds per story (lower is better): {ratio:.2f}")


if __name__ == "__main__":
  main()
