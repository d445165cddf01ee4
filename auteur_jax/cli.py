"""The `auteur` command. Thin: each sub-command parses its flags and calls one function.

auteur data toy              write the toy-kitchen raw data set (videos + annotations)
auteur data import-youcook2  YouCook2 annotations (+ clip captions) -> stories JSONL
auteur data import-howto     HowTo100M ASR / HowToCaption + clip captions -> stories JSONL
auteur data tokenizer        train a small BPE tokenizer on a stories file
auteur data build            stories + videos -> TFRecord shards (data.*; --runner: pool, Beam)
auteur data batches          iterate the grain pipeline of a config, print shapes + rate
auteur data verify           check every record's CRCs; a data set's shards against dataset.json
auteur data inspect          a built data set's counts and a sample story; any TFRecord's features
auteur encode                add VAE latents / visual embeddings to clip TFRecords
auteur sample                render the stories of a prompts JSONL (resumable batch job)
auteur demo                  the toy kitchen end to end: data, 4 trainings, 2 stories, metrics
auteur runs summary WORKDIR  a run's last values, best eval, MFU and goodput
auteur ablate                the paper's ablation tables on the toy kitchen -> REPORT.md (resumable)
auteur eval fvd              Frechet video distance between two folders of videos (clip | videomae)
auteur convert import|export|reshard|inspect
                             HF / diffusers safetensors <-> sharded orbax checkpoints
auteur plan                  AOT-compile a config's train step for a TPU / GPU topology:
                             per-device memory vs HBM, FLOPs, roofline step time
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from auteur_jax import host_memory, paths


def _rule(args):
  from auteur_jax.data.matching import MatchRule

  return MatchRule(iou=args.iou, loose_iou=args.loose_iou, max_start_diff=args.max_start_diff)


def _write_import(stories, report, out: str) -> None:
  from auteur_jax.data.schema import write_stories

  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  write_stories(out, stories)
  print(f"{out}: {report.summary()}")
  for vid, why in report.dropped_videos:
    print(f"  dropped {vid}: {why}")


def cmd_import_youcook2(args) -> None:
  from auteur_jax.data import importers

  names = importers.read_task_names(args.recipes) if args.recipes else None
  stories, report = importers.import_youcook2(
    args.annotations, args.captions, args.video_dir, _rule(args), names
  )
  _write_import(stories, report, args.out)


def cmd_import_howto(args) -> None:
  from auteur_jax.data import importers

  tasks = importers.read_task_names(args.tasks) if args.tasks else None
  stories, report = importers.import_howto(
    args.asr, args.captions, args.video_dir, _rule(args), args.split, tasks, args.default_task
  )
  _write_import(stories, report, args.out)


def cmd_toy(args) -> None:
  from auteur_jax.data import toy_kitchen

  summary = toy_kitchen.generate_dataset(
    args.out,
    args.videos,
    seed=args.seed,
    size=args.size,
    fps=args.fps,
    noise=args.noise,
    val_fraction=args.val_fraction,
    workers=args.workers,
    preview=args.preview,
  )
  print(json.dumps(summary, indent=1))


def cmd_tokenizer(args) -> None:
  from auteur_jax.data.schema import read_stories
  from auteur_jax.data.tokenizer import train_bpe

  texts = [
    t
    for s in read_stories(args.stories)
    for t in [s.task] + [x for c in s.clips for x in (c.action, c.caption)]
  ]
  tok = train_bpe(texts, args.vocab_size, out_dir=args.out)
  print(f"{args.out}: BPE tokenizer, {tok.vocab_size} tokens, trained on {len(texts)} texts")


def cmd_build(args) -> None:
  from auteur_jax.data.build import FrameSpec, build
  from auteur_jax.data.pipeline import data_config

  d = data_config(args.config.data)
  spec = FrameSpec(d.fps, d.size, d.jpeg_quality)
  if args.runner == "pool":
    if args.pipeline_option:
      sys.exit("auteur: --pipeline-option needs a Beam --runner (direct, dataflow, flink, spark)")
    summary = build(args.stories, d.dir, spec, num_shards=d.num_shards, workers=d.build_workers)
  else:
    from auteur_jax.data import beam_build

    try:
      summary = beam_build.build(
        args.stories,
        d.dir,
        spec,
        num_shards=d.num_shards,
        runner=args.runner,
        pipeline_options=args.pipeline_option,
      )
    except beam_build.RunnerError as e:
      sys.exit(f"auteur: {e}")
  for split, s in summary["splits"].items():
    print(
      f"{d.dir}/{split}: {s['stories']} stories, {s['clips']} clips, "
      f"{len(s['clip_shards'])} clip shards"
    )


def cmd_batches(args) -> None:
  import time

  from auteur_jax.data import pipeline

  d = args.config.data
  it = iter(pipeline.dataset_from_config(d))
  start = time.perf_counter()
  for i in range(args.num):
    batch = next(it)
    if i == 0:
      first = time.perf_counter()
      for k, v in batch.items():
        print(f"  {k}: {v.shape} {v.dtype}")
  rate = (args.num - 1) * d.batch_size / max(time.perf_counter() - first, 1e-9)
  print(
    f"{args.num} batches of {d.batch_size} {d.kind} from {d.dir}/{d.split}; first after "
    f"{first - start:.2f} s, then {rate:.1f} {d.kind}/s"
  )
  it.close()


def cmd_verify(args) -> None:
  from auteur_jax.data import inventory, tfrecord

  total, bad = 0, 0
  for pattern in args.paths:
    if paths.is_file(paths.join(pattern, "dataset.json")):  # Files vs its lists, counts.
      for problem in inventory.check_data_set(pattern):
        bad += 1
        print(f"BAD  {problem}")
    for path in tfrecord.list_shards(pattern):
      try:
        n = tfrecord.verify_file(path)
        total += n
        print(f"ok   {path}: {n} records")
      except tfrecord.TFRecordError as e:
        bad += 1
        print(f"BAD  {e}")
  print(f"{total} records verified, {bad} bad files or data-set mismatches")
  if bad:
    sys.exit(1)


def _inspect_file(path: str, limit: int) -> None:
  """One TFRecord file of tf.train.Examples: its record count and each feature's kind,
  value count and bytes (per record: the first `limit`; then the union over all)."""
  from auteur_jax.data import examples, tfrecord

  seen: dict[str, set] = {}
  n = 0
  for n, record in enumerate(tfrecord.iter_records(path), 1):
    feats = examples.describe(record, f"{path}: record {n}")
    for name, desc in feats.items():
      seen.setdefault(name, set()).add(desc[0])
    if n <= limit:
      print(f"record {n}: {len(record)} bytes")
      for name, (kind, count, size) in feats.items():
        print(f"  {name:<24} {kind:<6} {count:>6} values {size:>10} bytes")
  print(
    f"{path}: {n} records; features "
    + ", ".join(f"{k} ({'/'.join(sorted(v))})" for k, v in sorted(seen.items()))
  )


def cmd_inspect(args) -> None:
  from auteur_jax.data import examples, pipeline, tfrecord

  if paths.is_file(args.dir):  # One shard, ours or anyone's.
    _inspect_file(args.dir, args.records)
    return
  meta_path = paths.join(args.dir, "dataset.json")
  if not paths.is_file(meta_path):
    sys.exit(f"{meta_path}: not found; is {args.dir} a folder written by `auteur data build`?")
  with paths.open_file(meta_path) as f:
    meta = json.load(f)
  print(f"{args.dir}: frames {meta['frames']}, schema_version {meta['schema_version']}")
  for split, s in sorted(meta["splits"].items()):
    print(
      f"  {split}: {s['stories']} stories, {s['clips']} clips, "
      f"{len(s['clip_shards'])} clip shards, {len(s['story_shards'])} story shards"
    )
  split = args.split or sorted(meta["splits"])[0]
  for path in pipeline.split_files(args.dir, split, "stories"):
    for record in tfrecord.iter_records(path):
      story = examples.decode_story(record, path)
      print(
        f"sample story {story['video_id']} ({split}): {story['task']}, {story['num_steps']} steps"
      )
      for t, (a, c) in enumerate(zip(story["actions"], story["captions"])):
        print(f"  step {t}: [{story['start'][t]:.1f}-{story['end'][t]:.1f} s] {a}\n          {c}")
      return


def cmd_train(args) -> None:
  from auteur_jax.train.trainer import train

  if args.profile_steps:
    from auteur_jax.config import ConfigError

    try:
      steps = tuple(int(x) for x in args.profile_steps.split(","))
    except ValueError:
      raise ConfigError(
        f"--profile-steps {args.profile_steps!r}: expected A,B (two steps)"
      ) from None
    args.config.train.profile_steps = steps
  last = train(args.config, args.workdir, max_steps=args.max_steps)
  print(
    f"{args.workdir}: stopped at step {last['step']}"
    + (" (SIGTERM: checkpoint saved)" if last.get("stopped_by_signal") else "")
    + (f", loss {last['loss']:.4f}" if "loss" in last else "")
  )


def cmd_sample(args) -> None:
  from auteur_jax.sample.batch import ERRORS, run_batch
  from auteur_jax.train import run_config

  if args.director:
    args.config.sample.director = args.director
  run_config.check_sample(args.config)
  r = run_batch(args.config, args.prompts, args.out, redo_changed=args.redo_changed)
  print(
    f"{r['out_dir']}: {len(r['rendered'])} rendered, {r['skipped']} already done, "
    f"{r['errors']} bad prompt lines or changed items "
    f"({os.path.join(r['out_dir'], ERRORS)})"
    + (f" [process {r['process']} of {r['processes']}]" if r["processes"] > 1 else "")
  )
  print(json.dumps({k: r[k] for k in ("process", "rendered")}))


def cmd_ablate(args) -> None:
  from auteur_jax.ablate.experiment import ablate

  seeds = args.seeds if args.seeds is not None else (1 if args.quick else 3)
  done = ablate(args.table, seeds=seeds, quick=args.quick, out=args.out)
  for tid, s in done.items():
    verdicts = [r["verdict"] for c in s["claims"] for r in c["metrics"].values()]
    counts = ", ".join(f"{verdicts.count(v)} {v}" for v in sorted(set(verdicts)))
    print(f"table {tid}: {len(s['seeds'])} seeds; claim x metric verdicts: {counts}")
  print(f"{os.path.join(args.out, 'REPORT.md')}")


def cmd_runs_summary(args) -> None:
  from auteur_jax.train.metrics import summarize

  try:
    s = summarize(args.workdir)
  except ValueError as e:  # No rows yet.
    sys.exit(f"auteur: {e}")
  last = s["last"]
  keys = [k for k in ("loss", "lr", "grad_norm", "step_time", "examples_per_s") if k in last]
  print(f"{args.workdir}: step {s['steps']}; " + ", ".join(f"{k} {last[k]:.4g}" for k in keys))
  for k, (v, step) in sorted(s["best_eval"].items()):
    print(f"  best {k}: {v:.4g} at step {step}")
  if s["mfu"] is not None:
    print(f"  MFU {100 * s['mfu']:.1f} % ({s['tflops_per_device']:.3g} TFLOP/s per device)")
  if s["goodput"]:
    shares = ", ".join(f"{k} {100 * v:.1f} %" for k, v in s["goodput"].items() if v is not None)
    print(f"  wall time: {shares}")


def cmd_demo(args) -> None:
  from auteur_jax.demo.pipeline import run

  m = run(
    args.out,
    "quick" if args.quick else args.plan,
    from_scratch=args.from_scratch,
    director=args.director,
  )
  t = m["targets"]
  print(
    f"{args.out}: metrics.json, contact_sheet.png, "
    + ", ".join(f"{s['id']}.mp4/.gif" for s in m["stories"])
    + f" in {m['timings_s']['total']:.0f} s"
  )
  print(
    f"  director step top-1 {_pct(t['director_step_top1'])}; state agreement "
    f"{_pct(t['state_agreement'])}; CLIP-T given text {m['clip_t']['given_text']:.3f} "
    f"(true clips {m['clip_t']['true_clips']:.3f})"
  )
  if "language" in m:
    lang = m["language"]
    kf, ident = lang["keyframes"], lang["identity_consistency"]
    v = lang["video_keyframe_vs_embedding"]["given_text"]
    print(
      f"  language director: keyframe state agreement {_pct1(kf['rolling']['objects'])} "
      f"(no rolling context {_pct1(kf['no_rolling']['objects'])}); identity consistency "
      f"{_pct1(ident['rolling']['consistent'])} (no rolling context "
      f"{_pct1(ident['no_rolling']['consistent'])}); video state agreement given text: "
      f"keyframe {_pct1(v['keyframe'])}, embedding {_pct1(v['embedding'])}"
    )


def _pct1(x) -> str:
  return "n/a" if x is None else f"{100 * x:.1f} %"


def _pct(target: dict) -> str:
  # One decimal, so that 79.9 % does not print as the 80 % target.
  return (
    ", ".join(
      f"{k} {100 * v:.1f} %"
      for k, v in target.items()
      if k not in ("target", "met") and v is not None
    )
    + f" (target {100 * target['target']:.0f} %)"
  )


def cmd_encode(args) -> None:
  from auteur_jax.sample.encode import encode_dataset
  from auteur_jax.train import run_config

  run_config.check_encode(args.config)
  r = encode_dataset(args.config, max_shards=args.max_shards)
  print(
    f"encoded {r['encoded_shards']} clip shards ({r['skipped_shards']} skipped) -> "
    f"{r['out_dir']}: {r['field']} {r['shape']} {r['dtype']}"
    + ("" if r["complete"] else "; more shards to do (run again)")
  )


def cmd_fvd(args) -> None:
  from auteur_jax.eval.fvd import fvd_of_folders

  d = fvd_of_folders(
    args.real, args.fake, args.features, checkpoint=args.checkpoint, frames=args.frames
  )
  print(f"{d:.4f}")


def cmd_convert(args) -> None:
  from auteur_jax.convert import exporter, importer, reshard
  from auteur_jax.parallel.mesh import parse_mesh

  mesh = parse_mesh(args.mesh) if getattr(args, "mesh", None) else None
  if args.convert_command == "import":
    r = importer.import_weights(
      args.family, args.src, args.dst, config=args.config, mesh_shape=mesh, dtype=args.dtype
    )
    print(
      f"{r['dst']}: {r['family']}, {r['params']} params, {r['bytes']:,} bytes under "
      f"{r['prefix']}/ on mesh {r['mesh']}"
    )
    for line in r["config_differences"]:
      print(f"  note: {line}")
    if r["fresh"]:
      print(f"  not in the checkpoint (the model initialises them): {r['fresh']}")
  elif args.convert_command == "export":
    r = exporter.export_weights(
      args.family,
      args.src,
      args.dst,
      dtype=args.dtype,
      max_shard_bytes=int(args.max_shard_gb * 1e9),
      ema=args.ema,
    )
    print(f"{r['dst']}: {r['tensors']} tensors, {r['bytes']:,} bytes in {len(r['files'])} files")
  elif args.convert_command == "reshard":
    assert mesh is not None  # --mesh is required by the parser.
    r = reshard.reshard(
      args.src, args.dst, mesh, drop_optimizer=args.drop_optimizer, dtype=args.dtype
    )
    print(
      f"{r['dst']}: step {r['step']}, {r['leaves']} arrays, {r['bytes']:,} bytes on mesh "
      f"{r['mesh']}"
    )
  else:
    print(reshard.inspect(args.ckpt))


def cmd_plan(args) -> None:
  import jax

  from auteur_jax.parallel.mesh import parse_mesh
  from auteur_jax.plan import dry_run, report, topology

  # Compile-only: no local accelerator (or CUDA) needed. (jax.config's flags are dynamic
  # attributes its stubs do not declare.)
  if not jax.config.jax_platforms:  # type: ignore[attr-defined]
    jax.config.update("jax_platforms", "cpu")
  try:
    topo = topology.get_topology(args.topology, args.num_slices)
    mesh = parse_mesh(args.mesh) if args.mesh else None
    name = os.path.splitext(os.path.basename(args.config_path))[0]
    if args.sweep:
      meshes = [parse_mesh(m) for m in args.meshes.split(";")] if args.meshes else None
      remats = args.remats.split(",") if args.remats else None
      print(f"sweep {name} on {args.topology}:")
      attentions = [
        (a, cp)
        for a in (args.attentions.split(",") if args.attentions else [])
        for cp in (args.context_parallel.split(",") if args.context_parallel else ["xla"])
      ]
      results = dry_run.sweep(
        args.config,
        topo,
        meshes or ([mesh] if mesh else None),
        remats,
        attentions=attentions,
      )
      plans = [r for r in results if isinstance(r, dry_run.Plan)]
      print(report.sweep_table(results))
      if plans and plans[0].fits:
        print("best:\n" + report.report(plans[0], name))
    else:
      plans = [dry_run.dry_run(args.config, topo, mesh, args.remat, args.save_executable)]
      print(report.report(plans[0], name))
      if args.save_executable:
        print(f"executable: {args.save_executable} (+ .hlo.txt)")
  except (topology.PlanUnavailable, ValueError) as e:
    sys.exit(f"auteur plan: {e}")
  if args.json:
    report.write_json(args.json, plans)
  if not any(p.fits for p in plans):
    sys.exit(1)  # Nothing fits: a script can stop before booking the hardware.


def _add_rule_flags(p: argparse.ArgumentParser) -> None:
  p.add_argument("--iou", type=float, default=0.5, help="match when IoU > this")
  p.add_argument(
    "--loose-iou",
    type=float,
    default=0.25,
    help="or when IoU > this and the start/end conditions hold (appendix: 0.2)",
  )
  p.add_argument("--max-start-diff", type=float, default=5.0, help="seconds")


def _user_errors() -> tuple[type[Exception], ...]:
  from auteur_jax.ablate.tables import AblateError
  from auteur_jax.checkpoint.errors import WeightError
  from auteur_jax.config import ConfigError
  from auteur_jax.data.examples import ExampleError
  from auteur_jax.data.importers import AnnotationError
  from auteur_jax.data.inventory import DataSetError
  from auteur_jax.data.schema import SchemaError
  from auteur_jax.data.tfrecord import TFRecordError
  from auteur_jax.data.video_io import VideoError
  from auteur_jax.eval.video_features import FeatureError
  from auteur_jax.eval.video_sets import VideoSetError
  from auteur_jax.train.errors import NonFiniteLoss

  return (
    AblateError,
    ConfigError,
    SchemaError,
    AnnotationError,
    TFRecordError,
    ExampleError,
    VideoError,
    FileNotFoundError,
    FileExistsError,
    WeightError,
    NonFiniteLoss,
    DataSetError,
    FeatureError,
    VideoSetError,
  )


def parser() -> argparse.ArgumentParser:
  ap = argparse.ArgumentParser(
    prog="auteur", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  top = ap.add_subparsers(dest="command", required=True)
  data = top.add_parser("data", help="data sets: import, build, verify, inspect").add_subparsers(
    dest="data_command", required=True
  )

  p = data.add_parser("toy", help="write the toy-kitchen raw data set")
  p.add_argument("--videos", type=int, required=True)
  p.add_argument("--out", required=True)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--size", type=int, default=64, help="frame side in pixels (multiple of 16)")
  p.add_argument("--fps", type=float, default=8.0)
  p.add_argument(
    "--noise",
    type=float,
    default=0.0,
    help="ASR-like jitter of action times, as a fraction of the clip length",
  )
  p.add_argument("--val-fraction", type=float, default=0.2)
  p.add_argument("--workers", type=int, default=0, help="processes; 0 = all cores")
  p.add_argument("--preview", action="store_true", help="also write preview.png")
  p.set_defaults(fn=cmd_toy)

  p = data.add_parser("import-youcook2", help="YouCook2 annotations -> stories JSONL")
  p.add_argument("--annotations", required=True, help="youcookii_annotations_trainval.json")
  p.add_argument("--captions", help="clip-caption JSONL {video_id, start, end, caption}")
  p.add_argument("--video-dir", help="folder of the videos")
  p.add_argument("--recipes", help="CSV 'recipe_type,name' for dish names")
  p.add_argument("--out", required=True, help="stories JSONL to write")
  _add_rule_flags(p)
  p.set_defaults(fn=cmd_import_youcook2)

  p = data.add_parser(
    "import-howto", help="HowTo100M ASR / HowToCaption + clip captions -> stories JSONL"
  )
  p.add_argument(
    "--asr",
    required=True,
    help="actions: ASR JSON {video_id: {start, end, text}}, or HowToCaption parquet (a file "
    "or a folder of shards) / JSON / JSONL with video_id and description",
  )
  p.add_argument("--captions", required=True, help="clip-caption JSONL")
  p.add_argument("--video-dir")
  p.add_argument("--split", default="train", choices=("train", "val", "test"))
  p.add_argument("--tasks", help="CSV 'video_id,task'")
  p.add_argument("--default-task", default="cooking", help="task of videos not in --tasks")
  p.add_argument("--out", required=True)
  _add_rule_flags(p)
  p.set_defaults(fn=cmd_import_howto)

  p = data.add_parser("tokenizer", help="train a BPE tokenizer on a stories file's texts")
  p.add_argument("--stories", required=True)
  p.add_argument("--vocab-size", type=int, default=2048)
  p.add_argument("--out", required=True, help="folder (loads with Tokenizer.load)")
  p.set_defaults(fn=cmd_tokenizer)

  p = data.add_parser("build", help="stories + videos -> TFRecord shards in config.data.dir")
  p.add_argument("--config", required=True, help="e.g. toy/data")
  p.add_argument("--stories", required=True)
  p.add_argument(
    "--runner",
    choices=["pool", "direct", "prism", "dataflow", "flink", "spark"],
    default="pool",
    help="pool: a process pool on this machine; the others run the Apache Beam pipeline "
    "(data/beam_build.py, the beam extra): direct locally, dataflow / flink / spark with "
    "their --pipeline-option; prism cannot run offline",
  )
  p.add_argument(
    "--pipeline-option",
    action="append",
    default=[],
    metavar="K=V",
    help="a Beam pipeline option (repeatable), e.g. direct_num_workers=2, project=P",
  )
  p.set_defaults(fn=cmd_build)

  p = data.add_parser("batches", help="iterate a config's grain pipeline")
  p.add_argument("--config", required=True, help="e.g. toy/data[:stories]")
  p.add_argument("--num", type=int, default=10, help="batches to read")
  p.set_defaults(fn=cmd_batches)

  p = data.add_parser("verify", help="check every record's length and data CRCs")
  p.add_argument("paths", nargs="+", help="files, folders or globs")
  p.set_defaults(fn=cmd_verify)

  p = data.add_parser(
    "inspect", help="a built data set's counts and a sample story, or any TFRecord file's features"
  )
  p.add_argument("dir", help="a folder written by `auteur data build`, or one .tfrecord file")
  p.add_argument("--split")
  p.add_argument("--records", type=int, default=2, help="records listed in full (one file)")
  p.set_defaults(fn=cmd_inspect)

  p = top.add_parser("train", help="train a model (resumes from --workdir's checkpoints)")
  p.add_argument("--config", required=True, help="e.g. toy/dit")
  p.add_argument("--workdir", required=True, help="checkpoints, metrics.jsonl, tensorboard/")
  p.add_argument("--max-steps", type=int, help="stop at this step (default: config.train.steps)")
  p.add_argument(
    "--profile-steps",
    help="A,B: trace steps A..B into WORKDIR/tensorboard (TensorBoard's profile plugin, "
    "Perfetto) = config.train.profile_steps",
  )
  p.set_defaults(fn=cmd_train)

  p = top.add_parser("encode", help="add VAE latents / visual embeddings to clip TFRecords")
  p.add_argument("--config", required=True, help="e.g. toy/vae (config.encode.*)")
  p.add_argument("--max-shards", type=int, help="stop after this many clip shards")
  p.set_defaults(fn=cmd_encode)

  p = top.add_parser("sample", help="render stories (director -> DiT -> VAE) from prompts")
  p.add_argument("--config", required=True, help="e.g. toy/sample")
  p.add_argument("--prompts", required=True, help='JSONL: {"id", "task", "num_steps"} lines')
  p.add_argument("--out", required=True, help="output folder (a rerun resumes it)")
  p.add_argument(
    "--redo-changed",
    action="store_true",
    help="redo finished items whose prompt or sampling settings changed "
    "(default: keep them and report them in errors.jsonl)",
  )
  p.add_argument(
    "--director",
    choices=("interleaved", "language"),
    help="config.sample.director: interleaved (clips from the director's visual states) or "
    "language (keyframes drawn by the keyframe renderer, clips by the keyframe DiT)",
  )
  p.set_defaults(fn=cmd_sample)

  p = top.add_parser(
    "demo", help="the toy kitchen end to end -> OUT/ videos, contact sheet, metrics.json"
  )
  p.add_argument("--out", default="demo_out", help="output folder (work/ and runs/ inside)")
  p.add_argument(
    "--plan",
    default="default",
    choices=("default", "long", "longer", "quick"),
    help="default: shipped models (minutes); long: VAE + DiT trained here; "
    "longer: the shipped DiT trained on (see README for both); quick: tiny "
    "data and steps (CI, ~3 min)",
  )
  p.add_argument("--quick", action="store_true", help="the same as --plan quick")
  p.add_argument(
    "--director",
    default="interleaved",
    choices=("interleaved", "language"),
    help="interleaved: clips from the director's visual states; language: keyframes drawn "
    "by the keyframe renderer, clips by the keyframe DiT, plus the keyframe metrics",
  )
  p.add_argument(
    "--from-scratch",
    action="store_true",
    help="retrain every model (default: use the shipped toy checkpoints)",
  )
  p.set_defaults(fn=cmd_demo)

  p = top.add_parser(
    "ablate", help="the paper's ablation tables on the toy kitchen -> OUT/REPORT.md"
  )
  p.add_argument(
    "--table",
    nargs="+",
    default=["all"],
    help="3 | 4 | 5 | 6 | 7 | 13 | all (several allowed)",
  )
  p.add_argument("--seeds", type=int, default=None, help="seeds per variant (default 3; --quick 1)")
  p.add_argument(
    "--quick", action="store_true", help="2 variants, a few steps: checks the machinery (CI)"
  )
  p.add_argument("--out", default="ablate_out", help="output folder (resumable: rerun to go on)")
  p.set_defaults(fn=cmd_ablate)

  runs = top.add_parser("runs", help="training runs' metrics").add_subparsers(
    dest="runs_command", required=True
  )
  p = runs.add_parser(
    "summary", help="a run's last values, best eval, MFU and goodput (metrics.jsonl)"
  )
  p.add_argument("workdir", help="the run's --workdir")
  p.set_defaults(fn=cmd_runs_summary)

  ev = top.add_parser("eval", help="metrics on folders of videos").add_subparsers(
    dest="eval_command", required=True
  )
  p = ev.add_parser("fvd", help="Frechet video distance of two folders; prints it")
  p.add_argument(
    "--real", required=True, help="folder of videos: .mp4 / .gif / .npy uint8 [T,H,W,3]"
  )
  p.add_argument("--fake", required=True, help="folder of videos, the same frame size")
  p.add_argument(
    "--features",
    default="clip",
    help="clip (our CLIP vision tower, default the shipped toy one) or videomae "
    "(eval/video_features.py)",
  )
  p.add_argument(
    "--checkpoint",
    help="clip: a clip run or converted clip_vision checkpoint (default: the toy CLIP); "
    "videomae: `auteur convert import --family videomae` output (required)",
  )
  p.add_argument(
    "--frames", type=int, help="frames per video, evenly spaced (default: all / the model's)"
  )
  p.set_defaults(fn=cmd_fvd)

  families = (
    "llama",
    "qwen2",
    "wan_dit",
    "wan_vae",
    "clip_vision",
    "siglip_vision",
    "clip_text",
    "t5",
    "umt5",
    "videomae",
  )  # convert/families.py (not imported to parse)
  conv = top.add_parser(
    "convert", help="HF / diffusers weights <-> sharded orbax checkpoints"
  ).add_subparsers(dest="convert_command", required=True)
  p = conv.add_parser("import", help="safetensors folder -> orbax checkpoint (params only)")
  p.add_argument("--family", required=True, choices=families)
  p.add_argument("--src", required=True, help="model folder: config.json + *.safetensors")
  p.add_argument("--dst", required=True, help="checkpoint folder to create")
  p.add_argument("--config", help="run config: shapes, mesh, rules and where the params go")
  p.add_argument("--mesh", help="e.g. data=1,fsdp=8 (default: the config's, else fsdp=all)")
  p.add_argument("--dtype", help="params dtype, e.g. bfloat16 (default: the config's / source)")
  p.set_defaults(fn=cmd_convert)
  p = conv.add_parser("export", help="orbax checkpoint -> HF / diffusers safetensors folder")
  p.add_argument("--family", required=True, choices=families)
  p.add_argument("--src", required=True, help="converted checkpoint or training run")
  p.add_argument("--dst", required=True, help="folder to create")
  p.add_argument("--dtype", help="tensor dtype (default: as stored)")
  p.add_argument("--max-shard-gb", type=float, default=5.0, help="safetensors shard limit")
  p.add_argument(
    "--ema", action="store_true", help="a training run's EMA weights (train.ema_decay > 0)"
  )
  p.set_defaults(fn=cmd_convert)
  p = conv.add_parser("reshard", help="restore onto another mesh and save again")
  p.add_argument("--src", required=True)
  p.add_argument("--dst", required=True)
  p.add_argument("--mesh", required=True, help="e.g. data=2,fsdp=4")
  p.add_argument("--drop-optimizer", action="store_true", help="keep the model params only")
  p.add_argument("--dtype", help="cast floating arrays, e.g. bfloat16")
  p.set_defaults(fn=cmd_convert)
  p = conv.add_parser("inspect", help="names, shapes, dtypes, shardings, bytes")
  p.add_argument("ckpt")
  p.set_defaults(fn=cmd_convert)
  p = top.add_parser("plan", help="AOT-compile the train step for a TPU / GPU topology")
  p.add_argument("--config", required=True, help="e.g. paper/director_7b")
  p.add_argument(
    "--topology",
    required=True,
    help="CHIP:AxBxC: v4 / v5e / v5p / v6e slices (v5p:8x8x8), h100 / h200 "
    "SLICESxHOSTSxGPUS (h100:1x4x8)",
  )
  p.add_argument("--num-slices", type=int, default=1, help="TPU slices joined by DCN")
  p.add_argument("--mesh", help="e.g. data=1,fsdp=64,tensor=8 (default: config.mesh.shape)")
  p.add_argument("--remat", help="remat policy of the model (default: the config's)")
  p.add_argument("--sweep", action="store_true", help="try meshes x remat policies, ranked")
  p.add_argument(
    "--meshes", help="sweep meshes separated by ';' (default: fsdp with tensor 1, 2, 4, 8)"
  )
  p.add_argument("--remats", help="sweep remat policies separated by ',' (default: all)")
  p.add_argument(
    "--attentions",
    help="sweep the DiT's config.model.attention values separated by ',' "
    "(full, blockwise, splash, cudnn; default: the config's)",
  )
  p.add_argument(
    "--context-parallel",
    help="with --attentions: config.model.context_parallel values separated by ',' "
    "(xla, ring, all_to_all; default xla)",
  )
  p.add_argument("--save-executable", help="write the serialized executable (+ .hlo.txt)")
  p.add_argument("--json", help="also write the plan(s) as JSON")
  p.set_defaults(fn=cmd_plan)
  return ap


def main(argv: Sequence[str] | None = None) -> None:
  """Parses the command line; `--config.key=value` items override the loaded config."""
  try:  # First: before JAX's threads allocate (see host_memory).
    host_memory.retain_freed_memory()
  except ValueError as e:
    sys.exit(f"auteur: {e}")
  from absl import flags

  from auteur_jax.config import load_config

  USER_ERRORS = _user_errors()
  flags.FLAGS.mark_as_parsed()  # grain's worker processes read absl flags.
  ap = parser()
  args, rest = ap.parse_known_args(argv)
  overrides = [r for r in rest if r.startswith("--config.")]
  unknown = [r for r in rest if not r.startswith("--config.")]
  if unknown:
    ap.error(f"unrecognized arguments: {' '.join(unknown)}")
  if overrides and not isinstance(getattr(args, "config", None), str):
    ap.error(f"{overrides[0]}: this command takes no --config")
  try:
    if isinstance(getattr(args, "config", None), str):
      args.config_path = args.config
      args.config = load_config(args.config, overrides)
    args.fn(args)
  except USER_ERRORS as e:  # Bad input: the message names the file / key; no traceback.
    sys.exit(f"auteur: {type(e).__name__}: {e}")


if __name__ == "__main__":
  main()
