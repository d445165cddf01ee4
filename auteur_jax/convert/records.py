"""What a checkpoint says about its model: the family config and where its params sit.

A converted checkpoint's `config` item is a conversion record (layout.RECORD): the
family, the key path of the params (`prefix`) and our model config. A training run's
`config` item is the run's config: the family's task entry (mapping.Family.task) gives
the prefix and the model config. `abstract_params` turns a config into parameter paths,
shapes, dtypes and (given a mesh) shardings.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import ml_collections
from flax import nnx

from auteur_jax.checkpoint.errors import WeightError
from auteur_jax.checkpoint.layout import RECORD
from auteur_jax.config import ConfigError
from auteur_jax.config_sections import from_section
from auteur_jax.convert.mapping import Family
from auteur_jax.parallel.rules import DEFAULT_RULES, Rules, state_shardings


def cfg_to_json(cfg: Any) -> dict:
  """Our model config as a conversion record stores it (its class is the family's)."""
  return {"cfg": dataclasses.asdict(cfg)}


def cfg_from_json(family: Family, record: dict, where: str) -> Any:
  """The family's config dataclass from a conversion record's `cfg`: the class comes from
  the project's own family registry, never from the checkpoint's metadata."""
  if not isinstance(record.get("cfg"), dict):
    raise WeightError(f"{where}: the conversion record has no `cfg` mapping")
  try:
    return from_section(family.config, record["cfg"], f"{where}: {RECORD}.cfg")
  except ConfigError as e:
    raise WeightError(str(e)) from e


def model_of(family: Family, item: dict | None, where: str) -> tuple[Any, tuple[str, ...], dict]:
  """(our config, params prefix, source config.json or {}) from a `config` item."""
  if item and RECORD in item:
    rec = item[RECORD]
    if rec["family"] != family.name:
      raise WeightError(f"{where}: converted from family {rec['family']!r}, not {family.name!r}")
    return cfg_from_json(family, rec, where), tuple(rec["prefix"]), rec.get("hf_config") or {}
  if item and "task" in item and family.task is not None:
    task, prefix, get = family.task
    if item["task"] != task:
      raise WeightError(
        f"{where}: a {item['task']!r} run; family {family.name} comes from {task!r} runs"
      )
    return get(ml_collections.ConfigDict(item)), prefix, {}
  raise WeightError(
    f"{where}: no conversion record or run config in the checkpoint's "
    "`config` item; cannot tell the model's shapes"
  )


def abstract_params(
  family: Family, cfg: Any, mesh: jax.sharding.Mesh | None = None, rules: Rules = DEFAULT_RULES
) -> tuple[dict[str, Any], dict[str, Any]]:
  """({param path "a/b": ShapeDtypeStruct}, {path: NamedSharding}) of the family's model."""
  with nnx.use_eager_sharding(False):
    model = nnx.eval_shape(lambda: family.build(cfg))
  state = nnx.state(model, nnx.Param)
  flat = {"/".join(str(k) for k in key): v for key, v in nnx.to_flat_state(state)}
  shapes = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in flat.items()}
  if mesh is None:
    return shapes, {}
  sh = {
    "/".join(str(k) for k in key): s.get_value() if isinstance(s, nnx.Variable) else s
    for key, s in nnx.to_flat_state(state_shardings(state, mesh, rules))
  }
  return shapes, sh


def leaf_key(prefix: tuple[str, ...], path: str) -> tuple[str, ...]:
  """Checkpoint key of our parameter `path` ("a/b") under `prefix` (nnx's `value` leaf)."""
  return (*prefix, *path.split("/"), "value")
