#!/usr/bin/env bash
# The parameter-balance study on images (docs/studies/): round 0, R rounds of self-distillation and
# intra-distillation with the torchvision trainer; test accuracy and sensitivities of each model on
# the same test batches; OUT/study.md, study.json, study.png, analysis/.
#
#   bash scripts/studies/vision_rounds.sh [intradist study balance vision flags]
#     default   scikit-learn's digits, ResNet-20, 3 rounds, 40 epochs each, K=3, alpha=5 adaptive (CPU, minutes)
#     on a GPU  --data PET_DIR --analysis-data PET_TEST_IMAGE_FOLDER --pretrained-weights RESNET50.pth
#               --epochs 30 --out runs/studies/pet-rounds   (Oxford-IIIT Pet, as intradist train vision --data)
# .venv/bin/intradist study balance vision --help lists every flag.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
case "${1:-}" in -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; exit 0 ;; esac
bash "$repo/scripts/setup.sh"
cd "$repo"
exec "$repo/.venv/bin/intradist" study balance vision "$@"
