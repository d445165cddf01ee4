"""Config sections -> frozen dataclasses, strictly; and the check of a config file's argument.

  from_section(cls, section, path)   a ConfigDict / Mapping -> an instance of dataclass cls
  check_arg(file, arg, allowed)      the `arg` of a config file's get_config(arg)

`from_section` refuses keys that `cls` has no field for and required fields that are
missing, naming the key path (`config.model.vision: unknown key 'widht'; allowed:
[...]`). Each value is checked against its field's type hint and converted where the
config format needs it: lists to tuples, ints to floats, mappings to nested dataclasses
(LLMConfig.rope_scaling) and dicts. Floats must be finite (no nan / inf). The instance's
`validate()`, if its class has one, runs last (checks across fields); its ValueErrors
name the key relative to the section ("lr must be >= 0") or in full ("config.model.x").
Every failure is a ConfigError (a ValueError) whose message names the key.

Field types understood: bool, int, float, str, None, Any, X | Y (the first that fits),
tuple[X, ...], tuple[X, Y, ...], dict[str, X] and dataclasses.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import ml_collections

from auteur_jax.config import ConfigError

T = TypeVar("T")


def check_arg(file: str, arg: str | None, allowed: Sequence[str] = ()) -> str | None:
  """`arg` if it is None (no argument) or one of `allowed`; else a ConfigError naming the
  config file, the argument and the allowed ones."""
  if arg is None or arg in allowed:
    return arg
  choices = f"{list(allowed)} or none" if allowed else "none (this config takes no argument)"
  raise ConfigError(f"{file}: unknown argument {arg!r}; allowed: {choices}")


def from_section(cls: type[T], section: Any, path: str) -> T:
  """An instance of the dataclass `cls` from the config section at `path` (see the module
  docstring). An instance of `cls` is returned as it is."""
  if isinstance(section, cls):
    return section
  dc: Any = cls  # A dataclass (what the type checker cannot say of type[T]).
  items = _items(section, path)
  fields = [f for f in dataclasses.fields(dc) if f.init]
  names = [f.name for f in fields]
  unknown = sorted(set(items) - set(names))
  if unknown:
    raise ConfigError(f"{path}: {_keys('unknown', unknown)}; allowed: {names}")
  missing = [
    f.name
    for f in fields
    if f.name not in items
    and f.default is dataclasses.MISSING
    and f.default_factory is dataclasses.MISSING
  ]
  if missing:
    raise ConfigError(f"{path}: {_keys('missing', missing)}")
  hints = _hints(dc)
  kwargs = {k: _convert(v, hints[k], f"{path}.{k}") for k, v in items.items()}
  try:
    obj = dc(**kwargs)
    if callable(getattr(obj, "validate", None)):
      obj.validate()
  except ConfigError:
    raise
  except ValueError as e:  # The class's own checks: keep the message, name the key.
    raise ConfigError(_at(path, str(e), names)) from e
  return obj


def _convert(value: Any, tp: Any, path: str) -> Any:
  """`value` checked against the type hint `tp` (converted as the module docstring says)."""
  origin, args = typing.get_origin(tp), typing.get_args(tp)
  if tp is Any:
    return value
  if origin in (typing.Union, types.UnionType):
    if value is None and type(None) in args:
      return None
    options = [a for a in args if a is not type(None)]
    if len(options) == 1:  # X | None: X's own message (e.g. a nested section's key).
      return _convert(value, options[0], path)
    for a in options:
      try:
        return _convert(value, a, path)
      except ConfigError:
        pass
    raise _expected(tp, value, path)
  if isinstance(tp, type) and dataclasses.is_dataclass(tp):
    return from_section(tp, value, path)
  if tp is bool:
    if isinstance(value, bool):
      return value
  elif tp is int:
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
      return int(value)
  elif tp is float:
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
      if not math.isfinite(value):
        raise ConfigError(f"{path}: must be a finite number, got {value}")
      return float(value)
  elif tp is str:
    if isinstance(value, str):
      return value
  elif tp is type(None):
    if value is None:
      return None
  elif origin is tuple or tp is tuple:
    if isinstance(value, (list, tuple)):
      if not args:
        return tuple(value)
      if len(args) == 2 and args[1] is Ellipsis:
        return tuple(_convert(v, args[0], f"{path}[{i}]") for i, v in enumerate(value))
      if len(value) == len(args):
        return tuple(_convert(v, a, f"{path}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
      raise ConfigError(f"{path}: expected {len(args)} values ({_name(tp)}), got {value!r}")
  elif origin in (dict, Mapping):
    if isinstance(value, (Mapping, ml_collections.ConfigDict)):
      return {
        k: _convert(v, args[1] if args else Any, f"{path}.{k}")
        for k, v in _items(value, path).items()
      }
  else:
    raise TypeError(f"from_section: field type {tp!r} of {path} is not supported")
  raise _expected(tp, value, path)


def _items(section: Any, path: str) -> dict[str, Any]:
  if isinstance(section, ml_collections.ConfigDict):
    return {k: section[k] for k in section.keys()}  # Resolves field references.
  if isinstance(section, Mapping):
    return dict(section)
  raise ConfigError(
    f"{path}: expected a section (keys and values), got {type(section).__name__} {section!r}"
  )


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
  return typing.get_type_hints(cls)  # Resolves `from __future__ import annotations`.


def _at(path: str, message: str, names: list[str]) -> str:
  """`message` of a failed check at `path`: as it is if it starts with the path, joined
  by a dot if it starts with a field name ("lr must be >= 0" -> "config.train.lr must
  be >= 0"), else after `path: `."""
  if message.startswith(path):
    return message
  if message.split(" ", 1)[0].rstrip(":,") in names:
    return f"{path}.{message}"
  return f"{path}: {message}"


def _keys(what: str, keys: list[str]) -> str:
  return f"{what} key {keys[0]!r}" if len(keys) == 1 else f"{what} keys {keys}"


def _name(tp: Any) -> str:
  return tp.__name__ if isinstance(tp, type) else str(tp).replace("typing.", "")


def _expected(tp: Any, value: Any, path: str) -> ConfigError:
  return ConfigError(f"{path}: expected {_name(tp)}, got {type(value).__name__} {value!r}")
