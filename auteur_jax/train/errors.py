"""The error that stops a training run, importable without the trainer's dependencies
(the CLI lists it among the user errors it prints in one line)."""

from __future__ import annotations


class NonFiniteLoss(FloatingPointError):
  """A step produced a NaN / inf loss; the message names the step, the loss parts and the
  checkpoint kept."""
