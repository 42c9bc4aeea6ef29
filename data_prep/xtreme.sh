#!/usr/bin/env bash
# XTREME data of the zero-shot cross-lingual experiments, in plain formats:
#   OUT_DIR/panx/{lang}/{train,dev,test}.tsv   PAN-X NER, token<TAB>TAG (BIO), blank line after each sentence
#   OUT_DIR/tydiqa/{code}/dev.json             TyDiQA-GoldP v1.1 dev, SQuAD v1.1 JSON, ar bn en fi id ko ru sw te
#   OUT_DIR/tydiqa/en/train.json               its English training questions (zero-shot trains on English)
#   bash data_prep/xtreme.sh [OUT_DIR] [--tasks panx,tydiqa] [--languages en,de] [--panx-archive ZIP] [--archives DIR]
# OUT_DIR defaults to data-bin/xtreme. TyDiQA-GoldP is downloaded (and checked against its published
# SHA-256); PAN-X cannot be: download AmazonPhotos.zip by hand (run without --panx-archive for the
# steps) and pass --panx-archive. Reruns skip what is complete; an interrupted step leaves only
# *.partial behind.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
args=()
if [ $# -ge 1 ] && [[ "$1" != -* ]]; then
    args=(--out "$1")
    shift
fi
bash "$repo/scripts/setup.sh"
exec "$repo/.venv/bin/intradist" prepare xtreme "${args[@]}" "$@"
