"""`auteur plan`: ahead-of-time dry runs of a config's train step for a TPU / GPU topology.

topology.py  compile-only devices of a topology (libtpu / the CUDA plugin) and meshes
             (the accelerator table: parallel/chips.py)
dry_run.py   lower + compile the trainer's step; per-device bytes, FLOPs, step time
report.py    the report and the sweep table as text
targets/     GPU target-config text protos (GpuTargetConfigProto) for the CUDA compiler
The step's analytic costs and abstract batches live with the trainer (train/costs.py,
train/batch_specs.py), which logs the same FLOP count as MFU.
"""
