#!/usr/bin/env bash
# The reproduction study's eight-model vision grid (intra-distillation x self-distillation x label
# smoothing), as its notebooks compute it: configs/vision/pet_*.yaml, teachers first, each written to
# the runs/vision/pet-ROW folder its config names (a finished row is skipped, so a rerun resumes).
#   bash scripts/vision/grid.sh [intradist train vision flags, e.g. --data PET_DIR --device cuda:1]
#   bash scripts/vision/grid.sh --demo [intradist train vision-grid flags]
# The paper recipe needs a GPU (ResNet-50, 224-pixel images, 80 epochs; the notebooks took 18 GPU hours
# on a T4 for all eight), Oxford-IIIT Pet in data/oxford-iiit-pet (or --data) and torchvision's
# ResNet-50 ImageNet weights in the torch hub cache (downloaded there when the machine has network).
# Do not pass --out: the students find their teachers at the paths in their configs.
# --demo: `intradist train vision-grid` on scikit-learn's digits (ResNet-20, our generic objective, CPU minutes).
# Every setting beside the notebooks' lines: docs/fidelity/vision.yaml; docs/vision.md.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
bash "$repo/scripts/setup.sh"
cd "$repo"
if [[ "${1:-}" == "--demo" ]]; then
    shift
    exec "$repo/.venv/bin/intradist" train vision-grid "$@"
fi
for row in baseline ls intra intra-ls sd sd-ls intra-sd intra-sd-ls; do
    config="configs/vision/pet_$row.yaml"
    out=$(awk -F': ' '$1 == "out" { print $2 }' "$config")
    if [[ -f "$out/metrics.json" ]]; then
        echo "grid.sh: $out exists, skipping row $row" >&2
        continue
    fi
    echo "grid.sh: row $row ($config)" >&2
    "$repo/.venv/bin/intradist" train vision --config "$config" "$@"
done
