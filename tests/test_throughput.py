"""train/throughput.py: TFLOP/s per device, MFU against the peak, goodput shares."""

import time

import jax
import pytest

from auteur_jax.config import load_config
from auteur_jax.parallel.mesh import make_mesh
from auteur_jax.train import throughput
from auteur_jax.train.costs import model_costs


def test_mfu_is_the_config_flops_over_the_peak(monkeypatch):
  monkeypatch.setattr(throughput, "measured_cpu_peak", lambda: 8e11)
  config = load_config("toy/dit")
  mesh = make_mesh({"data": 2}, jax.devices()[:2])
  t = throughput.Throughput(config, mesh)
  flops = model_costs(config).model_flops
  assert t.step_flops == flops and t.devices == 2
  # Two CPU devices share the measured peak (conftest gives this process 8 CPU devices).
  assert t.peak == pytest.approx(8e11 / len(jax.local_devices()))
  s = t.scalars(0.5)
  assert s["tflops_per_device"] == pytest.approx(flops / 0.5 / 2 / 1e12)
  assert s["mfu"] == pytest.approx(flops / 0.5 / 2 / t.peak)
  assert s["peak_tflops_per_device"] == pytest.approx(t.peak / 1e12)


def test_no_flop_count_logs_nothing():
  config = load_config("toy/vae")  # No FLOP formula for the VAE.
  t = throughput.Throughput(config, make_mesh({"data": 1}, jax.devices()[:1]))
  assert t.step_flops is None and t.scalars(1.0) == {}


def test_measured_cpu_peak_is_plausible():
  assert 1e8 < throughput.measured_cpu_peak(n=256, repeats=3) < 1e14


def test_goodput_shares_and_reset():
  g = throughput.Goodput()
  with g.timed("data"):
    time.sleep(0.02)
  with g.timed("step"):
    time.sleep(0.01)
  f = g.fractions()
  assert set(f) == {f"time_frac_{p}" for p in throughput.Goodput.PARTS}
  assert 0 < f["time_frac_data"] <= 1 and sum(f.values()) <= 1.0 + 1e-9
  assert g.fractions()["time_frac_data"] == 0.0  # Reset by the first call.
