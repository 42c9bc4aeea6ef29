#!/usr/bin/env bash
# The parameter-balance study on translation (docs/studies/): round 0 (the baseline), R rounds of
# self-distillation, each taught by the previous round, and one intra-distillation model; BLEU of
# each, Taylor sensitivities of each on the same validation batches (raw and loss-normalized),
# and one report that checks the paper's claims: OUT/study.md, study.json, study.png, analysis/.
#
#   bash scripts/studies/self_distill_rounds.sh [intradist study balance translation flags]
#     default   Multi30k De->En (shipped), 2+2-layer transformer, 2 rounds, 8,000 updates per model,
#               intra-distillation K=3, alpha=0.3, the intra model trained beside the rounds
#               (about 1.5-2 hours on 2 CPU cores; docs/studies/ has the measured time)
#     --dataset iwslt14 --pair de   the paper's IWSLT'14 recipe on data-bin/iwslt14/de-en (make it with
#               bash data_prep/iwslt14.sh; on a GPU add --fp16 and e.g. --updates 50000 --alpha 5 --adaptive-alpha)
#     --out DIR (default runs/studies/self-distill-rounds); a rerun reuses the models that finished.
# .venv/bin/intradist study balance translation --help lists every flag.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
case "${1:-}" in -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; exit 0 ;; esac
bash "$repo/scripts/setup.sh"
cd "$repo"
exec "$repo/.venv/bin/intradist" study balance translation "$@"
