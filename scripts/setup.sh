#!/usr/bin/env bash
# Create (or update) this clone's own Python 3.11 environment at .venv/ (a folder, ignored by git)
# with the exact pins of requirements.txt and this clone installed editable (intradist[test]).
#
# Each clone has its own .venv and its own editable install, so a clone never runs another
# clone's code. What clones share is a package cache: uv keeps every downloaded wheel unpacked,
# and the fairseq-fixed wheel it compiles, in one cache per machine and hardlinks them into each
# .venv. Measured on 2 busy cores: the first build on a machine about 3.5 minutes (fairseq-fixed
# compiles from source, torch unpacks), a new clone after that 13 to 30 seconds (most of it the
# final import check), a rerun with nothing changed well under a second (a stamp). Should uv be
# impossible to install, it falls back to python -m venv + pip, with pip's wheel cache in the same
# cache folder: 6 minutes the first time, then 1.5 minutes per clone (each copies its packages).
#
# uv does not read pip's configuration, so the index settings that pip is configured with here
# (index-url, extra-index-url, find-links, constraint, trusted-host, cert, proxy: pip config
# files and PIP_* variables, read by pip's own option parser) are handed to uv, with pip's choice
# of the best version across all indexes.
#
#   INTRADIST_CACHE=DIR        the shared cache (default $XDG_CACHE_HOME/intradist, else
#                              ~/.cache/intradist): DIR/uv is uv's package cache, DIR/uv-VERSION
#                              the environment holding uv itself, DIR/pip pip's cache (fallback).
#                              Keep it on the clones' file system, or uv copies instead of linking.
#   INTRADIST_INSTALLER=pip    skip uv: python -m venv and pip (default: uv, pip if uv fails)
#   PYTHON=python3.11          the interpreter to build the environment from
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$repo"
python=${PYTHON:-python3.11}
uv_version=0.13.9

# The interpreter itself, also when PYTHON names one inside a virtual environment.
base_python=$("$python" -c 'import sys; print(sys._base_executable) if sys.version_info[:2] == (3, 11) else sys.exit(1)' 2>/dev/null) || {
    echo "setup.sh: needs Python 3.11 (set PYTHON=/path/to/python3.11); '$python' is missing or another version" >&2
    exit 2
}

venv="$repo/.venv"
stamp="$venv/.intradist-stamp"
# The stamp records what the environment was built from; its first part (interpreter, pins, clone)
# decides whether the environment is built anew, the last (package metadata) whether the editable
# install is redone.
environment_key="python=$base_python requirements=$(sha256sum requirements.txt | cut -c1-12) clone=$repo"
stamp_value="$environment_key setup.py=$(sha256sum setup.py | cut -c1-12)"

if [ -L .venv ]; then
    # Older setup.sh linked .venv to one environment in the cache that all clones shared.
    if [[ "$(basename "$(readlink .venv)")" == venv-py311-* ]] || [ -f .venv/.intradist-stamp ]; then
        rm .venv  # the link only; the folder it points to stays (other clones may still use it)
        echo "setup.sh: .venv linked to a shared environment; building this clone's own .venv instead"
    else
        echo "setup.sh: $repo/.venv is a link that setup.sh did not make (to $(readlink .venv)); remove it and run again" >&2
        exit 2
    fi
elif [ -e .venv ] && [ ! -f "$stamp" ]; then
    echo "setup.sh: $repo/.venv exists but setup.sh did not make it (no .intradist-stamp); move it away and run again" >&2
    exit 2
fi
previous=$(cat "$stamp" 2>/dev/null || true)
if [ "$previous" = "$stamp_value" ]; then
    exit 0
fi

if [ -n "${INTRADIST_CACHE:-}" ]; then cache=$INTRADIST_CACHE
elif [ -n "${XDG_CACHE_HOME:-}" ]; then cache="$XDG_CACHE_HOME/intradist"
elif [ -n "${HOME:-}" ]; then cache="$HOME/.cache/intradist"
else cache="${TMPDIR:-/tmp}/intradist-cache-$(id -u)"
fi
mkdir -p "$cache"
cache=$(cd "$cache" && pwd -P)

# pip as configured on some machines warns about every missing local index folder; keep real errors.
quiet_pip() {
    "$@" 2> >(grep -v "^WARNING: Location '.*' is ignored" >&2)
}

# uv itself lives in a small environment of its own in the cache, one per uv version; it is
# built beside its final place and moved there, so two clones setting up at once cannot mix.
uv_home="$cache/uv-$uv_version"
ensure_uv() {
    if "$uv_home/bin/uv" --version >/dev/null 2>&1; then return 0; fi
    local partial="$uv_home.partial-$$"
    if [ -e "$uv_home" ]; then  # a broken one: out of the way first
        mv -T "$uv_home" "$uv_home.broken-$$" 2>/dev/null && rm -rf "$uv_home.broken-$$"
    fi
    rm -rf "$partial"
    echo "setup.sh: installing uv $uv_version into $uv_home"
    if "$base_python" -m venv "$partial" \
        && quiet_pip "$partial/bin/python" -m pip install --quiet "uv==$uv_version" \
        && "$partial/bin/uv" --version >/dev/null; then
        mv -T "$partial" "$uv_home" 2>/dev/null || rm -rf "$partial"  # another setup.sh got there first
        "$uv_home/bin/uv" --version >/dev/null 2>&1
    else
        rm -rf "$partial"
        return 1
    fi
}

# pip's configured index settings as uv arguments (one a line), read by pip's own option parser
# so that config files, PIP_* variables and their precedence are pip's; "env:NAME=VALUE" lines
# are variables to set where they are not set yet.
pip_settings_for_uv() {
    "$uv_home/bin/python" - <<'PY'
from pip._internal.commands import create_command

options, _ = create_command("install").parse_args([])
lines = []
if options.no_index:
    lines.append("--no-index")
else:
    lines += ["--index-url", options.index_url]
    for url in options.extra_index_urls:
        lines += ["--extra-index-url", url]
for location in options.find_links:
    lines += ["--find-links", location]
if options.extra_index_urls or options.find_links:
    lines += ["--index-strategy", "unsafe-best-match"]  # pip's rule: the best version of any index
for constraints in options.constraints:
    lines += ["--constraints", constraints, "--build-constraints", constraints]
for host in options.trusted_hosts:
    lines += ["--allow-insecure-host", host]
if options.cert:
    lines.append(f"env:SSL_CERT_FILE={options.cert}")
if options.proxy:
    lines += [f"env:HTTPS_PROXY={options.proxy}", f"env:HTTP_PROXY={options.proxy}"]
if options.timeout and options.timeout > 30:
    lines.append(f"env:UV_HTTP_TIMEOUT={int(options.timeout)}")
print("\n".join(lines))
PY
}

installer=${INTRADIST_INSTALLER:-uv}
if [ "$installer" != uv ] && [ "$installer" != pip ]; then
    echo "setup.sh: INTRADIST_INSTALLER is '$installer'; use uv or pip" >&2
    exit 2
fi
uv_args=()
if [ "$installer" = uv ]; then
    if ! ensure_uv; then
        echo "setup.sh: could not install uv $uv_version; falling back to pip (slower: each clone copies its packages)" >&2
        installer=pip
    elif ! settings=$(pip_settings_for_uv); then
        echo "setup.sh: could not read pip's configuration for uv; falling back to pip" >&2
        installer=pip
    else
        while IFS= read -r line; do
            case $line in
                "") ;;
                env:*) name=${line#env:}; name=${name%%=*}
                       [ -n "${!name:-}" ] || export "${line#env:}" ;;
                *) uv_args+=("$line") ;;
            esac
        done <<< "$settings"
    fi
fi

# A new interpreter, new pins, a moved clone or an unfinished build: a new environment.
if [ -e "$venv" ] && [ "${previous% setup.py=*}" != "$environment_key" ]; then
    rm -rf "$venv"
fi
if [ ! -x "$venv/bin/python" ]; then
    echo "setup.sh: creating $venv with $installer, packages cached in $cache (the first time on a machine takes minutes: fairseq-fixed compiles)"
    if [ "$installer" = uv ]; then
        UV_PYTHON_DOWNLOADS=never "$uv_home/bin/uv" venv --quiet --python "$base_python" --cache-dir "$cache/uv" "$venv"
    else
        "$base_python" -m venv "$venv"
    fi
    echo "building $environment_key" > "$stamp"
fi

if [ "$installer" = uv ]; then
    # fairseq-fixed compiles C++ extensions against torch: build it with the pinned torch and numpy,
    # and file the built wheel in uv's cache under those pins, so new pins build it anew.
    build_key=$(grep -E '^(torch|numpy)==' requirements.txt | sha256sum | cut -c1-12)
    UV_PYTHON_DOWNLOADS=never "$uv_home/bin/uv" pip install --python "$venv/bin/python" --cache-dir "$cache/uv" \
        "${uv_args[@]}" --build-constraints requirements.txt \
        --config-settings-package "fairseq-fixed:intradist-built-against=$build_key" \
        -r requirements.txt -e ".[test]" pip || {  # pip too, as python -m venv would have it
        echo "setup.sh: uv could not install the pins (see above); run again, or INTRADIST_INSTALLER=pip bash scripts/setup.sh" >&2
        exit 1
    }
else
    quiet_pip "$venv/bin/python" -m pip install --quiet --cache-dir "$cache/pip" -r requirements.txt -e ".[test]" || {
        echo "setup.sh: pip could not install the pins (see above); run again once that is fixed" >&2
        exit 1
    }
fi

# From a neutral folder, so that only the installation can supply the imports.
check=$(cd / && "$venv/bin/python" - "$repo" 2>&1 <<'PY'
import importlib.util
import os
import sys

import fairseq, torch, torchvision  # noqa: E401,F401
import intradist, intradist.analysis  # noqa: E401

clone = os.path.realpath(sys.argv[1])
plugin = importlib.util.find_spec("intradist.user_dir")
places = {"intradist": intradist.__file__, "intradist.analysis": intradist.analysis.__file__,
          "intradist.user_dir": plugin.submodule_search_locations[0] if plugin else "(missing)"}
wrong = [f"{name} from {place}" for name, place in places.items()
         if not os.path.realpath(place).startswith(clone + os.sep)]
if wrong:
    sys.exit(f"setup.sh: not this clone's code ({clone}): " + ", ".join(wrong))
PY
) || {
    printf '%s\n' "$check" | tail -n 5 >&2
    echo "setup.sh: the environment in $venv does not import torch/torchvision/fairseq and this clone's intradist; remove it and run again" >&2
    exit 1
}
echo "$stamp_value" > "$stamp"
echo "setup.sh: ready ($venv, $installer, cache $cache)"
