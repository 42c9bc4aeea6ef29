#!/usr/bin/env bash
# Zero-shot cross-lingual transfer with the paper's XTREME recipe (docs/xtreme.md): fine-tune on
# English, score every language. train_panx.sh and train_tydiqa.sh call this with their task.
#
#   bash scripts/xtreme/run.sh TASK METHOD [--xlmr base|large] [train-xtreme flags]
#     TASK    panx    NER: max length 128, lr 2e-5, 10 epochs, best English dev F1 kept; F1 on each test set
#             tydiqa  QA: max length 384, doc stride 128, lr 3e-5, 15 epochs, 500 warm-up steps, weight
#                     decay 1e-4, last weights kept; SQuAD F1/EM on each dev set
#             both: AdamW, linear decay, batch 8 x 4 accumulated (XLM-R large: 2 x 16), fp16 on a GPU
#     METHOD  baseline            cross-entropy only
#             intra               + intra-distillation: K=3 passes, alpha=1 (the authors' example; set
#                                   INTRADIST_XTREME_ALPHA to change it), adaptive schedule p=5, q=10
#             self-distill        + KD from the baseline run of the same task and seed (trained first if missing)
#     --xlmr base|large   the encoder (default base): the hub's xlm-roberta-base / -large, downloaded by
#                         transformers on first use, or INTRADIST_XTREME_MODEL=DIR, a local model folder
#   Any further flag goes to train-xtreme and overrides the recipe (e.g. --max-train-examples 1000).
#
# Settings from the environment:
#   INTRADIST_XTREME_DATA=DIR   what intradist-prepare-xtreme wrote (default: data-bin/xtreme)
#   INTRADIST_XTREME_OUT=DIR    where runs go                        (default: checkpoints/xtreme)
#   INTRADIST_SEEDS="1 2 3"     seeds to run                         (default: 1; the paper: 1 2 3 4 5)
# Writes OUT/TASK/MODEL/METHOD-seedS/ (model, zero_shot.{json,md}, metrics.json), appends each run's
# record to OUT/results.jsonl and skips a run whose metrics.json exists. Then:
#   .venv/bin/python scripts/xtreme/results_table.py checkpoints/xtreme/results.jsonl
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
case "$task" in
    panx|tydiqa) ;;
    *) echo "run.sh: TASK $task: choose panx or tydiqa" >&2; exit 2 ;;
esac
case "$method" in
    baseline|intra|self-distill) ;;
    *) echo "run.sh: METHOD $method: choose baseline, intra or self-distill" >&2; exit 2 ;;
esac
size=base
if [ "${1:-}" = "--xlmr" ]; then
    size=${2:-}
    shift 2 || { echo "run.sh: --xlmr needs base or large" >&2; exit 2; }
fi
case "$size" in
    base) batch=(--batch-size 8 --gradient-accumulation 4) ;;
    large) batch=(--batch-size 2 --gradient-accumulation 16) ;;
    *) echo "run.sh: --xlmr $size: choose base or large" >&2; exit 2 ;;
esac

bash "$repo/scripts/setup.sh"
train_xtreme="$repo/.venv/bin/train-xtreme"
model=${INTRADIST_XTREME_MODEL:-xlm-roberta-$size}
model_name=$(basename "$model")
data=${INTRADIST_XTREME_DATA:-$repo/data-bin/xtreme}
out_root=${INTRADIST_XTREME_OUT:-$repo/checkpoints/xtreme}
intra=(--num-passes 3 --alpha "${INTRADIST_XTREME_ALPHA:-1}" --adaptive-alpha --alpha-p 5 --alpha-q 10)

# train NAME SEED FLAGS...: one run into OUT/TASK/MODEL/NAME-seedSEED unless it is already complete
train() {
    local name=$1 seed=$2
    shift 2
    local dir="$out_root/$task/$model_name/$name-seed$seed"
    if [ -f "$dir/metrics.json" ]; then
        echo "run.sh: $dir is complete; skipped"
        return
    fi
    mkdir -p "$(dirname "$dir")"
    echo "run.sh: $task $name seed $seed ($model) -> $dir"
    "$train_xtreme" --task "$task" --data-dir "$data" --model "$model" --out "$dir" --seed "$seed" \
        "${batch[@]}" "$@"
    "$repo/.venv/bin/python" -c 'import json, sys; print(json.dumps(json.load(open(sys.argv[1]))))' \
        "$dir/metrics.json" >> "$out_root/results.jsonl"
}

for seed in ${INTRADIST_SEEDS:-1}; do
    case "$method" in
        baseline) train baseline "$seed" "$@" ;;
        intra) train intra "$seed" "${intra[@]}" "$@" ;;
        self-distill)
            train baseline "$seed" "$@"
            train self-distill "$seed" --teacher "$out_root/$task/$model_name/baseline-seed$seed" "$@" ;;
    esac
done
