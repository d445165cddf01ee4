"""The training loop: one readable function that serves every task.

  train(config, workdir)
    mesh from config.mesh -> abstract train state (nnx.eval_shape) -> shardings from
    the logical rules -> jitted init with those out_shardings (no host holds the whole
    model) -> restore the latest checkpoint if there is one -> jitted step with
    in/out shardings and donated state -> metrics, checkpoints, SIGTERM, NaN checks.

The model comes from models/registry.py; a task (train/tasks.py) says how to compute the
loss of a batch and make the per-process grain dataset; everything else is here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import signal
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
import tqdm
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from auteur_jax.checkpoint.layout import abstract_like
from auteur_jax.checkpoint.restore import restore_into
from auteur_jax.config import ConfigError
from auteur_jax.data.pipeline import GlobalBatches
from auteur_jax.models import registry
from auteur_jax.parallel import distributed
from auteur_jax.parallel import rules as rules_lib
from auteur_jax.parallel.mesh import batch_axes, make_mesh
from auteur_jax.train import optim, run_config, tasks
from auteur_jax.train.checkpoint import Checkpoints
from auteur_jax.train.errors import NonFiniteLoss
from auteur_jax.train.evaluate import Evaluator, eval_config
from auteur_jax.train.metrics import MetricsWriter
from auteur_jax.train.throughput import Goodput, Throughput


class EmaParam(nnx.Variable):
  """The exponential moving average of one Param (its metadata: sharded like it)."""


def _ema_of(model: nnx.Module):
  """EmaParams mirroring the model's Params (the same tree, copies of the values)."""
  return jax.tree.map(
    lambda p: EmaParam(jnp.copy(p.get_value()), **p.get_metadata()),
    nnx.state(model, nnx.Param),
    is_leaf=lambda x: isinstance(x, nnx.Variable),
  )


class TrainState(nnx.Module):
  """The model, its optimizer (whose state mirrors the model's Params) and, with
  ema_decay > 0, `ema`: EmaParams of the same tree (restore them with the key path
  ("ema",), as ("model",) restores the params)."""

  def __init__(self, model: nnx.Module, tx: optax.GradientTransformation, ema_decay: float = 0.0):
    self.model = model
    self.opt = nnx.Optimizer(model, tx, wrt=nnx.Param)
    self.ema_decay = ema_decay
    if ema_decay > 0:
      self.ema = nnx.data(_ema_of(model))

  def update_ema(self) -> None:
    """ema <- d * ema + (1 - d) * params (after an optimizer update)."""
    d = self.ema_decay
    jax.tree.map(
      lambda e, p: e.set_value(d * e.get_value() + (1.0 - d) * p.get_value()),
      self.ema,
      nnx.state(self.model, nnx.Param),
      is_leaf=lambda x: isinstance(x, nnx.Variable),
    )

  def use_ema(self) -> None:
    """The model's params <- ema (evaluating the average; the state is a traced copy)."""
    values = jax.tree.map(
      lambda e: e.get_value(), self.ema, is_leaf=lambda x: isinstance(x, nnx.Variable)
    )
    nnx.update(self.model, values)

  def reset_ema(self) -> None:
    """ema <- params (a run that starts from another checkpoint's params)."""
    jax.tree.map(
      lambda e, p: e.set_value(p.get_value()),
      self.ema,
      nnx.state(self.model, nnx.Param),
      is_leaf=lambda x: isinstance(x, nnx.Variable),
    )


@dataclasses.dataclass
class Setup:
  """What `setup` builds: mesh, shardings and the jitted functions of a run."""

  mesh: jax.sharding.Mesh
  graphdef: Any
  state_shardings: Any
  batch_sharding: NamedSharding
  abstract: Any  # ShapeDtypeStructs of the state, with state_shardings (restore targets)
  init: Any  # () -> state
  step: Any  # (state, batch, step) -> (state, metrics)
  step_jit: Any  # the jitted step itself (for lowering / AOT compilation)
  schedule: optax.Schedule


def setup(
  config: ml_collections.ConfigDict, task: tasks.Task, mesh: jax.sharding.Mesh | None = None
) -> Setup:
  """Builds the mesh, abstract state, shardings, jitted init and jitted train step."""
  mesh = mesh or make_mesh(dict(config.mesh.shape))
  rules = rules_lib.mesh_rules(config)
  tx = optim.make_optimizer(config.train)
  schedule = optim.make_schedule(config.train)

  ema_decay = float(config.train.get("ema_decay", 0.0))

  def make_state(seed: int) -> TrainState:
    return TrainState(registry.build(config, nnx.Rngs(seed)), tx, ema_decay)

  with rules_lib.use_mesh(mesh, rules):
    graphdef, abstract = nnx.split(nnx.eval_shape(lambda: make_state(config.train.seed)))
  state_shardings = rules_lib.state_shardings(abstract, mesh, rules)
  axes = batch_axes(mesh, config.mesh.batch_axes)
  splits = math.prod(mesh.shape[a] for a in axes)
  batch_size = (config.get("data") or {}).get("batch_size")
  if batch_size and batch_size % splits:  # Before compiling: one line, not IndivisibleError.
    raise ConfigError(
      f"config.data.batch_size={batch_size} does not split over the mesh's "
      f"batch axes {dict((a, mesh.shape[a]) for a in axes)} "
      f"({splits} ways); use a multiple of {splits}"
    )
  batch_sharding = NamedSharding(mesh, PartitionSpec(axes or None))

  def init():
    return nnx.split(make_state(config.train.seed))[1]

  def train_step(state, batch, step):
    ts = nnx.merge(graphdef, state)
    rng = jax.random.fold_in(jax.random.key(config.train.seed), step)

    def loss_fn(model):
      return task.loss(config, model, batch, rng)

    (loss, parts), grads = nnx.value_and_grad(loss_fn, has_aux=True)(ts.model)
    ts.opt.update(ts.model, grads)
    if ema_decay > 0:
      ts.update_ema()
    metrics = dict(
      parts,
      loss=loss,
      grad_norm=optax.tree.norm(grads),
      lr=schedule(step // config.train.grad_accum_steps),
    )
    return nnx.state(ts), metrics

  init_jit = jax.jit(init, out_shardings=state_shardings)
  step_jit = jax.jit(
    train_step,
    in_shardings=(state_shardings, batch_sharding, None),
    out_shardings=(state_shardings, None),
    donate_argnums=(0,),
  )

  def in_mesh(fn):  # Tracing needs the mesh and rules in context (constraints, creation).
    def call(*args):
      with rules_lib.use_mesh(mesh, rules):
        return fn(*args)

    return call

  abstract_state = abstract_like(in_mesh(lambda: jax.eval_shape(init_jit))(), state_shardings)
  return Setup(
    mesh,
    graphdef,
    state_shardings,
    batch_sharding,
    abstract_state,
    in_mesh(init_jit),
    in_mesh(step_jit),
    step_jit,
    schedule,
  )


@contextlib.contextmanager
def _sigterm_flag():
  """Yields a dict whose 'stop' turns True on SIGTERM (preemption notice)."""
  flag = {"stop": False}
  old = signal.getsignal(signal.SIGTERM)

  def handler(signum, frame):
    flag["stop"] = True

  try:
    signal.signal(signal.SIGTERM, handler)
  except ValueError:  # Not the main thread: no signal handling.
    pass
  try:
    yield flag
  finally:
    with contextlib.suppress(ValueError):
      signal.signal(signal.SIGTERM, old)


def _on_host(metrics: dict) -> dict[str, float]:
  """A step's metrics (device scalars) as floats; waits for the step."""
  return {k: float(v) for k, v in jax.device_get(metrics).items()}


def _stop_message(step: int, metrics: dict, ckpts: Checkpoints) -> str:
  """One line: the step, its loss parts and the checkpoint kept."""
  parts = ", ".join(f"{k}={v:.6g}" for k, v in sorted(metrics.items()))
  kept = ckpts.latest_step()
  where = (
    f"the last good checkpoint is step {kept} ({ckpts.directory}/{kept})"
    if kept is not None
    else "no checkpoint was kept"
  )
  return f"step {step}: non-finite loss ({parts}) of the state after step {step - 1}; {where}"


def train(
  config: ml_collections.ConfigDict,
  workdir: str,
  *,
  progress: bool = True,
  max_steps: int | None = None,
  mesh: jax.sharding.Mesh | None = None,
) -> dict:
  """Trains `config.task` in `workdir` (resuming from its latest checkpoint).

  Args:
    max_steps: stop after this global step (for tests / preemption drills); the run's
      length (schedule) is still config.train.steps.
    mesh: overrides config.mesh.shape (e.g. a mesh over a subset of the devices).
  Returns:
    The last logged metrics (floats) plus `step`.
  """
  run_config.check_train(config)  # Every section, before anything starts.
  distributed.initialize(config.distributed)
  task = tasks.get(config.task)
  s = setup(config, task, mesh)
  t = config.train
  data = GlobalBatches(
    task.dataset(config, jax.process_index(), jax.process_count()), s.mesh, config.mesh.batch_axes
  )
  ckpts = Checkpoints(workdir, t)
  start = ckpts.latest_step()
  if start is None:
    state, start = s.init(), 0
    if (config.get("init") or {}).get("checkpoint"):  # Start from converted / other weights.
      # e.g. the DiT's patch embedding widened for keyframe channels (task_dit).
      adapt = task.init_adapters(config) if hasattr(task, "init_adapters") else {}
      state, fresh = restore_into(config.init.checkpoint, state, s.abstract, adapt=adapt)
      if hasattr(task, "adapt_init"):  # e.g. the VAE's image -> video inflation.
        ts = nnx.merge(s.graphdef, state)
        task.adapt_init(config, ts.model)
        state = jax.device_put(nnx.state(ts), s.state_shardings)
      if t.get("ema_decay", 0.0) > 0:  # The average starts from the params the run starts from.
        ts = nnx.merge(s.graphdef, state)
        ts.reset_ema()
        state = jax.device_put(nnx.state(ts), s.state_shardings)
      if jax.process_index() == 0 and progress:
        print(
          f"init: params from {config.init.checkpoint}"
          + (f"; {len(fresh)} keep their initialisation: {fresh[:6]}" if fresh else "")
          + (f"; adapted where shapes differ: {sorted(adapt)}" if adapt else "")
        )
  else:
    state = ckpts.restore(start, s.abstract, data)
  writer = MetricsWriter(workdir, resume_step=start)
  throughput, goodput = Throughput(config, s.mesh), Goodput()
  ecfg = eval_config(config)
  evaluator = None
  if ecfg is not None and (ecfg.every or ecfg.video_every):
    evaluator = Evaluator(config, task, s, workdir, ecfg)
  evaluated = -1

  def evaluate(step: int) -> None:
    """config.eval's scalars / media when due after `step` (or at the end)."""
    nonlocal evaluated
    if evaluator is None or evaluated == step:
      return
    scalars, media = evaluator.due(step, end)
    if scalars or media:
      evaluator.run(state, step, writer, media, goodput.timed)
      evaluated = step

  end = min(t.steps, max_steps or t.steps)
  last: dict = {"step": start}
  profile, tracing = tuple(t.profile_steps), False
  bar = tqdm.tqdm(
    total=end,
    initial=start,
    desc=f"train {config.task}",
    unit="step",
    disable=not progress or jax.process_index() != 0,
  )
  log_step, log_time = start, time.perf_counter()

  # The step of the last saved state whose own loss has not been computed yet: the next
  # step's loss (of the state before its update) confirms or discards it (Checkpoints).
  awaiting: int | None = None

  def check(step: int, host: dict) -> None:
    """Step `step`'s loss is that of the state after step - 1: confirms its checkpoint,
    or deletes it and stops when the loss is not finite."""
    nonlocal awaiting
    finite = math.isfinite(host["loss"])
    if awaiting == step - 1:
      if finite:
        ckpts.confirm(awaiting)
      else:
        ckpts.discard(awaiting)
      awaiting = None
    if not finite:
      raise NonFiniteLoss(_stop_message(step, host, ckpts))

  def read(step: int, metrics: dict, examples: int) -> None:
    """Host-side handling of a finished step: NaN check, then logging on log steps."""
    nonlocal last, log_step, log_time
    with goodput.timed("step"):  # Waits for the step (dispatch is asynchronous).
      host = _on_host(metrics)
    check(step, host)
    if step % t.log_every and step != end:
      return
    dt, n = time.perf_counter() - log_time, step - log_step
    log_step, log_time = step, time.perf_counter()
    host.update(step_time=dt / n, examples_per_s=n * examples / dt)
    if "num_tokens" in host:
      host["tokens_per_s"] = host.pop("num_tokens") * n / dt
    shares = goodput.fractions()
    # MFU of the steps themselves; waiting for data, evaluation and saving are goodput's.
    busy = 1.0 - sum(v for k, v in shares.items() if k != "time_frac_step")
    host.update(throughput.scalars(dt * max(busy, 1e-6) / n), **shares)
    writer.write(step, host)
    last = dict(host, step=step)
    bar.set_postfix(loss=f"{host['loss']:.4f}")

  with _sigterm_flag() as flag:
    try:
      step, pending = start, None
      while step < end and not flag["stop"]:
        if profile and step == profile[0]:  # Into TensorBoard's profile plugin, + Perfetto.
          jax.profiler.start_trace(os.path.join(workdir, "tensorboard"), create_perfetto_trace=True)
          tracing = True
        with goodput.timed("data"):
          batch = next(data)
        with goodput.timed("step"):
          state, metrics = s.step(state, batch, jnp.asarray(step, jnp.int32))
        step += 1
        if pending is not None:  # Read the previous step while this one runs.
          read(*pending)
        pending = (step, metrics, jax.tree.leaves(batch)[0].shape[0])
        bar.update(1)
        if evaluator is not None and any(evaluator.due(step, end)):
          if pending is not None:  # The step's own metrics first (its log row).
            read(*pending)
            pending = None
          evaluate(step)
        if tracing and step >= profile[-1]:
          jax.block_until_ready(metrics)  # The trace holds the last step's device work.
          jax.profiler.stop_trace()
          tracing = False
        if step % t.checkpoint_every == 0 and step < end:
          if pending is not None:  # Resolves the previous save before this one.
            read(*pending)
            pending = None
          with goodput.timed("checkpoint"):
            ckpts.save(step, state, data, config)  # Returns once the arrays are on the host.
          awaiting = step
      if pending is not None:
        read(*pending)
      evaluate(step)  # At the end of the run (due when step == end).
      if ckpts.latest_step() != step:
        ckpts.save(step, state, data, config, force=True)  # The end, or SIGTERM.
        awaiting = step
      if awaiting == step:  # One more step (after the iterator's snapshot) checks it.
        try:
          batch = next(data)
        except StopIteration:  # The data ran out: the save stays unconfirmed.
          pass
        else:
          _, metrics = s.step(state, batch, jnp.asarray(step, jnp.int32))
          check(step + 1, _on_host(metrics))
    finally:
      if tracing:  # The run ended (or stopped) inside the profiled steps.
        jax.profiler.stop_trace()
      bar.close()
      ckpts.close()
      writer.close()
  return dict(last, stopped_by_signal=flag["stop"])


def step_memory(s: Setup, batch: Any) -> dict[str, int]:
  """Per-device bytes of the compiled train step, from XLA's memory analysis.

  Args:
    batch: a batch or its ShapeDtypeStructs (global shapes).
  Returns:
    `state` (params + optimizer state arguments), `batch`, `temp` (activations and other
    temporaries), `output` bytes, all per device, and `state_replicated` (the whole state).
  """
  batch = jax.tree.map(
    lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s.batch_sharding), batch
  )
  with jax.set_mesh(s.mesh):
    compiled = s.step_jit.lower(s.abstract, batch, jax.ShapeDtypeStruct((), jnp.int32)).compile()
  ma = compiled.memory_analysis()
  batch_bytes = sum(
    math.prod(s.batch_sharding.shard_shape(x.shape)) * x.dtype.itemsize
    for x in jax.tree.leaves(batch)
  )
  return {
    "state": ma.argument_size_in_bytes - batch_bytes,
    "batch": batch_bytes,
    "temp": ma.temp_size_in_bytes,
    "output": ma.output_size_in_bytes,
    "state_replicated": sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(s.abstract)),
  }
