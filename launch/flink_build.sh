#!/usr/bin/env bash
# Build a data set on an Apache Flink cluster: `auteur data build --runner flink`, the
# same Beam pipeline as `--runner direct` (auteur_jax/data/beam_build.py).
#
# Variables:
#   FLINK_MASTER  host:port of the Flink JobManager REST endpoint  (required)
#   STORIES       the stories JSONL (video paths the task managers can read)  (required)
#   OUT           output folder every task manager can write (shared)  (required)
#   PARALLELISM   parallel tasks                                   default 16
#   DRY_RUN=1     print the command instead of running it
# Usage: FLINK_MASTER=flink:8081 STORIES=/mnt/s.jsonl OUT=/mnt/tfr launch/flink_build.sh
set -euo pipefail
: "${FLINK_MASTER:?set FLINK_MASTER}" "${STORIES:?set STORIES}" "${OUT:?set OUT}"
cmd=(auteur data build --stories "${STORIES}" --config.data.dir="${OUT}" --runner flink
     --pipeline-option flink_master="${FLINK_MASTER}"
     --pipeline-option parallelism="${PARALLELISM:-16}"
     --pipeline-option environment_type=LOOPBACK "$@")
[[ " $* " == *" --config "* ]] || cmd+=(--config toy/data)
if [[ "${DRY_RUN:-0}" == 1 ]]; then printf '%q ' "${cmd[@]}"; echo; else "${cmd[@]}"; fi
