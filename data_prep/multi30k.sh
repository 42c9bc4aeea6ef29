#!/usr/bin/env bash
# Multi30k De->En as a fairseq data-bin: lowercase, joint sentencepiece, joined dictionary.
#   bash data_prep/multi30k.sh OUT_DIR [--vocab-size 1000] [more intradist prepare translation flags]
# Reads $INTRADIST_DATA/multi30k (default: the copy shipped in data/multi30k); without it, downloads
# the corpus (checked against the shipped copy) into ~/.cache/intradist/prepare/multi30k. Reuses OUT_DIR when
# it was prepared with the same settings; an interrupted run leaves only OUT_DIR.partial behind.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ $# -lt 1 ] || [[ "$1" == -* ]]; then
    echo "usage: bash data_prep/multi30k.sh OUT_DIR [intradist prepare translation flags]" >&2
    exit 2
fi
out=$1
shift
bash "$repo/scripts/setup.sh"
exec "$repo/.venv/bin/intradist" prepare translation --download --out "$out" "$@"
