"""One declarative name map per model family, read in both directions.

A family's map is a list of `Piece`s. Each says: source tensor `theirs` (with `shape`),
optionally a part of it (`take`, e.g. one third of a fused in-projection), goes through
`ops` (transposes and reshapes, all views of a memory-mapped tensor) and lands at `at`
inside our parameter `ours` (e.g. layer i of a stacked parameter, or slot j of a fused
q/k/v kernel). Import runs the ops forward; export runs them backward; the checks
(`check`) run on shapes alone, before any data is touched.

  ops:  ("t", perm)      transpose (np.transpose axes)
        ("r", shape)     reshape (one -1 allowed)
        ("mean", n)      n rows equal to the mean row (vocabulary growth; import only)

Families build their maps with `Map`, from our parameters' shapes: `Map.add(ours,
theirs, kind)` where a kind (LINEAR, HEADS_IN, transpose(...), flat(...)) gives the
source shape and the ops. Each converter module (hf_llm, diffusers_wan, ...) holds its
`Family`: the map plus config.json <-> our config; `auteur convert` (importer, exporter)
and the in-memory loaders (`load_model`, behind load_hf_llm & co.) both read it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from auteur_jax.checkpoint.errors import WeightError
from auteur_jax.convert.safetensors_io import SafetensorsFolder
from auteur_jax.parallel.rules import DEFAULT_RULES, Rules, state_shardings

Op = tuple
Index = tuple  # ints (axis dropped) and slices


@dataclasses.dataclass(frozen=True)
class Piece:
  """Source tensor `theirs` [shape] -> `ops` -> our parameter `ours` at index `at`."""

  ours: str
  theirs: str
  shape: tuple[int, ...]
  ops: tuple[Op, ...] = ()
  at: Index = ()
  take: Index = ()


Shapes = Mapping[str, tuple[int, ...]]


@dataclasses.dataclass(frozen=True)
class Family:
  """What import / export / loading need to know about one model family."""

  name: str
  config: type  # Our config dataclass (a conversion record's `cfg` is one).
  stem: str  # Weight file stem: "model" (transformers) or "diffusion_pytorch_model".
  kind: Callable[[Mapping[str, Any]], str]  # config.json -> its kind (model_type / class)
  kinds: tuple[str, ...]  # the kinds this family accepts
  from_hf: Callable[..., Any]  # (config.json dict, **overrides) -> our config
  to_hf: Callable[[Any], dict]  # our config -> config.json dict
  build: Callable[[Any], nnx.Module]
  pieces: Callable[[Any, Shapes, Shapes | None], list[Piece]]  # (cfg, ours, source)
  ignore: Callable[[str], bool] = lambda name: False  # source tensors nobody needs
  fresh: tuple[str, ...] = ()  # our parameters no checkpoint of the family has
  task: tuple[str, tuple[str, ...], Callable[[Any], Any]] | None = None
  # (config.task, where the run's model keeps this family, config -> our config)


def model_type(hf: Mapping[str, Any]) -> str:
  return hf.get("model_type", "")


def class_name(hf: Mapping[str, Any]) -> str:
  return hf.get("_class_name", "")


def from_run(cls: Any, key: str | None = None) -> Callable[[Any], Any]:
  """A run config -> `cls` from config.model (or config.model[key])."""

  def get(config):
    sub = config.model if key is None else config.model[key]
    return cls.from_dict(sub.to_dict() if hasattr(sub, "to_dict") else sub)

  return get


# ------------------------------------------------------------------ building a family map

# A kind maps the shape of our slot to (the source tensor's shape, ops source -> ours).
Kind = Callable[[tuple[int, ...]], tuple[tuple[int, ...], tuple[Op, ...]]]


def transpose(*perm: int) -> Kind:
  """Ours = theirs.transpose(perm), e.g. torch conv [O, I, kt, kh, kw] -> [kt, kh, kw, I, O]."""
  return lambda s: (tuple(s[i] for i in np.argsort(perm)), (("t", perm),))


def flat(theirs: Callable[[tuple[int, ...]], tuple[int, ...]]) -> Kind:
  """Ours = theirs.reshape(slot), with theirs' shape computed from our slot."""
  return lambda s: (tuple(theirs(s)), (("r", s),))


IDENT: Kind = lambda s: (s, ())
LINEAR = transpose(1, 0)  # torch Linear [out, in] -> ours [in, out].
# torch Linear [H*K, D] -> ours [D, H, K]; [D, H*K] -> ours [H, K, D].
HEADS_IN: Kind = lambda s: ((s[1] * s[2], s[0]), (("t", (1, 0)), ("r", s)))
HEADS_OUT: Kind = lambda s: ((s[2], s[0] * s[1]), (("t", (1, 0)), ("r", s)))
HEADS_VEC = flat(lambda s: (s[0] * s[1],))  # torch [H*K] (bias, norm) -> ours [H, K].
UNIT_LEAD = flat(lambda s: (1, *s))  # torch [1, ...] -> ours [...] (a leading unit axis).


class Map:
  """Collects the pieces of a family map; shapes come from our parameters' shapes."""

  def __init__(self, params: Mapping[str, tuple[int, ...]]):
    self.params = params
    self.pieces: list[Piece] = []

  def has(self, ours: str) -> bool:
    return ours in self.params

  def add(
    self,
    ours: str,
    theirs: str,
    kind: Kind = IDENT,
    at: Index = (),
    take: Index = (),
    full: tuple[int, ...] | None = None,
  ) -> None:
    """`theirs` (or its part `take` of a tensor of shape `full`) -> `ours`[at]."""
    if ours not in self.params:
      raise AssertionError(f"map names a parameter the model does not have: {ours}")
    shape, ops = kind(_index_shape(self.params[ours], at))
    self.pieces.append(
      Piece(
        ours, theirs, tuple(full if take and full else shape), tuple(ops), tuple(at), tuple(take)
      )
    )

  def stack(self, ours: str, theirs: str, n: int, kind: Kind = IDENT, at: Index = ()) -> None:
    """Layers 0..n-1 (`theirs` holds "{i}") on the leading axis of `ours`."""
    for i in range(n):
      self.add(ours, theirs.format(i=i), kind, (i, *at))


def _resolve(shape: Sequence[int], size: int) -> tuple[int, ...]:
  shape = tuple(shape)
  if -1 in shape:
    known = math.prod(s for s in shape if s != -1)
    shape = tuple(size // known if s == -1 else s for s in shape)
  if math.prod(shape) != size:
    raise WeightError(f"cannot reshape {size} values to {shape}")
  return shape


def _index_shape(shape: Sequence[int], index: Index) -> tuple[int, ...]:
  """Shape of x[index] for x of `shape` (ints drop an axis, slices keep it)."""
  out = []
  for dim, size in enumerate(shape):
    i = index[dim] if dim < len(index) else slice(None)
    if isinstance(i, slice):
      out.append(len(range(*i.indices(size))))
  return tuple(out)


def shapes(piece: Piece) -> list[tuple[int, ...]]:
  """Shapes of the source part and after each op (the last: what lands at `at`)."""
  out = [_index_shape(piece.shape, piece.take)]
  for op, arg in piece.ops:
    s = out[-1]
    if op == "t":
      out.append(tuple(s[a] for a in arg))
    elif op == "r":
      out.append(_resolve(arg, math.prod(s)))
    elif op == "mean":
      out.append((arg, *s[1:]))
    else:
      raise ValueError(f"unknown op {op!r}")
  return out


def forward(x: np.ndarray, piece: Piece) -> np.ndarray:
  """Source tensor -> our layout (views where numpy can; `mean` reads the tensor)."""
  if piece.take:
    x = x[piece.take]
  for op, arg in piece.ops:
    if op == "t":
      x = x.transpose(arg)
    elif op == "r":
      x = x.reshape(arg)
    else:
      mean = np.asarray(x, np.float64).mean(axis=0, keepdims=True).astype(x.dtype)
      x = np.broadcast_to(mean, (arg, *x.shape[1:]))
  return x


def backward(y: np.ndarray, piece: Piece) -> np.ndarray:
  """Our slot values -> the source part (the inverse of `forward`)."""
  chain = shapes(piece)
  for k in range(len(piece.ops) - 1, -1, -1):
    op, arg = piece.ops[k]
    if op == "t":
      y = y.transpose(np.argsort(arg))
    elif op == "r":
      y = y.reshape(chain[k])
    else:
      raise ValueError(f"{piece.theirs}: op {op!r} has no inverse")
  return y


def invertible(piece: Piece) -> bool:
  return all(op != "mean" for op, _ in piece.ops)


# ------------------------------------------------------------------------------- checks


def _listed(names: Sequence, n: int = 12) -> str:
  names = list(names)
  return f"{names[:n]}" + (f" ... ({len(names)} in all)" if len(names) > n else "")


def check(
  pieces: Sequence[Piece],
  params: Mapping[str, tuple[int, ...]],
  source: Mapping[str, tuple[int, ...]],
  where: str,
  *,
  fresh: Iterable[str] = (),
  ignore: Callable[[str], bool] = lambda name: False,
) -> None:
  """Raises WeightError listing every mismatch between a map, our parameters (path ->
  shape) and a checkpoint's tensors (name -> shape): missing tensors, tensors with
  another shape (both shapes named), tensors nobody reads, parameters nobody fills."""
  problems = []
  missing = sorted({p.theirs for p in pieces if p.theirs not in source})
  if missing:
    problems.append(f"{len(missing)} tensors the config needs are missing: {_listed(missing)}")
  bad = {}
  for p in pieces:
    if p.theirs in source and tuple(source[p.theirs]) != tuple(p.shape):
      bad[p.theirs] = (
        f"{p.theirs!r} has shape {tuple(source[p.theirs])}, the config expects {tuple(p.shape)}"
      )
  if bad:
    problems.append(
      "shape mismatch: tensor "
      + "; tensor ".join(list(bad.values())[:12])
      + (f" ... ({len(bad)} in all)" if len(bad) > 12 else "")
    )
  read = {p.theirs for p in pieces}
  unused = sorted(n for n in source if n not in read and not ignore(n))
  if unused:
    problems.append(
      f"{len(unused)} tensors are not used by this model config (wrong "
      f"config.json or family?): {_listed(unused)}"
    )
  fresh = tuple(fresh)
  is_fresh = lambda n: any(n == f or n.startswith(f + "/") for f in fresh)
  covered: dict[str, int] = {}
  for p in pieces:
    if p.ours not in params:
      raise AssertionError(f"map names a parameter the model does not have: {p.ours}")
    slot = _index_shape(params[p.ours], p.at)
    got = shapes(p)[-1]
    if p.theirs not in bad and got != slot:
      problems.append(
        f"tensor {p.theirs!r} (-> {p.ours}) has shape {got} after conversion; "
        f"the model expects {slot}"
      )
    covered[p.ours] = covered.get(p.ours, 0) + math.prod(slot)
  unfilled = sorted(
    n for n, s in params.items() if not is_fresh(n) and covered.get(n, 0) != math.prod(s)
  )
  if unfilled and not missing:
    problems.append(f"no weights for {len(unfilled)} model parameters: {_listed(unfilled)}")
  if problems:
    raise WeightError(f"{where}: " + "\n  ".join(problems))


def pieces_by_param(
  family: Family,
  cfg: Any,
  params: Shapes,
  folder: SafetensorsFolder,
  where: str,
  fresh: Iterable[str] = (),
) -> dict[str, list[Piece]]:
  """The family map of `cfg` for the checkpoint `folder`, checked against our `params`
  (path -> shape; `check`, with the family's fresh params and `fresh`), per our param."""
  source = {n: folder.shape(n) for n in folder.keys()}
  pieces = family.pieces(cfg, params, source)
  check(pieces, params, source, where, fresh=(*family.fresh, *fresh), ignore=family.ignore)
  by_param: dict[str, list[Piece]] = {}
  for p in pieces:
    by_param.setdefault(p.ours, []).append(p)
  return by_param


# ------------------------------------------------------------------------ blocks of params


def region(shape: Sequence[int], at: Index) -> list[tuple[int, int, bool]]:
  """Per axis of our parameter: (start, stop, kept) of a piece placed at `at`."""
  out = []
  for dim, size in enumerate(shape):
    i = at[dim] if dim < len(at) else slice(None)
    if isinstance(i, slice):
      start, stop, step = i.indices(size)
      assert step == 1, "pieces are placed at contiguous ranges"
      out.append((start, stop, True))
    else:
      out.append((i, i + 1, False))
  return out


def fill(
  out: np.ndarray,
  block: Sequence[slice],
  shape: Sequence[int],
  pieces: Sequence[Piece],
  view: Callable[[str], np.ndarray],
) -> None:
  """Writes into `out` (= our parameter[block], shape `shape`) every overlapping piece,
  reading each source tensor through `view(name)` (a fresh memory map, dropped after)."""
  for p in pieces:
    src, dst = [], []
    for (start, stop, kept), b in zip(region(shape, p.at), block):
      lo, hi = max(start, b.start), min(stop, b.stop)
      if lo >= hi:
        break
      if kept:
        src.append(slice(lo - start, hi - start))
        dst.append(slice(lo - b.start, hi - b.start))
      else:  # The piece has no such axis: index it away on our side.
        dst.append(lo - b.start)
    else:
      out[tuple(dst)] = forward(view(p.theirs), p)[tuple(src)]


# ------------------------------------------------------------------ loading into a model


def check_divisible(
  name: str, shape: tuple[int, ...], sharding: jax.sharding.NamedSharding, hint: str = ""
) -> None:
  for dim, (size, axes) in enumerate(zip(shape, sharding.spec)):
    axes = (axes,) if isinstance(axes, str) else tuple(axes or ())
    ways = int(np.prod([sharding.mesh.shape[a] for a in axes]))
    if size % ways:
      raise WeightError(
        f"parameter {name} {shape}: dimension {dim} ({size}) does not divide "
        f"over mesh axes {axes} ({ways} ways){hint}"
      )


def load_model(
  family: Family,
  cfg: Any,
  path: str,
  *,
  mesh: jax.sharding.Mesh | None = None,
  rules: Rules = DEFAULT_RULES,
  map_cfg: Any = None,
  values: Mapping[str, Any] | None = None,
  hints: Mapping[str, str] | None = None,
) -> nnx.Module:
  """`family.build(cfg)` holding the weights of the safetensors folder `path`, read
  through the family map (of `map_cfg`, default `cfg`) and cast to each parameter's dtype.

  Every mismatch (missing or unused tensors, shapes) is listed before anything is read.
  With `mesh`, each weight is placed with its logical sharding under `rules`; `hints`
  (param -> text) extends the error for a dimension the mesh does not divide. Params in
  `values` (path -> array) are taken from there; the family's `fresh` params keep the
  model's random initialisation (the model is then built for real first).
  """
  folder, values = SafetensorsFolder(path), dict(values or {})
  with nnx.use_eager_sharding(False):
    model = family.build(cfg) if family.fresh else nnx.eval_shape(lambda: family.build(cfg))
  graphdef, state = nnx.split(model)
  flat = nnx.to_flat_state(state)
  names = {key: "/".join(str(k) for k in key) for key, _ in flat}
  ours = {names[key]: tuple(var.shape) for key, var in flat}
  assert set(values) <= set(ours), f"values for no parameter: {sorted(set(values) - set(ours))}"
  by_param = pieces_by_param(
    family, map_cfg if map_cfg is not None else cfg, ours, folder, path, fresh=values
  )
  shardings = (
    {}
    if mesh is None
    else {
      key: s.get_value() if isinstance(s, nnx.Variable) else s
      for key, s in nnx.to_flat_state(state_shardings(state, mesh, rules))
    }
  )
  for key, var in flat:
    name, sharding = names[key], shardings.get(key)
    if name in by_param:
      arr = np.empty(var.shape, var.dtype)
      fill(arr, tuple(slice(0, n) for n in var.shape), var.shape, by_param[name], folder.view)
    elif name in values:
      arr = np.asarray(values[name], var.dtype)
    else:  # fresh: as initialised.
      arr = var[...]
    if sharding is not None:
      check_divisible(name, tuple(var.shape), sharding, (hints or {}).get(name, ""))
    var.set_value(jax.device_put(arr, sharding) if sharding is not None else jnp.asarray(arr))
  return nnx.merge(graphdef, nnx.from_flat_state(flat))
