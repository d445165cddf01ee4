#!/usr/bin/env bash
# Simulate a multi-host run on this machine: N processes on 127.0.0.1, each with its own
# CPU devices, joined by jax.distributed (config.distributed.mode=explicit).
#
# Variables (all optional):
#   NUM_PROCESSES   processes (simulated hosts)           default 2
#   DEVICES         CPU devices per process               default 4
#   PORT            coordinator port on 127.0.0.1         default 12355
#   TIMEOUT         seconds before each process is killed default 3600
#   DRY_RUN=1       print the commands instead of running them
# Usage: launch/local.sh --config toy/dit --workdir runs/dit [--config.k=v ...]
set -euo pipefail
NUM_PROCESSES=${NUM_PROCESSES:-2}
DEVICES=${DEVICES:-4}
PORT=${PORT:-12355}
TIMEOUT=${TIMEOUT:-3600}
pids=()
for ((i = 0; i < NUM_PROCESSES; i++)); do
  cmd=(env XLA_FLAGS="--xla_force_host_platform_device_count=${DEVICES}" JAX_PLATFORMS=cpu
       AUTEUR_COORDINATOR="127.0.0.1:${PORT}" AUTEUR_NUM_PROCESSES="${NUM_PROCESSES}"
       AUTEUR_PROCESS_ID="${i}" timeout "${TIMEOUT}" auteur train "$@"
       --config.distributed.mode=explicit)
  if [[ "${DRY_RUN:-0}" == 1 ]]; then
    printf '%q ' "${cmd[@]}"; echo
  else
    "${cmd[@]}" > "local-process-${i}.log" 2>&1 &
    pids+=($!)
  fi
done
status=0
for pid in "${pids[@]}"; do wait "${pid}" || status=$?; done
[[ "${DRY_RUN:-0}" == 1 ]] || echo "logs: local-process-*.log (exit status ${status})"
exit "${status}"
