"""`auteur plan`: ahead-of-time dry runs of a config's train step for a TPU / GPU topology.

chips.py     the accelerator table (HBM, peak bf16 FLOP/s, link bandwidths)
topology.py  compile-only devices of a topology (libtpu / the CUDA plugin) and meshes
batch.py     abstract batches from `config.data` (no data files read)
costs.py     analytic parameter counts, model FLOPs and collective traffic per step
dry_run.py   lower + compile the trainer's step; per-device bytes, FLOPs, step time
report.py    the report and the sweep table as text
targets/     GPU target-config text protos (GpuTargetConfigProto) for the CUDA compiler
"""
