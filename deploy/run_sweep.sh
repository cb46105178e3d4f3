#!/usr/bin/env bash
# Scheduled sweep: run from cron (or the Kubernetes CronJob in deploy/k8s/) on a machine that can
# reach the shared redun database and results root. Unchanged stages are cache hits, so a night
# with no new data or configs costs seconds; a new config or dataset trains only what is new.
#
#   crontab:  0 2 * * *  /opt/gpo-vae/deploy/run_sweep.sh rpe1 configs/sweeps/penalty.yaml >> /var/log/gpo-vae-sweep.log 2>&1
#
# Environment: GPO_VAE_RESULTS (shared results root, default ./results), REDUN_CONFIG (team mode:
# deploy/team, whose redun.ini takes the shared database from GPO_VAE_DB_URI; credentials in
# REDUN_DB_USERNAME / REDUN_DB_PASSWORD or ~/.pgpass), GPO_VAE_EXECUTOR (default | process |
# batch | k8s).
set -euo pipefail
dataset=${1:?usage: run_sweep.sh DATASET SWEEP_YAML}
sweep=${2:?usage: run_sweep.sh DATASET SWEEP_YAML}
cd "$(dirname "$0")/.."
exec redun run workflow.py sweep --dataset "$dataset" --sweep "$sweep" \
    --results-dir "${GPO_VAE_RESULTS:-results}" --executor "${GPO_VAE_EXECUTOR:-default}"
