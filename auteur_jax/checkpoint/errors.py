"""The error raised for weights that do not fit a model (converters and restores alike)."""

from __future__ import annotations


class WeightError(ValueError):
  """A checkpoint does not fit the model; the message names the tensor(s) and shapes."""
