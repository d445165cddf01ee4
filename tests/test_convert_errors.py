"""`auteur convert` on bad inputs: each a clear error naming the file / tensor, and never
a half-written destination."""

import json
import os

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file
from test_convert_roundtrip import save_reference

from auteur_jax import cli
from auteur_jax.checkpoint.errors import WeightError
from auteur_jax.convert import mapping
from auteur_jax.convert.importer import import_weights
from auteur_jax.convert.safetensors_io import SafetensorsError


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
  root = tmp_path_factory.mktemp("bad")
  save_reference("llama", root / "one")
  model, _ = save_reference("llama", root / "many", max_shard_size="20KB")
  return root


def _copy(src, dst, keep=lambda name: True):
  os.makedirs(dst)
  for name in os.listdir(src):
    if keep(name):
      with open(os.path.join(src, name), "rb") as f, open(os.path.join(dst, name), "wb") as g:
        g.write(f.read())
  return str(dst)


def _fails(src, dst, match, exc=WeightError, **kw):
  with pytest.raises(exc, match=match):
    import_weights(
      kw.pop("family", "llama"), str(src), str(dst), mesh_shape={"fsdp": 8}, progress=False, **kw
    )
  parent = os.path.dirname(str(dst))
  assert not os.path.exists(dst)
  # No temporary left either, nor the folders made for it.
  assert not os.path.exists(parent) or not [n for n in os.listdir(parent) if ".tmp-" in n]


def test_truncated_file(llama, tmp_path):
  src = _copy(llama / "one", tmp_path / "src")
  file = os.path.join(src, "model.safetensors")
  with open(file, "r+b") as f:
    f.truncate(os.path.getsize(file) - 100)
  _fails(
    src,
    tmp_path / "dst",
    r"model.safetensors: truncated: the header describes \d+ "
    r"bytes, the file has \d+",
    SafetensorsError,
  )


def test_wrong_family(llama, tmp_path):
  _fails(llama / "one", tmp_path / "a", r"'llama' model, not --family qwen2", family="qwen2")
  _fails(llama / "one", tmp_path / "b", r"'llama' model, not --family wan_dit", family="wan_dit")
  _fails(llama / "one", tmp_path / "c", "unknown family 'gpt2'", family="gpt2")


def test_missing_shard(llama, tmp_path):
  shards = sorted(n for n in os.listdir(llama / "many") if n.endswith(".safetensors"))
  src = _copy(llama / "many", tmp_path / "src", keep=lambda n: n != shards[1])
  _fails(
    src,
    tmp_path / "dst",
    rf"model.safetensors.index.json: shard\(s\) \['{shards[1]}'\] "
    "are listed but missing",
    SafetensorsError,
  )


def test_shape_mismatch_unused_and_missing_tensors(llama, tmp_path):
  src = _copy(llama / "one", tmp_path / "src")
  file = os.path.join(src, "model.safetensors")
  t = load_file(file)
  name = "model.layers.1.mlp.up_proj.weight"
  t[name] = t[name][:40]
  t["model.layers.2.mlp.up_proj.weight"] = np.zeros((48, 32), np.float32)
  del t["model.norm.weight"]
  save_file(t, file, metadata={"format": "pt"})
  with pytest.raises(WeightError) as e:
    import_weights("llama", src, str(tmp_path / "dst"), progress=False)
  msg = str(e.value)
  assert f"tensor '{name}' has shape (40, 32), the config expects (48, 32)" in msg
  assert "missing: ['model.norm.weight']" in msg
  assert "not used by this model config" in msg and "model.layers.2.mlp.up_proj.weight" in msg
  assert not os.path.exists(tmp_path / "dst")


def test_pickles_refused_and_destination_kept(llama, tmp_path):
  pickled = tmp_path / "pickled"
  pickled.mkdir()
  (pickled / "config.json").write_text(json.dumps({"model_type": "llama"}))
  (pickled / "pytorch_model.bin").write_bytes(b"\x80\x02")
  _fails(
    pickled,
    tmp_path / "dst",
    r"only pickled weights \['pytorch_model.bin'\]; convert "
    "them to safetensors first",
    SafetensorsError,
  )
  (tmp_path / "taken").mkdir()
  (tmp_path / "taken" / "keep.txt").write_text("mine")
  with pytest.raises(WeightError, match="taken exists"):
    import_weights("llama", str(llama / "one"), str(tmp_path / "taken"), progress=False)
  assert (tmp_path / "taken" / "keep.txt").read_text() == "mine"


def test_failure_while_writing_leaves_nothing(llama, tmp_path, monkeypatch):
  calls = []
  real = mapping.fill

  def flaky(*args):
    calls.append(1)
    if len(calls) == 5:
      raise OSError("disk full")
    real(*args)

  monkeypatch.setattr(mapping, "fill", flaky)
  _fails(llama / "one", tmp_path / "dst", "disk full", OSError)


def test_cli_reports_user_errors(llama, tmp_path, capsys):
  with pytest.raises(
    SystemExit,
    match=r"auteur: WeightError: .*'llama' model, not --family "
    "umt5",
  ):
    cli.main(
      [
        "convert",
        "import",
        "--family",
        "umt5",
        "--src",
        str(llama / "one"),
        "--dst",
        str(tmp_path / "x"),
      ]
    )
  cli.main(
    [
      "convert",
      "import",
      "--family",
      "llama",
      "--src",
      str(llama / "many"),
      "--dst",
      str(tmp_path / "ok"),
      "--mesh",
      "data=2,fsdp=4",
    ]
  )
  assert "12 params" in capsys.readouterr().out
  cli.main(["convert", "inspect", str(tmp_path / "ok")])
  assert "(None, 'fsdp') on {'data': 2, 'fsdp': 4}" in capsys.readouterr().out


def test_config_json_missing_a_key_or_not_an_object(llama, tmp_path):
  src = _copy(llama / "one", tmp_path / "src")
  hf = json.load(open(os.path.join(src, "config.json")))
  del hf["num_attention_heads"]
  json.dump(hf, open(os.path.join(src, "config.json"), "w"))
  _fails(
    src,
    tmp_path / "dst",
    r"src/config.json: no key 'num_attention_heads' \(has \[",
    SafetensorsError,
  )
  json.dump([1, 2], open(os.path.join(src, "config.json"), "w"))
  _fails(
    src, tmp_path / "dst", r"src/config.json: a JSON list, expected an object", SafetensorsError
  )


def test_a_header_that_is_a_json_list(llama, tmp_path):
  src = _copy(llama / "one", tmp_path / "src")
  raw = b"[1, 2, 3]"
  with open(os.path.join(src, "model.safetensors"), "wb") as f:
    f.write(len(raw).to_bytes(8, "little") + raw)
  _fails(
    src,
    tmp_path / "dst",
    r"model.safetensors: the header is a JSON list, expected an "
    r"object",
    SafetensorsError,
  )


def test_a_killed_import_leaves_nothing_a_rerun_keeps(llama, tmp_path):
  """A killed conversion's temporary (its process gone) is removed by the next one to the
  same destination; a failing import creates no folders."""
  import subprocess

  gone = subprocess.Popen(["true"])
  gone.wait()
  stale = tmp_path / f"ckpt.tmp-{gone.pid}"
  os.makedirs(stale / "0" / "state")
  (stale / "0" / "state" / "junk").write_bytes(b"x" * 1000)
  other = tmp_path / f"other.tmp-{gone.pid}"  # Another destination's: not ours to remove.
  os.makedirs(other)
  import_weights(
    "llama", str(llama / "one"), str(tmp_path / "ckpt"), mesh_shape={"fsdp": 8}, progress=False
  )
  assert sorted(os.listdir(tmp_path)) == ["ckpt", other.name]
  _fails(llama / "one", tmp_path / "new" / "deep" / "dst", "not --family qwen2", family="qwen2")
  assert not os.path.exists(tmp_path / "new")
