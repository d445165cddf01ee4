"""One process of a multi-process `auteur encode` (started by test_encode.py).

  python tests/encode_worker.py --process-id I --num-processes N --port P \
      --in-dir IN --out-dir OUT --checkpoint RUN [--devices 2]

Each process sees `--devices` CPU devices, joins jax.distributed on 127.0.0.1 (through
config.distributed, as `auteur encode` does) and encodes its share of the clip shards
with test_encode.py's tiny VAE config restored from RUN.
"""

import argparse
import json
import os
import sys


def main() -> None:
  ap = argparse.ArgumentParser()
  for name in ("--process-id", "--num-processes", "--port", "--devices"):
    ap.add_argument(name, type=int, default=2 if name == "--devices" else None)
  for name in ("--in-dir", "--out-dir", "--checkpoint"):
    ap.add_argument(name)
  args = ap.parse_args()
  os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.devices}"
  os.environ["JAX_PLATFORMS"] = "cpu"
  sys.path.insert(0, os.path.dirname(__file__))
  from test_encode import _config

  from auteur_jax.parallel.distributed import distributed_defaults
  from auteur_jax.sample.encode import encode_dataset

  config = _config("vae", args.in_dir, args.out_dir)
  config.init.checkpoint = args.checkpoint
  config.distributed = distributed_defaults()
  config.distributed.update(
    mode="explicit",
    coordinator=f"127.0.0.1:{args.port}",
    num_processes=args.num_processes,
    process_id=args.process_id,
    initialization_timeout=60,
    heartbeat_timeout=20,
  )
  r = encode_dataset(config, progress=False)
  print(json.dumps({"process": args.process_id, "encoded": r["encoded_shards"]}))


if __name__ == "__main__":
  main()
