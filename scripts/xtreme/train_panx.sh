#!/usr/bin/env bash
# XTREME PAN-X NER, zero-shot from English: bash scripts/xtreme/train_panx.sh METHOD [--xlmr base|large] [flags]
# (METHOD: baseline, intra, self-distill; configs/xtreme/panx_*.yaml, seeds 1-5 by default; see
# scripts/xtreme/run.sh --help for the settings).
exec bash "$(dirname "${BASH_SOURCE[0]}")/run.sh" panx "$@"
