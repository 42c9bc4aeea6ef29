#!/usr/bin/env bash
# The CPU study of docs/results.md: baseline vs intra-distillation (K=2, 3) on the shipped
# Multi30k De->En data, 3 seeds, equal updates and equal wall-clock time (about 2 hours on 2 cores).
#   bash scripts/cpu_study.sh [intradist study cpu flags]   (see --help; results in runs/cpu_study/)
# Rerunning resumes: finished trainings and evaluations are kept.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$repo/scripts/setup.sh"
exec "$repo/.venv/bin/intradist" study cpu "$@"
