#!/usr/bin/env bash
# Train one IWSLT'14 run with the paper's recipe (transformer_iwslt_de_en, 50k updates, fp16 on a GPU).
#   bash scripts/iwslt14/train.sh LANG METHOD [flags]   LANG: ar de es fa he it nl pl; METHOD: baseline intra kd self-distill
#   bash scripts/iwslt14/train.sh --smoke [METHOD]      tiny model, Multi30k subset, a few CPU updates
# Every setting is a flag or an INTRADIST_* variable (INTRADIST_LR=1e-3, INTRADIST_SEED=2, ...):
# see `bash scripts/iwslt14/train.sh --help`. Reads data-bin/iwslt14/LANG-en (data_prep/iwslt14.sh);
# writes checkpoints/iwslt14/LANG-en/METHOD-seedS/ with recipe.json; a rerun resumes.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
bash "$repo/scripts/setup.sh"
if [ "${1:-}" = "--smoke" ]; then
    shift
    exec "$repo/.venv/bin/intradist" train translation --smoke de "${1:-baseline}" "${@:2}"
fi
exec "$repo/.venv/bin/intradist" train translation "$@"
