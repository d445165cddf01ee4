"""The package's import graph: no cycle, and no import against the layering (design doc).

Every import counts, also those inside functions: a lazy import hides a cycle from the
interpreter, not from the design.
"""

import ast
import os

import pytest

import auteur_jax

ROOT = os.path.dirname(auteur_jax.__file__)

# layer -> the layers that must not import it (the design doc's layering: models know no
# training, sampling or files; nothing below the trainer imports train/).
FORBIDDEN = {
  "data": ("models", "diffusion", "parallel", "checkpoint"),
  "checkpoint": ("models", "data", "diffusion", "parallel"),
  "convert": ("models", "data", "diffusion", "parallel", "checkpoint", "train", "eval"),
  "train": ("models", "data", "diffusion", "parallel", "checkpoint", "convert", "sample", "eval"),
  "sample": ("models", "data", "diffusion", "parallel", "checkpoint", "convert"),
  "demo": (
    "models",
    "data",
    "diffusion",
    "parallel",
    "checkpoint",
    "convert",
    "sample",
    "eval",
    "train",
  ),
  "ablate": (
    "models",
    "data",
    "diffusion",
    "parallel",
    "checkpoint",
    "convert",
    "sample",
    "eval",
    "train",
    "demo",
    "plan",
  ),
  "cli": (
    "models",
    "data",
    "diffusion",
    "parallel",
    "checkpoint",
    "convert",
    "sample",
    "eval",
    "train",
    "demo",
    "plan",
  ),
}


def module_imports() -> dict[str, set[str]]:
  """{module: the package modules it imports anywhere in its file}."""
  files = {}
  for folder, _, names in os.walk(ROOT):
    for name in names:
      if name.endswith(".py"):
        path = os.path.join(folder, name)
        mod = "auteur_jax." + os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
        files[mod.removesuffix(".__init__")] = path
  graph = {}
  for mod, path in files.items():
    package = mod if path.endswith("__init__.py") else mod.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(open(path).read(), path)):
      if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
          parts = package.split(".")[: len(package.split(".")) - node.level + 1]
          base = ".".join(parts + ([base] if base else []))
        names = [base] + [f"{base}.{a.name}" for a in node.names]
      else:
        continue
      found |= {n for n in names if n in files and n != mod}
    graph[mod] = found
  return graph


def layer(mod: str) -> str:
  """auteur_jax.train.trainer -> train; auteur_jax.cli -> cli."""
  return mod.split(".")[1] if "." in mod else ""


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
  """Strongly connected components of more than one node (Tarjan), or self-loops."""
  index, low, stack, on, out = {}, {}, [], set(), []

  def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on.add(v)
    for w in graph.get(v, ()):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      comp = []
      while True:
        w = stack.pop()
        on.discard(w)
        comp.append(w)
        if w == v:
          break
      if len(comp) > 1 or v in graph.get(v, ()):
        out.append(sorted(comp))

  for v in sorted(graph):
    if v not in index:
      visit(v)
  return out


def test_the_checker_finds_what_it_looks_for():
  assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
  assert cycles({"a": {"b"}, "b": set()}) == []
  graph = module_imports()
  assert "auteur_jax.parallel.rules" in graph["auteur_jax.train.trainer"]
  # Imports inside functions count too.
  assert "auteur_jax.train.trainer" in graph["auteur_jax.demo.pipeline"]


def test_no_module_cycles():
  assert cycles(module_imports()) == []


def test_no_layer_cycles():
  graph = module_imports()
  layers: dict[str, set[str]] = {}
  for mod, deps in graph.items():
    layers.setdefault(layer(mod), set()).update(layer(d) for d in deps if layer(d) != layer(mod))
  assert cycles(layers) == []


@pytest.mark.parametrize("low", sorted({lo for los in FORBIDDEN.values() for lo in los}))
def test_no_import_against_the_layering(low):
  """A layer never imports one that FORBIDDEN puts above it."""
  bad = [
    f"{mod} -> {dep}"
    for mod, deps in module_imports().items()
    for dep in deps
    if layer(mod) == low and low in FORBIDDEN.get(layer(dep), ())
  ]
  assert not bad, bad
