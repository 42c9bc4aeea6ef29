#!/usr/bin/env bash
# The README's second command: the whole test suite on the CPU (installs what is missing first).
# Extra arguments go to pytest. pytest's "no tests collected" (exit 5) counts as a failure.
#
# The tests run in INTRADIST_TEST_WORKERS worker processes (default 2, one per core of the
# machines CI uses; 1 runs them in this process), the tests of a file that share a module-scoped
# fixture in one worker (tests/conftest.py), and with one OpenMP thread per process unless
# OMP_NUM_THREADS says otherwise (two workers at two threads each would contend for two cores).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$repo/scripts/setup.sh"
cd "$repo"
workers=${INTRADIST_TEST_WORKERS:-2}
parallel=()
if [ "$workers" != 1 ]; then
    parallel=(-n "$workers" --dist loadgroup)
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
fi
status=0
"$repo/.venv/bin/python" -m pytest -q "${parallel[@]}" "$@" || status=$?
if [ "$status" -eq 5 ]; then
    echo "test.sh: pytest collected no tests; that is a failure" >&2
    exit 1
fi
exit "$status"
