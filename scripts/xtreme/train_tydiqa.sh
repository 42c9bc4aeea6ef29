#!/usr/bin/env bash
# TyDiQA-GoldP, zero-shot from English: bash scripts/xtreme/train_tydiqa.sh METHOD [--xlmr base|large] [flags]
# (METHOD: baseline, intra, self-distill; configs/xtreme/tydiqa_*.yaml: the authors' train_qa.sh and
# run_squad.py, XLM-R base, 8 x 4 per update, lr 3e-5, 15 epochs, windows of 384 padded, doc stride 128
# as the step between windows, the divergence summed over every position; docs/fidelity/tydiqa.yaml.
# Seeds 1-5 by default; see scripts/xtreme/run.sh --help for the settings).
exec bash "$(dirname "${BASH_SOURCE[0]}")/run.sh" tydiqa "$@"
