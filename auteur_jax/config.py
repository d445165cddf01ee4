"""Load an ml_collections config file and apply `--config.key=value` overrides.

A config file is a Python file with `get_config(arg: str | None = None)` returning a
`ml_collections.ConfigDict`. `path.py:arg` passes `arg` (big_vision style). A config is
named by its path or by its name among the configs the package ships (`toy/dit` is
auteur_jax/toy/dit, `paper/dit_wan_14b:arg` passes arg). Overrides
are parsed against the type of the value they replace, so `--config.train.steps=10`
gives an int; unknown keys and values of the wrong type fail with the key named.
"""

from __future__ import annotations

import ast
import importlib.util
import os
from collections.abc import Sequence
from typing import Any

import ml_collections

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")


class ConfigError(ValueError):
  """A config file or an override is invalid; the message names the file or key."""


def packaged_configs() -> list[str]:
  """Names of the shipped configs ("toy/dit", "paper/director_7b", ...)."""
  names = []
  for folder, _, files in os.walk(CONFIG_DIR):
    rel = os.path.relpath(folder, CONFIG_DIR)
    names += [
      os.path.join(rel, f[:-3]) for f in files if f.endswith(".py") and not f.startswith("_")
    ]
  return sorted(names)


def resolve_config(name: str) -> str:
  """The file of a config path or packaged name (without its `:arg`)."""
  if os.path.isfile(name):
    return name
  rel = name.removeprefix("configs/")
  packaged = os.path.join(CONFIG_DIR, rel if rel.endswith(".py") else f"{rel}.py")
  if os.path.isfile(packaged):
    return packaged
  raise ConfigError(
    f"config file not found: {name} (a path, or a packaged config: {', '.join(packaged_configs())})"
  )


def load_module_config(path: str) -> ml_collections.ConfigDict:
  """Runs `get_config(arg)` of the config `path` (a path or packaged name; optionally
  `path:arg`)."""
  arg = None
  if ":" in os.path.basename(path):
    path, arg = path.rsplit(":", 1)
  path = resolve_config(path)
  spec = importlib.util.spec_from_file_location(f"_auteur_config_{abs(hash(path))}", path)
  if spec is None or spec.loader is None:
    raise ConfigError(f"{path}: not a Python file that can be loaded")
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except Exception as e:  # A broken config file: say which one.
    raise ConfigError(f"{path}: failed to import: {type(e).__name__}: {e}") from e
  if not hasattr(module, "get_config"):
    raise ConfigError(f"{path}: defines no get_config(arg=None)")
  config = module.get_config(arg) if arg is not None else module.get_config()
  if not isinstance(config, ml_collections.ConfigDict):
    raise ConfigError(
      f"{path}: get_config returned {type(config).__name__}, expected ml_collections.ConfigDict"
    )
  return config


def parse_value(key: str, text: str, current: Any) -> Any:
  """Parses `text` into the type of `current` (the value being overridden)."""
  if isinstance(current, bool):
    low = text.lower()
    if low in ("true", "1", "yes"):
      return True
    if low in ("false", "0", "no"):
      return False
    raise ConfigError(f"--config.{key}: expected a bool (true/false), got {text!r}")
  if isinstance(current, str):
    return text
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    if current is None:
      return text  # A None field takes a plain string when the text is no literal.
    raise ConfigError(f"--config.{key}: expected {type(current).__name__}, got {text!r}") from None
  if current is None:
    return value
  if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
    return float(value)
  if isinstance(current, (tuple, list)) and isinstance(value, (tuple, list)):
    return type(current)(value)
  if type(value) is not type(current):
    raise ConfigError(
      f"--config.{key}: expected {type(current).__name__}, got {text!r} ({type(value).__name__})"
    )
  return value


def apply_overrides(config: ml_collections.ConfigDict, overrides: Sequence[str]) -> None:
  """Applies `--config.a.b=value` (or `a.b=value`) strings to `config` in place."""
  for item in overrides:
    body = item[len("--config.") :] if item.startswith("--config.") else item
    if "=" not in body:
      raise ConfigError(f"override {item!r}: expected --config.key=value")
    key, text = body.split("=", 1)
    node = config
    parts = key.split(".")
    for i, part in enumerate(parts):
      if not isinstance(node, ml_collections.ConfigDict) or part not in node:
        known = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
        where = ".".join(parts[:i]) or "config"
        raise ConfigError(f"--config.{key}: unknown key {part!r} in {where}; known: {known}")
      if i < len(parts) - 1:
        node = node[part]
    current = node[parts[-1]]
    if isinstance(current, ml_collections.ConfigDict):
      raise ConfigError(f"--config.{key}: is a section ({sorted(current.keys())}), not a value")
    try:
      node[parts[-1]] = parse_value(key, text, current)
    except TypeError as e:  # ConfigDict's own type check.
      raise ConfigError(f"--config.{key}: {e}") from None


def load_config(path: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
  """Loads a config file, applies overrides and locks it (no new keys afterwards)."""
  config = load_module_config(path)
  apply_overrides(config, overrides)
  config.lock()
  return config
