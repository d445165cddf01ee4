"""The error every converter raises for a checkpoint that does not fit the model.

Loading itself lives in `mapping.load_model` (the family maps read forward).
"""

from __future__ import annotations


class WeightError(ValueError):
  """A checkpoint does not fit the model; the message names the tensor(s) and shapes."""
