#!/usr/bin/env bash
# The README's second command: the whole test suite on the CPU (installs what is missing first).
# Extra arguments go to pytest. pytest's "no tests collected" (exit 5) counts as a failure.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$repo/scripts/setup.sh"
cd "$repo"
status=0
"$repo/.venv/bin/python" -m pytest -q "$@" || status=$?
if [ "$status" -eq 5 ]; then
    echo "test.sh: pytest collected no tests; that is a failure" >&2
    exit 1
fi
exit "$status"
