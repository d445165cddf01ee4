"""Peak memory of `auteur convert import` and `reshard` against the checkpoint's size.

Writes a random Llama-shaped safetensors checkpoint (float32, in 1 GiB shards with an
index; default: 4 layers, width 2048, MLP 16384, vocab 32768 = 2.25 GiB, largest tensor
the 256 MiB embedding), converts it in a fresh process onto an 8-way fsdp mesh of
simulated CPU devices (on CPU, device arrays live in host memory too) and reads that
process's peak resident set (VmHWM, which counts memory-mapped file pages it
touched). The same conversion of a tiny checkpoint gives the fixed cost of the
interpreter and its libraries. Claim: peak <= 1.5 x largest tensor + OVERHEAD.
Then reshards the result onto data=2,fsdp=4 (`auteur convert reshard`, chunk by chunk:
its peak must not grow with the checkpoint either).

  python benchmarks/convert_memory.py [--layers 4] [--width 2048] [--mlp 16384]
      [--vocab 32768] [--repeats 1]

Prints sizes and peak RSS (median of --repeats), then two `ratio ...` lines with targets.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
OVERHEAD = 512 * (1 << 20)  # Interpreter + jax / orbax / tensorstore (~0.2 GiB) + chunks.
MIB = 1 << 20


def write_random_llama(
  folder: str,
  layers: int,
  width: int,
  mlp: int,
  vocab: int,
  seed: int = 0,
  shard_bytes: int = 1 << 30,
) -> tuple[int, int]:
  """A random LlamaForCausalLM-layout checkpoint (1 kv head per head, untied head),
  written one tensor at a time. Returns (total bytes, largest tensor bytes)."""
  from auteur_jax.convert.safetensors_io import write_sharded

  os.makedirs(folder)
  heads = width // 128
  config = dict(
    model_type="llama",
    vocab_size=vocab,
    hidden_size=width,
    intermediate_size=mlp,
    num_hidden_layers=layers,
    num_attention_heads=heads,
    num_key_value_heads=heads,
    head_dim=128,
    rms_norm_eps=1e-6,
    tie_word_embeddings=False,
    hidden_act="silu",
  )
  with open(os.path.join(folder, "config.json"), "w") as f:
    json.dump(config, f)
  decl = [
    ("model.embed_tokens.weight", (vocab, width)),
    ("lm_head.weight", (vocab, width)),
    ("model.norm.weight", (width,)),
  ]
  for i in range(layers):
    p = f"model.layers.{i}."
    decl += [
      (p + "input_layernorm.weight", (width,)),
      (p + "post_attention_layernorm.weight", (width,)),
    ]
    decl += [(f"{p}self_attn.{x}_proj.weight", (width, width)) for x in "qkvo"]
    decl += [
      (p + "mlp.gate_proj.weight", (mlp, width)),
      (p + "mlp.up_proj.weight", (mlp, width)),
      (p + "mlp.down_proj.weight", (width, mlp)),
    ]
  decl = [(n, s, np.dtype(np.float32)) for n, s in decl]

  def produce():
    rng = np.random.default_rng(seed)
    for name, shape, _ in decl:
      yield name, rng.random(shape, dtype=np.float32)

  write_sharded(folder, "model", decl, produce, shard_bytes)
  sizes = [int(np.prod(s)) * 4 for _, s, _ in decl]
  return sum(sizes), max(sizes)


_CHILD = """
import os, sys, time
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
os.environ["JAX_PLATFORMS"] = "cpu"
sys.path.insert(0, {repo!r})
from auteur_jax.convert.importer import import_weights
from auteur_jax.convert.reshard import reshard
t = time.perf_counter()
{call}
# VmHWM: the peak of this program's own memory (ru_maxrss would also count what the
# forking parent held before exec).
hwm = [ln for ln in open("/proc/self/status") if ln.startswith("VmHWM:")][0]
print("RESULT", int(hwm.split()[1]) * 1024, time.perf_counter() - t)
"""


def measure(call: str) -> tuple[int, float]:
  """(peak RSS bytes, seconds) of the Python statement `call` in a fresh process."""
  out = subprocess.run(
    [sys.executable, "-c", _CHILD.format(repo=REPO, call=call)],
    capture_output=True,
    text=True,
    check=False,
  )
  lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT")]
  if out.returncode or not lines:
    raise RuntimeError(f"conversion failed ({out.returncode}):\n{out.stderr[-3000:]}")
  _, rss, seconds = lines[-1].split()
  return int(rss), float(seconds)


def measure_import(src: str, dst: str) -> tuple[int, float]:
  return measure(
    f"import_weights('llama', {src!r}, {dst!r}, mesh_shape={{'fsdp': 8}}, progress=False)"
  )


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--layers", type=int, default=4)
  ap.add_argument("--width", type=int, default=2048)
  ap.add_argument("--mlp", type=int, default=16384)
  ap.add_argument("--vocab", type=int, default=32768)
  ap.add_argument("--repeats", type=int, default=1)
  args = ap.parse_args()
  work = tempfile.mkdtemp(prefix="convert_memory_")
  try:
    tiny_size, _ = write_random_llama(f"{work}/tiny", 1, 256, 512, 512)
    base, _ = measure_import(f"{work}/tiny", f"{work}/tiny_out")
    t = time.perf_counter()
    size, largest = write_random_llama(f"{work}/big", args.layers, args.width, args.mlp, args.vocab)
    print(
      f"checkpoint: {size / MIB:,.0f} MiB in {len(os.listdir(f'{work}/big')) - 2} "
      f"files (written in {time.perf_counter() - t:.1f} s), largest tensor "
      f"{largest / MIB:,.0f} MiB"
    )
    peaks, times = [], []
    for _ in range(args.repeats):
      shutil.rmtree(f"{work}/out", ignore_errors=True)
      peak, seconds = measure_import(f"{work}/big", f"{work}/out")
      peaks.append(peak)
      times.append(seconds)
    peak, seconds = statistics.median(peaks), statistics.median(times)
    bound = 1.5 * largest + OVERHEAD
    print(f"baseline peak RSS (tiny {tiny_size / MIB:.1f} MiB checkpoint): {base / MIB:,.0f} MiB")
    print(
      f"peak RSS converting {size / MIB:,.0f} MiB: {peak / MIB:,.0f} MiB "
      f"({seconds:.1f} s, {size / MIB / seconds:,.0f} MiB/s); above baseline "
      f"{(peak - base) / MIB:,.0f} MiB = {(peak - base) / largest:.2f} x largest tensor"
    )
    print(f"bound 1.5 x largest + {OVERHEAD / MIB:,.0f} MiB overhead: {bound / MIB:,.0f} MiB")
    print(
      f"ratio import peak RSS / checkpoint size (lower is better): {peak / size:.3f} "
      f"(target <= {bound / size:.3f})"
    )
    r_peak, r_s = measure(
      f"reshard({work + '/out'!r}, {work + '/resharded'!r}, {{'data': 2, 'fsdp': 4}})"
    )
    r_bound = base + OVERHEAD
    print(
      f"peak RSS resharding it onto data=2,fsdp=4: {r_peak / MIB:,.0f} MiB ({r_s:.1f} s); "
      f"above baseline {(r_peak - base) / MIB:,.0f} MiB; bound baseline + "
      f"{OVERHEAD / MIB:,.0f} MiB overhead: {r_bound / MIB:,.0f} MiB"
    )
    print(
      f"ratio reshard peak RSS / checkpoint size (lower is better): {r_peak / size:.3f} "
      f"(target <= {r_bound / size:.3f})"
    )
  finally:
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
  main()
