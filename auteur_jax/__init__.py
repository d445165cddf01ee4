"""VideoAuteur (long narrative video generation) in JAX / Flax NNX.

Importing the package installs one logging filter, before any module of it imports
`transformers`: transformers advises at import time that "PyTorch was not found" when
torch is absent. We use transformers for its tokenizers only, which need no PyTorch, so
without torch (a plain `pip install auteur_jax`) that line is noise on every command.
Only that record is dropped; transformers' other messages and levels are untouched.
"""

import logging


class _NoTorchAdvice(logging.Filter):
  """Drops transformers' "PyTorch was not found" advice; passes every other record."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not (
      record.name == "transformers" and str(record.msg).startswith("PyTorch was not found")
    )


# transformers logs the advice on its library logger ("transformers"), which it creates
# with logging.getLogger: this is the same Logger object, and it keeps its filters.
logging.getLogger("transformers").addFilter(_NoTorchAdvice())
