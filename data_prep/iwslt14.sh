#!/usr/bin/env bash
# IWSLT'14 {ar,de,es,fa,he,it,nl,pl}->en as fairseq data-bins, as the authors' preprocess_iwslt14.sh
# (Xu, Koehn & Murray, EMNLP 2022): train.tags without metadata, Moses-tokenized, cleaned (ratio 1.5,
# 1-175 tokens), lowercased and detokenized; every 23rd line as valid; dev2010+dev2012+tst2010+
# tst2011+tst2012 as test, lowercased; one sentencepiece model (12,000, character coverage
# 0.99999995) learnt on every split, its whole vocabulary the dictionary of both languages
# (padding factor 1). One data-bin per pair in OUT_DIR/{src}-en.
#   bash data_prep/iwslt14.sh OUT_DIR [--pairs de,ar] [--vocab-size 12000] [--archives DIR] [--workers N]
# OUT_DIR=data-bin/iwslt14 is where intradist train translation looks by default.
# Downloads the WIT3 2014-01 archives into OUT_DIR/archives unless --archives DIR holds them (see
# --help for where to get them by hand). Reruns skip completed steps; an interrupted step leaves
# only *.partial behind.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ $# -lt 1 ] || [[ "$1" == -* ]]; then
    echo "usage: bash data_prep/iwslt14.sh OUT_DIR [intradist prepare iwslt14 flags]" >&2
    exit 2
fi
out=$1
shift
bash "$repo/scripts/setup.sh"
exec "$repo/.venv/bin/intradist" prepare iwslt14 --out "$out" "$@"
