"""`auteur demo`: the embedded default end to end (see pipeline.py)."""
