#!/usr/bin/env bash
# TyDiQA-GoldP, zero-shot from English: bash scripts/xtreme/train_tydiqa.sh METHOD [--xlmr base|large] [flags]
# (METHOD: baseline, intra, self-distill; see scripts/xtreme/run.sh --help for the recipe and settings).
exec bash "$(dirname "${BASH_SOURCE[0]}")/run.sh" tydiqa "$@"
