"""Bounded memory: converting a generated 2.25 GiB checkpoint (random float32, three
shards + index) keeps the converter's peak RSS under 1.5 x its largest tensor (256 MiB)
+ a fixed 512 MiB (benchmarks/convert_memory.OVERHEAD), far below the checkpoint's size;
the values land where the map says."""

import importlib.util
import os

import numpy as np
import pytest
import tensorstore as ts

from auteur_jax.convert.safetensors_io import SafetensorsFolder

pytestmark = pytest.mark.integration

_spec = importlib.util.spec_from_file_location(
  "convert_memory", os.path.join(os.path.dirname(__file__), "..", "benchmarks", "convert_memory.py")
)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def _zarr(ckpt, name, index):
  store = ts.open(
    {"driver": "zarr", "kvstore": {"driver": "file", "path": f"{ckpt}/0/state/{name}"}}
  ).result()
  return store[index].read().result()


def test_peak_memory_is_about_one_tensor(tmp_path):
  size, largest = bench.write_random_llama(
    str(tmp_path / "src"), layers=4, width=2048, mlp=16384, vocab=32768
  )
  assert size >= 2 << 30 and largest == 256 << 20
  peak, _ = bench.measure_import(str(tmp_path / "src"), str(tmp_path / "dst"))
  assert peak <= 1.5 * largest + bench.OVERHEAD, (peak >> 20, largest >> 20)
  src = SafetensorsFolder(str(tmp_path / "src"))
  dst = str(tmp_path / "dst")
  np.testing.assert_array_equal(
    _zarr(dst, "model.lm_head.value", np.s_[:, :4]), src.view("lm_head.weight")[:4].T
  )
  np.testing.assert_array_equal(
    _zarr(dst, "model.layers.mlp.up.value", np.s_[3, :, 16380:]),
    src.view("model.layers.3.mlp.up_proj.weight")[-4:].T,
  )
  q = _zarr(dst, "model.layers.attn.q.value", np.s_[2, 5])  # [heads, head_dim] of row 5
  np.testing.assert_array_equal(
    q.reshape(-1), src.view("model.layers.2.self_attn.q_proj.weight")[:, 5]
  )
