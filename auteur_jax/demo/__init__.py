"""`auteur demo`: the embedded default end to end (see pipeline.py)."""

from auteur_jax.demo.pipeline import run  # noqa: F401
