"""Config loading and --config.key=value overrides."""

import pytest

from auteur_jax.config import ConfigError, load_config

CONFIG = """
import ml_collections

def get_config(arg=None):
  c = ml_collections.ConfigDict()
  c.task = arg or "dit"
  c.data = ml_collections.ConfigDict(dict(batch_size=8, fps=8.0, path="x", shuffle=True,
                                          sizes=(64, 64), tokenizer=None))
  return c
"""


@pytest.fixture
def cfg_file(tmp_path):
  p = tmp_path / "cfg.py"
  p.write_text(CONFIG)
  return str(p)


def test_overrides_typed(cfg_file):
  c = load_config(
    cfg_file,
    [
      "--config.data.batch_size=4",
      "--config.data.fps=2",
      "--config.data.shuffle=false",
      "--config.data.sizes=(32,32)",
      "--config.data.path=/tmp/y",
      "--config.data.tokenizer=tok/dir",
    ],
  )
  assert c.data.batch_size == 4 and isinstance(c.data.fps, float) and c.data.fps == 2.0
  assert c.data.shuffle is False and c.data.sizes == (32, 32) and c.data.path == "/tmp/y"
  assert c.data.tokenizer == "tok/dir"
  with pytest.raises(AttributeError):
    c.new_key = 1  # Locked after loading.


def test_arg_suffix(cfg_file):
  assert load_config(cfg_file + ":director").task == "director"


@pytest.mark.parametrize(
  "override, message",
  [
    ("--config.data.batch=4", "unknown key 'batch' in data"),
    ("--config.nope.x=1", "unknown key 'nope' in config"),
    ("--config.data.batch_size=four", "data.batch_size: expected int"),
    ("--config.data.batch_size=4.5", "data.batch_size: expected int"),
    ("--config.data.shuffle=maybe", "expected a bool"),
    ("--config.data=3", "is a section"),
    ("--config.data.fps", "expected --config.key=value"),
  ],
)
def test_bad_overrides(cfg_file, override, message):
  with pytest.raises(ConfigError, match=message):
    load_config(cfg_file, [override])


def test_bad_files(tmp_path):
  with pytest.raises(ConfigError, match="config file not found"):
    load_config(str(tmp_path / "missing.py"))
  p = tmp_path / "broken.py"
  p.write_text("def get_config(:\n")
  with pytest.raises(ConfigError, match="broken.py: failed to import"):
    load_config(str(p))
