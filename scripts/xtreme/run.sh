#!/usr/bin/env bash
# Zero-shot cross-lingual transfer with the paper's XTREME recipes (docs/xtreme.md): fine-tune on
# English, score every language, once per seed. train_panx.sh and train_tydiqa.sh call this with their task.
#
#   bash scripts/xtreme/run.sh TASK METHOD [--xlmr base|large] [intradist train xtreme flags]
#     TASK    panx    NER: configs/xtreme/panx_{baseline,intra}.yaml (the authors' train_panx.sh:
#                     XLM-R large, 2 x 16 per update, lr 2e-5, 10 epochs, English dev F1 every 100
#                     updates, best kept; test F1 on each of 48 languages; docs/fidelity/panx.yaml)
#             tydiqa  QA: configs/xtreme/tydiqa_{baseline,intra}.yaml
#     METHOD  baseline            the task's baseline config (cross-entropy only)
#             intra               the task's intra config (K = 3 passes, the X-divergence as the authors'
#                                   scripts compute it; INTRADIST_XTREME_ALPHA=A sets --alpha A)
#             self-distill        the baseline config + KD from the baseline run of the same task and seed
#                                   (trained first if missing)
#     --xlmr base|large   another encoder than the config's, with the authors' batch for it (large:
#                         2 x 16, base: 8 x 4, train_panx.sh:45-51)
#   The config's model is a hub name that transformers downloads on first use; INTRADIST_XTREME_MODEL=DIR
#   gives a local model folder instead. Any further flag goes to intradist train xtreme and overrides the config
#   (e.g. --max-train-examples 1000).
#
# Settings from the environment:
#   INTRADIST_XTREME_DATA=DIR   what intradist prepare xtreme wrote (default: data-bin/xtreme)
#   INTRADIST_XTREME_OUT=DIR    where runs go                        (default: checkpoints/xtreme)
#   INTRADIST_SEEDS="1 2"       seeds to run        (default: 1 2 3 4 5, the paper's five, as the authors' README says)
# Writes OUT/TASK/MODEL/METHOD-seedS/ (model, zero_shot.{json,md}, metrics.json), appends each run's
# record to OUT/results.jsonl and skips a run whose metrics.json exists. Then, mean ± std over the seeds:
#   .venv/bin/intradist results xtreme checkpoints/xtreme/results.jsonl
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
    baseline|intra) config="$repo/configs/xtreme/${task}_$method.yaml" ;;
    self-distill) config="$repo/configs/xtreme/${task}_baseline.yaml" ;;
    *) echo "run.sh: METHOD $method: choose baseline, intra or self-distill" >&2; exit 2 ;;
esac
encoder=()
if [ "${1:-}" = "--xlmr" ]; then
    size=${2:-}
    shift 2 || { echo "run.sh: --xlmr needs base or large" >&2; exit 2; }
    case "$size" in
        base) encoder=(--model xlm-roberta-base --batch-size 8 --gradient-accumulation 4) ;;
        large) encoder=(--model xlm-roberta-large --batch-size 2 --gradient-accumulation 16) ;;
        *) echo "run.sh: --xlmr $size: choose base or large" >&2; exit 2 ;;
    esac
fi
if [ -n "${INTRADIST_XTREME_MODEL:-}" ]; then
    encoder+=(--model "$INTRADIST_XTREME_MODEL")
fi
model=$(awk -F': *' '$1 == "model" { print $2 }' "$config")
for ((i = 0; i < ${#encoder[@]}; i++)); do
    if [ "${encoder[$i]}" = "--model" ]; then model=${encoder[$((i + 1))]}; fi
done
model_name=$(basename "$model")

bash "$repo/scripts/setup.sh"
train_xtreme=("$repo/.venv/bin/intradist" train xtreme)
data=${INTRADIST_XTREME_DATA:-$repo/data-bin/xtreme}
out_root=${INTRADIST_XTREME_OUT:-$repo/checkpoints/xtreme}
alpha=()
if [ -n "${INTRADIST_XTREME_ALPHA:-}" ]; then alpha=(--alpha "$INTRADIST_XTREME_ALPHA"); fi

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
    echo "run.sh: $task $name seed $seed ($model, $(basename "$config")) -> $dir"
    "${train_xtreme[@]}" --config "$config" --data-dir "$data" --out "$dir" --seed "$seed" "${encoder[@]}" "$@"
    "$repo/.venv/bin/python" -c 'import json, sys; print(json.dumps(json.load(open(sys.argv[1]))))' \
        "$dir/metrics.json" >> "$out_root/results.jsonl"
}

for seed in ${INTRADIST_SEEDS:-1 2 3 4 5}; do
    case "$method" in
        baseline) train baseline "$seed" "$@" ;;
        intra) train intra "$seed" "${alpha[@]}" "$@" ;;
        self-distill)
            train baseline "$seed" "$@"
            train self-distill "$seed" --teacher "$out_root/$task/$model_name/baseline-seed$seed" "$@" ;;
    esac
done
