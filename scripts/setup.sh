#!/usr/bin/env bash
# Create (or reuse) the project's Python 3.11 environment at .venv/ and install the exact pins.
#
# The environment itself lives in a cache outside the clone, keyed by requirements.txt, and
# .venv is a link to it: a fresh clone on a machine that already built it is ready in seconds.
#   INTRADIST_VENV_CACHE=DIR   where to keep environments (default $XDG_CACHE_HOME/intradist,
#                              else ~/.cache/intradist)
#   INTRADIST_VENV_CACHE=      (empty) build a plain .venv/ inside the clone instead
#   PYTHON=python3.11          the interpreter to build it from
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
python=${PYTHON:-python3.11}

if ! command -v "$python" >/dev/null 2>&1 || ! "$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    echo "setup.sh: needs Python 3.11 (set PYTHON=/path/to/python3.11); '$python' is missing or another version" >&2
    exit 2
fi

requirements_key=$(sha256sum requirements.txt | cut -c1-12)
if [ -n "${XDG_CACHE_HOME:-}" ]; then default_cache="$XDG_CACHE_HOME/intradist"
elif [ -n "${HOME:-}" ]; then default_cache="$HOME/.cache/intradist"
else default_cache=""  # nowhere to cache: a plain .venv inside the clone
fi
cache=${INTRADIST_VENV_CACHE-$default_cache}
if [ -n "$cache" ]; then
    venv="$cache/venv-py311-$requirements_key"
    if [ ! -L .venv ] || [ "$(readlink .venv)" != "$venv" ]; then
        if [ -e .venv ] && [ ! -L .venv ]; then
            echo "setup.sh: $repo/.venv is a folder, not the cached environment; remove it or set INTRADIST_VENV_CACHE=" >&2
            exit 2
        fi
        ln -sfn "$venv" .venv
    fi
else
    venv="$repo/.venv"
fi

# The stamp records what the environment was built from: pins, package metadata and this clone.
stamp_value="$requirements_key $(sha256sum setup.py | cut -c1-12) $repo"
stamp="$venv/.intradist-stamp"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$stamp_value" ]; then
    exit 0
fi

# pip as configured on some machines warns about every missing local index folder; keep real errors.
pip_install() {
    "$venv/bin/pip" install --quiet "$@" 2> >(grep -v "^WARNING: Location '.*' is ignored" >&2)
}

if [ ! -x "$venv/bin/python" ]; then
    echo "setup.sh: creating $venv (first time: torch, and fairseq-fixed compiled from source, about 5 minutes)"
    "$python" -m venv "$venv"
fi
if [ -f "$venv/.requirements-installed" ] && [ "$(cat "$venv/.requirements-installed")" = "$requirements_key" ]; then
    # Same pins, another clone or changed package metadata: only re-point the editable install.
    pip_install --no-deps -e .
else
    pip_install -r requirements.txt
    pip_install -e .
    echo "$requirements_key" > "$venv/.requirements-installed"
fi
"$venv/bin/python" -c 'import torch, torchvision, fairseq, user_dir' 2>/dev/null || {
    echo "setup.sh: the environment in $venv does not import torch/fairseq/user_dir; remove it and run again" >&2
    exit 1
}
echo "$stamp_value" > "$stamp"
echo "setup.sh: ready ($venv)"
