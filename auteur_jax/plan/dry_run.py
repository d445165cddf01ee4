"""Compile the trainer's real train step for a target topology and measure it.

`dry_run` builds the train state abstractly (trainer.setup: the same shardings and the
same jitted step as `auteur train`) on the topology's compile-only devices, lowers the
step with the abstract batch and compiles it. Per device it reads parameter and
optimizer bytes from the compiled input shardings, activations / temporaries from XLA's
memory analysis, and puts the total against the chip's HBM. A TPU compile that runs out
of HBM fails inside XLA; its message still says how much the step needed.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import re
import tempfile
import time
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections

from auteur_jax.config import ConfigError
from auteur_jax.parallel import rules as rules_lib
from auteur_jax.plan.topology import Topology, plan_mesh, resolve_shape, slow_axes
from auteur_jax.train import costs as costs_lib
from auteur_jax.train.batch_specs import abstract_batch

# XLA:TPU's out-of-HBM messages: the whole program's use, or its temporaries alone.
_OOM_TOTAL = re.compile(r"Used ([\d.]+)([KMGT]?) of [\d.]+[KMGT]? hbm")
_OOM_TEMP = re.compile(r"required for HLO temporaries \(([\d.]+)([KMGT]?)\)")
_UNIT = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


@dataclasses.dataclass
class Plan:
  """One compiled (or failed) configuration; bytes are per device, times in seconds."""

  topology: str
  chip: str
  devices: int
  mesh: dict[str, int]
  dcn_axes: list[str]
  remat: str
  params: int  # Parameters in the train state.
  analytic_params: int | None
  param_bytes: int
  opt_bytes: int
  batch_bytes: int
  temp_bytes: int | None  # Activations and other temporaries (None: compile failed).
  total_bytes: int | None
  hbm_bytes: int
  fits: bool
  model_flops: float | None  # Per step, whole batch.
  executed_flops: float | None  # Plus rematerialisation.
  compiler_flops: float | None  # XLA's count for one device (scanned bodies once).
  compute_s: float | None  # executed FLOPs at peak over all devices.
  comm_s: dict[str, float] | None  # Per mesh axis, at link bandwidth.
  step_s: float | None  # max(compute, communication): a lower bound.
  mfu: float | None  # Model FLOPs / (step_s x devices x peak).
  compile_s: float
  error: str = ""
  attention: str = ""  # The DiT's self-attention, "attention/context_parallel".

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)


def prepare(
  config: ml_collections.ConfigDict, mesh: Mapping[str, int], remat: str | None
) -> tuple[ml_collections.ConfigDict, str]:
  """A copy of `config` with the mesh and remat policy set; returns it and the policy."""
  c = copy.deepcopy(config)
  c.mesh.shape = ml_collections.ConfigDict(dict(mesh))
  where = costs_lib.remat_key(c)
  if remat is not None:
    if where is None:
      raise ConfigError(f"--remat: task {c.task!r} has no remat policy to set")
    if remat not in costs_lib.remat_policies(c):
      raise ConfigError(f"--remat {remat!r}: expected one of {costs_lib.remat_policies(c)}")
    where[0][where[1]] = remat
  reg = c.train.get("visual_reg")
  if c.task == "dit" and reg is not None and reg.noise_scale > 0 and reg.embedding_std <= 0:
    # The trainer estimates this scalar from the data at start; its value changes no
    # shape or cost of the step.
    reg.embedding_std = 1.0
  return c, (where[0][where[1]] if where else "none")


def _compiler_options(topo: Topology) -> dict:
  # With no GPU to autotune on, XLA 0.10's default Triton GEMM tilings fail on some fused
  # matmuls ("Couldn't find output tile sizes"); cuBLAS GEMMs compile for any shape.
  return {"xla_gpu_enable_triton_gemm": False} if topo.chip.platform == "cuda" else {}


def _shard_bytes(abstract, shardings) -> int:
  return sum(
    math.prod(s.shard_shape(x.shape)) * x.dtype.itemsize
    for x, s in zip(jax.tree.leaves(abstract), jax.tree.leaves(shardings))
  )


def _oom_bytes(message: str, pattern: re.Pattern) -> int | None:
  m = pattern.search(message)
  return None if m is None else int(float(m.group(1)) * _UNIT[m.group(2)])


def dry_run(
  config: ml_collections.ConfigDict,
  topo: Topology,
  mesh: Mapping[str, int] | None = None,
  remat: str | None = None,
  save_executable: str | None = None,
) -> Plan:
  """Compiles `config`'s train step for `topo` on `mesh` (default: config.mesh.shape)."""
  from auteur_jax.train import tasks, trainer

  sizes = resolve_shape(dict(mesh or config.mesh.shape), topo.size)
  c, policy = prepare(config, sizes, remat)
  jmesh = plan_mesh(sizes, topo)
  task = tasks.get(c.task)
  s = trainer.setup(c, task, jmesh)
  batch = {
    k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=s.batch_sharding)
    for k, v in abstract_batch(c).items()
  }
  state_shard = s.state_shardings
  param_bytes = _shard_bytes(s.abstract["model"], state_shard["model"])
  opt_bytes = _shard_bytes(s.abstract["opt"], state_shard["opt"])
  batch_bytes = _shard_bytes(batch, [s.batch_sharding] * len(batch))
  params = sum(x.size for x in jax.tree.leaves(s.abstract["model"]))
  costs = costs_lib.model_costs(c)
  start = time.perf_counter()
  error, message, compiled = "", "", None
  try:
    with rules_lib.use_mesh(jmesh, rules_lib.mesh_rules(c)):
      lowered = s.step_jit.lower(s.abstract, batch, jax.ShapeDtypeStruct((), jnp.int32))
    compiled = lowered.compile(compiler_options=_compiler_options(topo))
  except Exception as e:  # XLA:TPU reports running out of HBM as a compile error.
    if "Ran out of memory" not in str(e) and "RESOURCE_EXHAUSTED" not in str(e):
      raise
    message = str(e)
    error = next(
      (line for line in message.splitlines() if "hbm" in line.lower()), message.split("\n")[0]
    )[:400]
  compile_s = time.perf_counter() - start

  temp = total = compiler_flops = None
  if compiled is not None:
    # The compiled step's own input shardings (what a run would hold), not our guess.
    state_in = compiled.input_shardings[0][0]
    param_bytes = _shard_bytes(s.abstract["model"], state_in["model"])
    opt_bytes = _shard_bytes(s.abstract["opt"], state_in["opt"])
    ma = compiled.memory_analysis()
    temp = ma.temp_size_in_bytes
    total = (
      ma.argument_size_in_bytes
      + ma.output_size_in_bytes
      - ma.alias_size_in_bytes
      + temp
      + ma.generated_code_size_in_bytes
    )
    ca = compiled.cost_analysis()
    ca = ca[0] if isinstance(ca, (list, tuple)) and ca else ca
    compiler_flops = (ca or {}).get("flops")
    if save_executable:
      _save(compiled, save_executable)
  else:  # Out of HBM: what the compiler's message says the step needed.
    temp = _oom_bytes(message, _OOM_TEMP)
    total = _oom_bytes(message, _OOM_TOTAL)
    if total is None and temp is not None:
      total = temp + param_bytes + opt_bytes + batch_bytes
  fits = compiled is not None and total is not None and total <= topo.chip.hbm_bytes

  model_flops = executed = compute_s = comm = step_s = mfu = None
  if costs is not None:
    model_flops, executed = costs.model_flops, costs.executed_flops(policy)
    compute_s = executed / (topo.size * topo.chip.peak_flops)
    dcn = slow_axes(jmesh)
    act = jnp.dtype(c.model.get("dtype") or c.model.llm.dtype).itemsize
    pbytes = jax.tree.leaves(s.abstract["model"])[0].dtype.itemsize
    traffic = costs_lib.collective_bytes(
      costs, sizes, pbytes, act, policy, c.model.get("context_parallel", "xla")
    )
    comm = {
      a: traffic.get(a, 0.0) / (topo.chip.dcn_bw if a in dcn else topo.chip.ici_bw)
      for a in sizes
      if traffic.get(a, 0.0) > 0
    }
    step_s = max(compute_s, sum(comm.values()))
    mfu = model_flops / (step_s * topo.size * topo.chip.peak_flops)
  return Plan(
    topo.name + (f" x{topo.num_slices} slices" if topo.num_slices > 1 else ""),
    topo.chip.name,
    topo.size,
    sizes,
    sorted(slow_axes(jmesh)),
    policy,
    params,
    costs.params if costs else None,
    param_bytes,
    opt_bytes,
    batch_bytes,
    temp,
    total,
    topo.chip.hbm_bytes,
    fits,
    model_flops,
    executed,
    compiler_flops,
    compute_s,
    comm,
    step_s,
    mfu,
    compile_s,
    error,
  )


def _save(compiled, path: str) -> None:
  """The serialized executable at `path` and its optimized HLO at `path`.hlo.txt."""
  from jax.experimental.serialize_executable import serialize

  payload, _, _ = serialize(compiled)
  hlo = compiled.as_text() or ""
  for target, data in ((path, payload), (path + ".hlo.txt", hlo.encode())):
    folder = os.path.dirname(os.path.abspath(target))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".plan-")
    with os.fdopen(fd, "wb") as f:
      f.write(data)
    os.replace(tmp, target)


def default_meshes(config: ml_collections.ConfigDict, topo: Topology) -> list[dict[str, int]]:
  """FSDP over everything, then tensor parallelism of 2, 4, 8 where the heads divide."""
  m = config.model
  heads = (
    [m.llm.num_heads, m.llm.num_kv_heads]
    if config.task == "director"
    else ([m.num_heads] if config.task == "dit" else [])
  )
  out = []
  for t in (1, 2, 4, 8):
    if topo.size % t == 0 and all(h % t == 0 for h in heads) and (t == 1 or heads):
      out.append({"data": 1, "fsdp": topo.size // t, "tensor": t})
  return out


def sweep(
  config: ml_collections.ConfigDict,
  topo: Topology,
  meshes: Sequence[Mapping[str, int]] | None = None,
  remats: Sequence[str] | None = None,
  progress=print,
  attentions: Sequence[tuple[str, str]] = (),
) -> list[Plan | tuple]:
  """Every mesh x remat policy (x DiT attention, context_parallel pair of `attentions`);
  Plans ranked by step time among those that fit, then those that do not, then (mesh,
  remat, error) for combinations that could not build (e.g. cuDNN without its library, or
  all_to_all where the heads do not divide)."""
  meshes = list(meshes or default_meshes(config, topo))
  policies: list[str | None] = list(remats or costs_lib.remat_policies(config)) or [None]
  plans, failed = [], []
  choices: list[tuple[str, str] | None] = [*attentions] or [None]
  for attention in choices:
    c = config
    label = ""
    if attention is not None:
      c = config.copy_and_resolve_references()
      c.model.attention, c.model.context_parallel = attention
      label = "/".join(attention)
    for mesh in meshes:
      for remat in policies:
        start = time.perf_counter()
        try:
          plans.append(dataclasses.replace(dry_run(c, topo, mesh, remat), attention=label))
          note = "fits" if plans[-1].fits else "does not fit"
        except (ValueError, ConfigError, NotImplementedError) as e:
          failed.append((dict(mesh), f"{remat} {label}".strip(), str(e).split("\n")[0][:300]))
          note = "failed"
        if progress:
          progress(f"  {mesh} remat={remat} {label}: {note} ({time.perf_counter() - start:.0f} s)")
  plans.sort(
    key=lambda p: (
      not p.fits,
      p.step_s if p.step_s is not None else math.inf,
      p.total_bytes or math.inf,
    )
  )
  return plans + failed
