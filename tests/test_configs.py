"""Every shipped config: loads with each argument its docstring names, passes the strict
section checks, and builds its models abstractly (nnx.eval_shape: the paper configs are
7B / 14B models). Plus the errors of config_sections.from_section and check_arg."""

import ast
import dataclasses
import math
import os
import re

import jax
import ml_collections
import pytest
from flax import nnx

from auteur_jax.config import CONFIG_DIR, ConfigError, load_config, load_module_config
from auteur_jax.config_sections import check_arg, from_section
from auteur_jax.models import registry
from auteur_jax.models.director import DirectorConfig
from auteur_jax.models.dit import DiTConfig
from auteur_jax.models.vae import VAEConfig
from auteur_jax.models.vision import VisionConfig
from auteur_jax.train import run_config
from auteur_jax.train.optim import TrainConfig


def _config_names() -> list[str]:
  return sorted(
    os.path.relpath(os.path.join(d, f), CONFIG_DIR)[:-3]
    for d, _, files in os.walk(CONFIG_DIR)
    for f in files
    if f.endswith(".py") and not f.startswith("_")
  )


def docstring_args(name: str) -> list[str]:
  """The arguments the config's docstring names: "`toy/dit:text_only`" or "`:siglip`"."""
  with open(os.path.join(CONFIG_DIR, f"{name}.py")) as f:
    doc = ast.get_docstring(ast.parse(f.read())) or ""
  found = [
    m["arg"]
    for m in re.finditer(r"`(?P<name>[\w/]*):(?P<arg>\w+)`", doc)
    if m["name"] in ("", name)
  ]
  return sorted(set(found))


CASES = [(name, arg) for name in _config_names() for arg in [None, *docstring_args(name)]]


def test_docstring_arguments_are_found():
  assert ("toy/dit", "text_only") in CASES and ("toy/data", "stories") in CASES
  assert ("paper/clip_vit_l14_336", "siglip") in CASES
  assert {("toy/director", a) for a in ("caption_visual", "action_visual")} <= set(CASES)
  assert len(_config_names()) == 13


def _models(config: ml_collections.ConfigDict) -> dict[str, ml_collections.ConfigDict]:
  """The model configs of a config: itself, or the three of a sampling config."""
  if config.get("task") == "sample":
    return {name: config[name] for name in ("director", "dit", "vae")}
  return {config.task: config} if config.get("task") else {}


def _abstract(config: ml_collections.ConfigDict) -> nnx.Module:
  with nnx.use_eager_sharding(False):
    return nnx.eval_shape(lambda: registry.build(config, nnx.Rngs(0)))


@pytest.mark.parametrize("name,arg", CASES, ids=[f"{n}:{a}" if a else n for n, a in CASES])
def test_config_loads_checks_and_builds(name, arg):
  config = load_config(f"{name}:{arg}" if arg else name)
  run_config.check_config(config)
  for key, model_config in _models(config).items():
    model = _abstract(model_config)
    params = jax.tree.leaves(nnx.state(model, nnx.Param))
    assert params and sum(math.prod(p.shape) for p in params) > 0, key


def test_paper_models_have_the_sizes_their_docstrings_give():
  def count(name):
    model = _abstract(load_config(name))
    return sum(math.prod(p.shape) for p in jax.tree.leaves(nnx.state(model, nnx.Param)))

  assert count("paper/umt5_xxl") == pytest.approx(5.7e9, rel=0.01)
  assert count("paper/vae_wan") == pytest.approx(127e6, rel=0.01)


def test_unknown_config_argument_names_file_and_allowed():
  with pytest.raises(
    ConfigError,
    match=r"toy/dit.py: unknown argument 'text_onyl'; "
    r"allowed: \['text_only', 'keyframe', 'both'\] or none",
  ):
    load_config("toy/dit:text_onyl")
  with pytest.raises(ConfigError, match=r"vae.py: unknown argument 'big'; allowed: none"):
    load_config("toy/vae:big")
  with pytest.raises(ConfigError, match="director_7b.py: unknown argument 'visual'"):
    load_config("paper/director_7b:visual")
  assert check_arg("x.py", None, ("a",)) is None and check_arg("x.py", "a", ("a",)) == "a"


def test_unknown_key_is_named_with_its_path():
  with pytest.raises(
    ConfigError,
    match=r"config.model.vision: unknown key 'widht'; "
    r"allowed: \['family', 'image_size'",
  ):
    VisionConfig.from_dict({"widht": 64})
  with pytest.raises(ConfigError, match=r"config.model: unknown keys \['a', 'b'\]"):
    DiTConfig.from_dict({"b": 1, "a": 2})
  config = load_module_config("toy/dit")
  config.init.diffusers = "/ckpt/wan"  # A key no code reads.
  with pytest.raises(ConfigError, match="config.init: unknown key 'diffusers'"):
    run_config.check_config(config)
  config = load_module_config("toy/sample")
  config.director.sample.loop = "host"
  with pytest.raises(ConfigError, match="config.director.sample: unknown key 'loop'"):
    run_config.check_config(config)
  config = load_module_config("toy/data")
  config.mesh = ml_collections.ConfigDict(dict(batch_axes=("data",)))
  with pytest.raises(ConfigError, match="config: unknown key 'mesh'; allowed: \\['data'\\]"):
    run_config.check_config(config)


def test_wrong_types_and_missing_keys():
  with pytest.raises(ConfigError, match=r"config.model.num_heads: expected int, got str '4'"):
    DiTConfig.from_dict({"num_heads": "4"})
  with pytest.raises(ConfigError, match="config.model.cross_attn_norm: expected bool, got int"):
    DiTConfig.from_dict({"cross_attn_norm": 1})
  with pytest.raises(ConfigError, match=r"config.model.dim_mult\[1\]: expected int"):
    VAEConfig.from_dict({"dim_mult": [1, 2.5, 4, 4]})
  with pytest.raises(ConfigError, match="config.train: expected a section"):
    from_section(TrainConfig, 3, "config.train")
  with pytest.raises(ConfigError, match=r"config.train.schedule must be 'cosine' or 'constant'"):
    from_section(TrainConfig, {"schedule": "linear"}, "config.train")
  with pytest.raises(ConfigError, match="config.train.lr must be >= 0"):
    from_section(TrainConfig, {"lr": -1.0}, "config.train")
  # Conversions: lists to tuples, ints to floats.
  cfg = DiTConfig.from_dict({"patch_size": [1, 2, 2], "eps": 1})
  assert cfg.patch_size == (1, 2, 2) and isinstance(cfg.eps, float)
  assert issubclass(ConfigError, ValueError)
  config = load_module_config("toy/vae")
  with pytest.raises(ConfigError, match=r"`auteur train` reads \['loss'\]"):
    run_config.check_train(
      ml_collections.ConfigDict({k: v for k, v in config.items() if k != "loss"})
    )
  run_config.check_train(config)
  with pytest.raises(ConfigError, match=r"reads \['data', 'train', 'distributed', 'loss'\]"):
    run_config.check_train(load_config("paper/vae_wan"))  # Only encoded with.
  run_config.check_encode(load_config("paper/vae_wan"))
  with pytest.raises(ConfigError, match="`auteur encode` runs 'vae' or 'clip'"):
    run_config.check_encode(load_config("toy/dit"))


def test_nested_sections():
  toy = load_config("toy/director").model.to_dict()
  scaling = dict(factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position=64)
  cfg = DirectorConfig.from_config({**toy, "llm": {**toy["llm"], "rope_scaling": scaling}})
  assert cfg.llm.rope_scaling.factor == 8.0 and dataclasses.is_dataclass(cfg.llm.rope_scaling)
  bad = {**toy, "llm": {**toy["llm"], "rope_scaling": {**scaling, "factor": "8"}}}
  with pytest.raises(
    ConfigError,
    match=r"config.model.llm.rope_scaling.factor: expected "
    r"float, got str '8'",
  ):
    DirectorConfig.from_config(bad)
  with pytest.raises(ConfigError, match=r"config.model.markup: missing key 'img'"):
    DirectorConfig.from_config(
      {**toy, "markup": {k: v for k, v in toy["markup"].items() if k != "img"}}
    )
  config = load_module_config("toy/dit")
  config.train.flow.drop_text = 1.5
  with pytest.raises(ConfigError, match=r"config.train.flow.drop_text must be in \[0, 1\]"):
    run_config.check_config(config)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_numbers_are_refused(value):
  with pytest.raises(ConfigError, match=r"config.train.lr: must be a finite number"):
    from_section(TrainConfig, {"lr": value}, "config.train")
  with pytest.raises(ConfigError, match=r"config.model.latents_mean\[3\]: must be a finite"):
    VAEConfig.from_dict(
      {"z_dim": 4, "latents_mean": [0.0, 0.0, 0.0, value], "latents_std": [1.0] * 4}
    )
  config = load_module_config("toy/dit")
  config.sample.shift = value  # The command line cannot say nan; a config file can.
  with pytest.raises(ConfigError, match="config.sample.shift: must be a finite number"):
    run_config.check_config(config)
