"""One simulated host of a multi-process training run (started by test_multihost.py).

  python tests/multiprocess_worker.py --process-id I --num-processes N --port P \
      --workdir W --data DIR --steps S [--devices 4]
      [--config PATH --set KEY=VALUE ...]

Each process sees `--devices` CPU devices, joins jax.distributed on 127.0.0.1, and
trains a small regression task whose batches come from the TFRecord shards in DIR
(clip records with a `latents` array x; target sum(sin(x))), reading only its own files.
It writes the files it read to W/files-<I>.json. With `--config` it trains that config
instead (with the `--set` overrides, e.g. `config.eval.every=1`), on DIR.
"""

import argparse
import json
import os
import sys


def main() -> None:
  ap = argparse.ArgumentParser()
  for name in ("--process-id", "--num-processes", "--port", "--steps", "--devices"):
    ap.add_argument(name, type=int, default=4 if name == "--devices" else None)
  ap.add_argument("--checkpoint-every", type=int, default=2)
  ap.add_argument("--workdir")
  ap.add_argument("--data")
  ap.add_argument("--config")
  ap.add_argument("--set", action="append", default=[])
  args = ap.parse_args()
  os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.devices}"
  os.environ["JAX_PLATFORMS"] = "cpu"
  sys.path.insert(0, os.path.dirname(__file__))
  from absl import flags

  flags.FLAGS.mark_as_parsed()

  import jax.numpy as jnp
  import ml_collections
  from flax import nnx

  from auteur_jax.config import load_config
  from auteur_jax.data import pipeline
  from auteur_jax.models import registry
  from auteur_jax.parallel import distributed
  from auteur_jax.train import optim, tasks, trainer

  def build(config, rngs):
    init = nnx.initializers.normal(0.3)
    return nnx.Sequential(
      nnx.Linear(8, 32, kernel_init=nnx.with_partitioning(init, ("embed", "mlp")), rngs=rngs),
      jnp.tanh,
      nnx.Linear(32, 1, kernel_init=nnx.with_partitioning(init, ("mlp", None)), rngs=rngs),
    )

  class Task:
    def loss(self, config, model, batch, rng):
      x = batch["latents"]
      err = model(x)[..., 0] - jnp.sin(x).sum(-1)
      return jnp.mean(err**2), {}

    def dataset(self, config, process_index, process_count):
      paths = pipeline.split_files(config.data.dir, "train", "clips")
      mine = pipeline.files_for_process(paths, process_index, process_count)
      with open(os.path.join(args.workdir, f"files-{process_index}.json"), "w") as f:
        json.dump(mine, f)
      return pipeline.make_dataset(
        paths,
        pipeline.ClipDecoder(1, arrays=("latents",)),
        config.data.batch_size,
        seed=0,
        window=8,
        process_index=process_index,
        process_count=process_count,
      )

  if args.config:
    c = load_config(args.config, [f"--config.data.dir={args.data}", *args.set])
    c.train.update(steps=args.steps, checkpoint_every=args.checkpoint_every)
  else:
    registry.register("regression", build)
    tasks.register("regression", Task())
    c = ml_collections.ConfigDict()
    c.task = "regression"
    c.data = ml_collections.ConfigDict(dict(dir=args.data, batch_size=8))
    c.train = optim.train_defaults()
    c.train.update(
      steps=args.steps,
      lr=0.05,
      warmup_steps=1,
      log_every=1,
      checkpoint_every=args.checkpoint_every,
    )
    c.mesh = ml_collections.ConfigDict(
      dict(shape={"data": 2, "fsdp": -1}, batch_axes=("data", "fsdp"), rules=())
    )
    c.distributed = distributed.distributed_defaults()
  if args.num_processes > 1:
    c.distributed.update(
      mode="explicit",
      coordinator=f"127.0.0.1:{args.port}",
      num_processes=args.num_processes,
      process_id=args.process_id,
      initialization_timeout=60,
      heartbeat_timeout=20,
    )
  last = trainer.train(c, args.workdir, progress=False)
  print(
    json.dumps(
      {
        "process": args.process_id,
        "step": last["step"],
        "loss": last["loss"],
        "stopped_by_signal": last["stopped_by_signal"],
      }
    )
  )


if __name__ == "__main__":
  main()
