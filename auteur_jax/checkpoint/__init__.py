"""Checkpoints at the bottom of the package: the layout of step folders and key paths
(layout.py), orbax reads and writes (orbax_io.py), and restoring a model's params
straight onto the shardings of a mesh (restore.py). Training runs (train/checkpoint.py),
conversion, sampling, encoding, evaluation and the demo all read through here."""
