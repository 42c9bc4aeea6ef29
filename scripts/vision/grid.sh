#!/usr/bin/env bash
# The reproduction's eight-model vision grid: intra-distillation (K=3, alpha=5, adaptive p=5 q=10)
# x self-distillation (students taught by the matching teacher) x label smoothing (0.1), with the
# reproduction's recipe (AdamW, batch 60, warm-up + inverse sqrt, 80 epochs, best validation NLL).
#   bash scripts/vision/grid.sh [--data digits|PATH] [--out DIR] [train-vision grid flags]
# Defaults: --data digits (scikit-learn's handwritten digits, ResNet-20) --out runs/vision-grid.
# Writes OUT/seedS/CELL/ (model.pt, metrics.json, history.csv), OUT/grid.json and OUT/grid.md (the
# NLL table). A rerun resumes: finished cells are read back. All flags: `... grid.sh --help`; docs/vision.md.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
bash "$repo/scripts/setup.sh"
exec "$repo/.venv/bin/train-vision" grid "$@"
