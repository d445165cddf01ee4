#!/usr/bin/env bash
# Build a data set on Google Cloud Dataflow: `auteur data build --runner dataflow`, the
# same Beam pipeline as `--runner direct` (auteur_jax/data/beam_build.py). The workers get
# this package as a wheel built here first (pip wheel -> dist/, --extra_packages).
#
# Variables:
#   PROJECT     GCP project                                        (required)
#   REGION      Dataflow region                                    (required)
#   TEMP        gs:// folder for Dataflow's temporary / staging files (required)
#   STORIES     the stories JSONL (with video paths the workers can read)  (required)
#   OUT         output folder every worker can write (shared filesystem)   (required)
#   WORKERS     max workers                                        default 32
#   MACHINE     worker machine type                                default n2-standard-8
#   WHEEL       the package wheel for the workers                  default: built into dist/
#   DRY_RUN=1   print the commands instead of running them
# Usage: PROJECT=p REGION=us-central1 TEMP=gs://b/tmp STORIES=/mnt/s.jsonl OUT=/mnt/tfr \
#          launch/dataflow_build.sh [--config toy/data] [--config.k=v ...]
set -euo pipefail
: "${PROJECT:?set PROJECT}" "${REGION:?set REGION}" "${TEMP:?set TEMP}"
: "${STORIES:?set STORIES}" "${OUT:?set OUT}"
cmd=(auteur data build --stories "${STORIES}" --config.data.dir="${OUT}" --runner dataflow
     --pipeline-option project="${PROJECT}" --pipeline-option region="${REGION}"
     --pipeline-option temp_location="${TEMP}"
     --pipeline-option max_num_workers="${WORKERS:-32}"
     --pipeline-option machine_type="${MACHINE:-n2-standard-8}"
     --pipeline-option extra_packages="${WHEEL:-dist/auteur_jax-py3-none-any.whl}" "$@")
[[ " $* " == *" --config "* ]] || cmd+=(--config toy/data)
wheel=(python -m pip wheel --no-deps -q -w dist .)
if [[ "${DRY_RUN:-0}" == 1 ]]; then
  printf '%q ' "${wheel[@]}"; echo
  printf '%q ' "${cmd[@]}"; echo
else
  "${wheel[@]}"
  WHEEL=$(ls -t dist/auteur_jax-*.whl | head -1)
  cmd=("${cmd[@]/extra_packages=*/extra_packages=${WHEEL}}")
  "${cmd[@]}"
fi
