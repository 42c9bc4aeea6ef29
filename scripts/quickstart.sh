#!/usr/bin/env bash
# The README's first command: baseline vs intra-distillation on the shipped Multi30k data.
# Installs what is missing (scripts/setup.sh), then runs `intradist quickstart` with your flags
# (see `bash scripts/quickstart.sh --help`). Results land in runs/quickstart/.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$repo/scripts/setup.sh"
exec "$repo/.venv/bin/intradist" quickstart "$@"
