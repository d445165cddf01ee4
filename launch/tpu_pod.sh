#!/usr/bin/env bash
# Run training on every worker of a TPU pod slice (one process per TPU VM host).
# JAX finds the slice's hosts by itself (config.distributed.mode=auto); each host reads
# its own shard files from the shared data directory (a GCS bucket or NFS path).
#
# Variables:
#   TPU_NAME    the TPU VM name                                   (required)
#   ZONE        its zone                                          (required)
#   PROJECT     GCP project                                       default: gcloud's
#   REPO_DIR    checkout on the workers                           default ~/auteur_jax
#   SETUP       command run first on every worker                 default: pip install -e .
#   DRY_RUN=1   print the gcloud command instead of running it
# Usage: TPU_NAME=v5p-64 ZONE=us-east5-a launch/tpu_pod.sh --config paper/director_7b \
#          --workdir /mnt/shared/runs/director [--config.k=v ...]
# The workdir must be a filesystem path every host sees (NFS / Filestore / gcsfuse).
set -euo pipefail
: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}"
REPO_DIR=${REPO_DIR:-'~/auteur_jax'}
SETUP=${SETUP:-'pip install -q -e .'}
args=$(printf '%q ' "$@")
remote="cd ${REPO_DIR} && ${SETUP} && auteur train ${args} --config.distributed.mode=auto"
cmd=(gcloud compute tpus tpu-vm ssh "${TPU_NAME}" --zone "${ZONE}" --worker=all
     --command "${remote}")
[[ -n "${PROJECT:-}" ]] && cmd+=(--project "${PROJECT}")
if [[ "${DRY_RUN:-0}" == 1 ]]; then printf '%q ' "${cmd[@]}"; echo; else "${cmd[@]}"; fi
