#!/usr/bin/env bash
# Score one IWSLT'14 run: beam 5, length penalty 1, sentencepiece decoding, sacreBLEU (signature printed).
#   bash scripts/iwslt14/evaluate.sh LANG CHECKPOINT_DIR [flags]   appends a JSON line to results/iwslt14.jsonl
#   bash scripts/iwslt14/evaluate.sh --smoke                        scores the run of `train.sh --smoke`
# Then: .venv/bin/intradist results translation results/iwslt14.jsonl
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
bash "$repo/scripts/setup.sh"
if [ "${1:-}" = "--smoke" ]; then
    exec "$repo/.venv/bin/intradist" evaluate run "$@"
fi
if [ $# -lt 2 ] || [[ "$1" == -* ]]; then
    echo "usage: bash scripts/iwslt14/evaluate.sh LANG CHECKPOINT_DIR [intradist evaluate run flags] | --smoke" >&2
    exit 2
fi
lang=$1 checkpoint_dir=$2
shift 2
exec "$repo/.venv/bin/intradist" evaluate run "$checkpoint_dir" --lang "$lang" "$@"
