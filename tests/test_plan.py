"""auteur plan: analytic costs against XLA, and TPU / GPU dry runs of a tiny director."""

import importlib.util
import json
import re

import jax
import jax.numpy as jnp
import pytest

from auteur_jax import cli
from auteur_jax.config import load_config
from auteur_jax.kernels import train_attention
from auteur_jax.parallel import rules
from auteur_jax.parallel.mesh import make_mesh, parse_mesh
from auteur_jax.plan import dry_run, report, topology
from auteur_jax.train import batch_specs as batch_lib
from auteur_jax.train import costs, tasks, trainer

HAS_LIBTPU = importlib.util.find_spec("libtpu") is not None
needs_libtpu = pytest.mark.skipif(
  not HAS_LIBTPU, reason='libtpu is not installed: pip install -e ".[plan]" (CI does)'
)

# The toy director, small but dominated by its big matrices (so that nearly every
# parameter is split over fsdp x tensor), with a short story batch.
TINY = [
  "--config.model.llm.vocab_size=1024",
  "--config.model.llm.width=128",
  "--config.model.llm.mlp_dim=512",
  "--config.model.llm.num_layers=2",
  "--config.model.llm.num_heads=4",
  "--config.model.llm.num_kv_heads=4",
  "--config.model.llm.head_dim=32",
  "--config.model.num_queries=8",
  "--config.model.visual_dim=32",
  "--config.data.embedding_shape=(8, 32)",
  "--config.data.max_steps=2",
  "--config.data.max_action_tokens=8",
  "--config.data.max_caption_tokens=16",
  "--config.data.batch_size=8",
]
ONE_LAYER = {
  "toy/director": [
    "--config.model.llm.num_layers=1",
    "--config.data.batch_size=2",
    "--config.data.max_steps=2",
  ],
  "toy/dit": [
    "--config.model.num_layers=1",
    "--config.data.batch_size=2",
    "--config.model.remat=none",
    "--config.data.size=64",
    "--config.data.embedding_shape=(16, 64)",
    "--config.data.arrays=('latents', 'visual_embedding')",
  ],
}


@pytest.mark.integration
@pytest.mark.parametrize(
  "path,extra",
  [
    *((p, []) for p in sorted(ONE_LAYER)),
    (
      "toy/dit",
      [
        "--config.model.attention=blockwise",  # 48 tokens: 3 key blocks.
        "--config.model.attention_block=16",
      ],
    ),
  ],
)
def test_analytic_costs_match_the_model_and_xla(path, extra, monkeypatch):
  """Parameter formulas are exact; with one layer (XLA counts a scanned body once) the
  analytic FLOPs of a train step are XLA's count within 10 % (blockwise attention's
  backward included). XLA counts nothing inside a custom call, so the LLM's attention
  runs as einsums here, not in the CPU kernel (kernels/train_attention.py)."""
  monkeypatch.setattr(train_attention, "applies", lambda q, k, v: False)
  _check_costs_against_xla(load_config(path, ONE_LAYER[path] + extra))


def _check_costs_against_xla(config) -> None:
  """Analytic params equal the model's; analytic executed FLOPs are XLA's within 10 %."""
  c, policy = dry_run.prepare(config, {"data": 1}, None)
  mesh = make_mesh({"data": 1}, jax.devices()[:1])
  s = trainer.setup(c, tasks.get(c.task), mesh)
  b = {
    k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=s.batch_sharding)
    for k, v in batch_lib.abstract_batch(c).items()
  }
  with rules.use_mesh(mesh, rules.mesh_rules(c)):
    compiled = s.step_jit.lower(s.abstract, b, jax.ShapeDtypeStruct((), jnp.int32)).compile()
  k = costs.model_costs(c)
  assert k.params == sum(x.size for x in jax.tree.leaves(s.abstract["model"]))
  xla = compiled.cost_analysis()["flops"]
  assert k.executed_flops(policy) == pytest.approx(xla, rel=0.10)


@pytest.mark.integration
def test_frames_need_not_be_square():
  """config.data.size = (height, width): the batch, the token count and the compiled step
  follow it (toy DiT at 64 x 128); Wan 14B at 720p is 75,600 tokens per clip."""
  config = load_config("toy/dit", ONE_LAYER["toy/dit"])
  with config.unlocked():
    del config.data.size
    config.data.size = (64, 128)
  batch = batch_lib.abstract_batch(config)
  assert batch["frames"].shape[2:4] == (64, 128) and batch["latents"].shape[2:4] == (8, 16)
  _check_costs_against_xla(config)
  wan = load_config("paper/dit_wan_14b:720p")
  assert batch_lib.abstract_batch(wan)["latents"].shape[1:4] == (21, 90, 160)
  k = costs.model_costs(wan)
  assert k.tokens == wan.data.batch_size * 75_600


def _plan(tmp_path, topo: str, mesh: str, *extra: str) -> dict:
  out = tmp_path / "plan.json"
  cli.main(
    [
      "plan",
      "--config",
      "toy/director",
      "--topology",
      topo,
      "--mesh",
      mesh,
      "--json",
      str(out),
      *extra,
      *TINY,
    ]
  )
  (plan,) = json.loads(out.read_text())
  return plan


@needs_libtpu
@pytest.mark.integration
@pytest.mark.parametrize(
  "topo,extra,mesh,dcn",
  [
    ("v5p:2x2x1", (), "data=1,fsdp=2,tensor=2", []),
    ("v5p:2x2x1", ("--num-slices", "2"), "data=2,fsdp=2,tensor=2", ["data"]),
  ],
)
def test_tpu_plan_param_bytes_are_the_analytic_count_over_the_shards(
  tmp_path, capsys, topo, extra, mesh, dcn
):
  exe = tmp_path / "step.exe"
  plan = _plan(tmp_path, topo, mesh, *extra, "--save-executable", str(exe))
  assert exe.stat().st_size > 0 and "all-gather" in (tmp_path / "step.exe.hlo.txt").read_text()
  config = load_config("toy/director", TINY)
  analytic = costs.model_costs(config).params
  shards = plan["mesh"]["fsdp"] * plan["mesh"]["tensor"]
  assert plan["analytic_params"] == plan["params"] == analytic
  assert plan["param_bytes"] == pytest.approx(analytic * 4 / shards, rel=0.05)
  assert plan["opt_bytes"] == pytest.approx(2 * analytic * 4 / shards, rel=0.05)  # Adam mu, nu.
  assert plan["dcn_axes"] == dcn and plan["devices"] == 4 * (2 if extra else 1)
  assert plan["fits"] and plan["total_bytes"] > plan["param_bytes"] + plan["opt_bytes"]
  assert plan["temp_bytes"] > 0 and plan["compiler_flops"] > 0 and 0 < plan["mfu"] <= 1
  text = capsys.readouterr().out
  assert "fits" in text and "MFU at peak" in text


@needs_libtpu
def test_meshes_must_fit_the_topology():
  topo = topology.get_topology("v5p:2x2x1")
  assert topo.chip.name == "v5p" and topo.size == 4
  with pytest.raises(ValueError, match="does not multiply"):
    topology.plan_mesh({"fsdp": 3}, topo)
  mesh = topology.plan_mesh({"fsdp": -1, "tensor": 2}, topo)
  assert dict(mesh.shape) == {"fsdp": 2, "tensor": 2} and not topology.slow_axes(mesh)
  two = topology.get_topology("v5p:2x2x1", num_slices=2)
  mesh = topology.plan_mesh({"data": 2, "fsdp": 2, "tensor": 2}, two)
  assert topology.slow_axes(mesh) == {"data"}  # The slices join over the data axis.
  with pytest.raises(ValueError, match="unknown axes"):
    parse_mesh("data=1,pipeline=4")


@pytest.mark.integration
def test_gpu_plan_compiles_or_says_what_is_missing(tmp_path):
  """With the CUDA plugin: H100 devices from the shipped target config; without: a clear
  error naming the install."""
  if importlib.util.find_spec("jax_cuda12_plugin") is None:
    with pytest.raises(topology.PlanUnavailable, match="CUDA PJRT plugin"):
      topology.get_topology("h100:1x1x4")
    return
  topo = topology.get_topology("h100:1x1x4")
  assert topo.size == 4 and topo.chip.name == "h100"
  plan = _plan(tmp_path, "h100:1x1x4", "data=1,fsdp=2,tensor=2")
  analytic = costs.model_costs(load_config("toy/director", TINY)).params
  assert plan["param_bytes"] == pytest.approx(analytic * 4 / 4, rel=0.05)
  assert plan["fits"] and plan["temp_bytes"] > 0


def test_sweep_ranks_fitting_plans_by_step_time(monkeypatch):
  def fake(config, topo, mesh, remat):
    step = {"full": 3.0, "none": 1.0, "dots": 2.0}[remat]
    fits = not (remat == "none" and mesh["tensor"] == 1)
    return dry_run.Plan(
      topology="v5p:2x2x1",
      chip="v5p",
      devices=4,
      mesh=dict(mesh),
      dcn_axes=[],
      remat=remat,
      params=10,
      analytic_params=10,
      param_bytes=40,
      opt_bytes=80,
      batch_bytes=1,
      temp_bytes=5,
      total_bytes=200,
      hbm_bytes=1000 if fits else 100,
      fits=fits,
      model_flops=1.0,
      executed_flops=1.0,
      compiler_flops=None,
      compute_s=step,
      comm_s={},
      step_s=step,
      mfu=0.5,
      compile_s=0.0,
    )

  def fake_or_fail(config, topo, mesh, remat):
    if mesh["tensor"] == 4:
      raise ValueError("mesh does not fit")
    return fake(config, topo, mesh, remat)

  monkeypatch.setattr(dry_run, "dry_run", fake_or_fail)
  config = load_config("toy/director")
  meshes = [{"fsdp": 4, "tensor": 1}, {"fsdp": 2, "tensor": 2}, {"fsdp": 1, "tensor": 4}]
  out = dry_run.sweep(config, None, meshes, ["full", "none", "dots"], progress=None)
  plans = [r for r in out if isinstance(r, dry_run.Plan)]
  assert [(p.mesh["tensor"], p.remat) for p in plans[:3]] == [(2, "none"), (1, "dots"), (2, "dots")]
  assert not plans[-1].fits and plans[-1].remat == "none"
  assert len(out) - len(plans) == 3  # The tensor=4 mesh failed for every policy.
  table = report.sweep_table(out).splitlines()
  assert table[1].split()[:3] == ["1", "fsdp=2,tensor=2", "none"] and "failed" in table[-1]


@needs_libtpu
@pytest.mark.integration
def test_a_splash_attention_plan_compiles_for_v5p(tmp_path):
  """toy/dit with attention 'splash' (the Pallas TPU kernel, not its interpret mode) lowers
  and compiles for a v5p slice; its HLO holds the kernel's custom call."""
  out = tmp_path / "plan.json"
  cli.main(
    [
      "plan",
      "--config",
      "toy/dit",
      "--topology",
      "v5p:2x2x1",
      "--mesh",
      "data=1,fsdp=2,tensor=2",
      "--json",
      str(out),
      "--save-executable",
      str(tmp_path / "step.exe"),
      *ONE_LAYER["toy/dit"],
      "--config.model.attention=splash",
    ]
  )
  (plan,) = json.loads(out.read_text())
  assert plan["fits"] and plan["compiler_flops"] > 0
  assert "tpu_custom_call" in (tmp_path / "step.exe.hlo.txt").read_text()


@pytest.mark.integration
def test_a_cudnn_plan_compiles_or_is_a_row_saying_why(tmp_path, capsys):
  """cuDNN attention in a GPU sweep: compiled where cuDNN is installed, else a failed row
  naming cuDNN (the sweep goes on)."""
  if importlib.util.find_spec("jax_cuda12_plugin") is None:
    pytest.skip("the CUDA PJRT plugin (the plan extra) is not installed")
  out = tmp_path / "plan.json"
  cli.main(
    [
      "plan", "--config", "toy/dit", "--topology", "h100:1x1x4", "--sweep",
      "--meshes", "data=1,fsdp=4,tensor=1", "--remats", "none",
      "--attentions", "cudnn,full", "--json", str(out), *ONE_LAYER["toy/dit"][1:],
      "--config.model.dtype=bfloat16", "--config.data.batch_size=4",
    ]
  )  # fmt: skip
  done = {p["attention"] for p in json.loads(out.read_text())}
  text = capsys.readouterr().out
  assert "full/xla" in done
  assert "cudnn/xla" in done or re.search(r"cudnn/xla.*cuDNN", text)


def test_context_traffic_per_strategy():
  """Per device and layer pass: xla moves 2 (c - 1) key-value blocks, ring as much
  forward and 4 (c - 1) + 2 backward (the blocks with their gradient sums), all_to_all
  4 (c - 1) / c blocks (q, k, v, out), so Ulysses sends less from c = 2 on."""
  config = load_config("toy/dit", ONE_LAYER["toy/dit"][1:])
  k = costs.model_costs(config)
  sizes = {"data": 1, "fsdp": 1, "tensor": 1, "context": 4}
  ring = costs.collective_bytes(k, sizes, 4, 4, "none", "ring")["context"]
  a2a = costs.collective_bytes(k, sizes, 4, 4, "none", "all_to_all")["context"]
  block = k.tokens / 4 * k.width * 4
  xla = costs.collective_bytes(k, sizes, 4, 4, "none", "xla")["context"]
  assert xla == pytest.approx(k.layers * 2 * 2 * 3 * block)
  assert ring == pytest.approx(k.layers * (2 * 3 + 4 * 3 + 2) * block)
  assert a2a == pytest.approx(k.layers * 2 * 4 * 3 / 4 * block)
  assert "context" not in costs.collective_bytes(k, {"data": 1}, 4, 4, "none")


@needs_libtpu
@pytest.mark.integration
def test_a_sweep_over_attention_strategies(tmp_path, capsys):
  """Each strategy is a row; all_to_all with heads that do not divide is a failed row."""
  out = tmp_path / "plan.json"
  cli.main(
    [
      "plan", "--config", "toy/dit", "--topology", "v5p:2x2x1", "--sweep",
      "--meshes", "data=1,fsdp=1,tensor=1,context=4", "--remats", "none",
      "--attentions", "full", "--context-parallel", "xla,ring,all_to_all",
      "--json", str(out), *ONE_LAYER["toy/dit"][1:],
    ]
  )  # fmt: skip
  plans = json.loads(out.read_text())
  assert sorted(p["attention"] for p in plans) == ["full/all_to_all", "full/ring", "full/xla"]
  for p in plans:
    assert p["comm_s"]["context"] > 0
  text = capsys.readouterr().out
  assert "full/ring" in text
