"""Steps shared by the encoder converters (VAE, vision, text): track which checkpoint
tensors a conversion read, and place converted arrays onto a model's abstract state.

A converter builds `{our parameter path "a/b/c": (array, source tensor name)}`;
`load_into` checks it against `nnx.eval_shape` of the model: every parameter must be
present with the right shape (errors name the source tensor and both shapes), and
nothing extra may be left over. Folders are read with `diffusers_wan.open_checkpoint`
(config.json + safetensors, optionally sharded by an index).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from auteur_jax.parallel.rules import DEFAULT_RULES, Rules, state_shardings

Converted = dict[str, tuple[np.ndarray, str]]


class WeightError(ValueError):
  """A checkpoint does not fit the model; the message names the tensor(s) and shapes."""


class SourceTensors:
  """Read-tracking view of a checkpoint's tensors (name -> array)."""

  def __init__(self, tensors: Mapping[str, np.ndarray], where: str):
    self.tensors = tensors
    self.where = where
    self.used: set[str] = set()

  def __contains__(self, name: str) -> bool:
    return name in self.tensors

  def get(self, name: str) -> np.ndarray:
    if name not in self.tensors:
      raise WeightError(f"{self.where}: missing tensor {name!r}")
    self.used.add(name)
    return np.asarray(self.tensors[name])

  def check_all_used(self, ignore: Iterable[str] = ()) -> None:
    """Raises listing every tensor the conversion did not read (a config mismatch)."""
    ignore = tuple(ignore)
    unused = sorted(n for n in self.tensors
                    if n not in self.used and not any(i in n for i in ignore))
    if unused:
      raise WeightError(f"{self.where}: {len(unused)} tensors are not used by this model "
                        f"config (wrong config.json or model class?): {unused[:12]}"
                        + (" ..." if len(unused) > 12 else ""))


def load_into(build: Callable[[], nnx.Module], converted: Converted, where: str, *,
              mesh: jax.sharding.Mesh | None = None, rules: Rules = DEFAULT_RULES,
              fresh: tuple[str, ...] = ()) -> nnx.Module:
  """The model `build()` makes, holding `converted` (cast to each parameter's dtype).

  With `mesh`, each weight is placed with its logical sharding under `rules`. Parameters
  under a `fresh` path prefix (parts the checkpoint cannot have, e.g. a new resampler)
  keep `build()`'s random initialisation; then the model is built for real first.
  """
  with nnx.use_eager_sharding(False):
    model = build() if fresh else nnx.eval_shape(build)
  graphdef, state = nnx.split(model)
  shardings = (dict(nnx.to_flat_state(state_shardings(state, mesh, rules)))
               if mesh is not None else {})
  flat = nnx.to_flat_state(state)
  is_fresh = lambda name: any(name == f or name.startswith(f + "/") for f in fresh)
  names = {"/".join(str(k) for k in key): key for key, _ in flat
           if not is_fresh("/".join(str(k) for k in key))}
  missing = sorted(set(names) - set(converted))
  if missing:
    raise WeightError(f"{where}: no weights for {len(missing)} model parameters: "
                      f"{missing[:12]}" + (" ..." if len(missing) > 12 else ""))
  extra = sorted(set(converted) - set(names))
  if extra:  # A converter bug, not a user error: the two layouts disagree.
    raise AssertionError(f"converted weights the model does not have: {extra[:12]}")
  for key, var in flat:
    name = "/".join(str(k) for k in key)
    if is_fresh(name):
      sharding = shardings.get(key)
      if sharding is not None:
        var.set_value(jax.device_put(var[...], sharding))
      continue
    arr, source = converted[name]
    if tuple(arr.shape) != tuple(var.shape):
      raise WeightError(f"{where}: tensor {source!r} (-> {name}) has shape "
                        f"{tuple(arr.shape)} after conversion; the model expects "
                        f"{tuple(var.shape)}")
    arr = np.asarray(arr, dtype=var.dtype)
    sharding = shardings.get(key)
    var.set_value(jax.device_put(arr, sharding) if sharding is not None else jnp.asarray(arr))
  return nnx.merge(graphdef, nnx.from_flat_state(flat))


def linear(w: np.ndarray) -> np.ndarray:
  """torch Linear [out, in] -> ours [in, out]."""
  return np.asarray(w).T
