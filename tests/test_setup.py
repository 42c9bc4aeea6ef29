"""scripts/setup.sh: two clones set up one after the other each import their own code.

Each clone gets its own ``.venv`` with its own editable install, the third-party packages coming
from the machine's shared package cache. The subprocesses inherit this run's environment, so
they use the same cache root (``INTRADIST_CACHE``, else ``$XDG_CACHE_HOME/intradist``, else
``~/.cache/intradist``) as the ``setup.sh`` that built the environment running these tests:
warm, each clone takes 15 to 30 seconds; cold, the first takes about 3.5 minutes (fairseq-fixed
compiles). The clones hold this checkout's last commit, with its working copy of setup.sh.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Dict

import pytest

REPO = Path(__file__).resolve().parent.parent
SETUP_TIMEOUT_S = 1800  # a cold cache: torch unpacks and fairseq-fixed compiles

WHERE = """
import importlib.util, json
import intradist, intradist.analysis
print(json.dumps({"intradist": intradist.__file__, "intradist.analysis": intradist.analysis.__file__,
                  "intradist.user_dir": importlib.util.find_spec("intradist.user_dir").submodule_search_locations[0]}))
"""


def python311() -> str:
    """What setup.sh will build from: ``$PYTHON`` or ``python3.11``; empty when there is none."""
    return os.environ.get("PYTHON") or shutil.which("python3.11") or ""


def clean_environment() -> Dict[str, str]:
    """This run's environment (cache root, pip's settings) without what points Python at this checkout."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    own_bin = str(REPO / ".venv" / "bin")
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != own_bin)
    return env


def inside(path: str, folder: Path) -> bool:
    return Path(os.path.realpath(path)).is_relative_to(folder.resolve())


@pytest.mark.skipif(not python311(), reason="setup.sh needs Python 3.11 (python3.11 or $PYTHON)")
@pytest.mark.skipif(shutil.which("git") is None or not (REPO / ".git").exists(), reason="needs git and a git checkout")
def test_two_clones_set_up_one_after_the_other_each_import_their_own_code(tmp_path):
    env = clean_environment()
    clones = {name: tmp_path / name for name in ("a", "b")}
    seconds = {}
    for name, clone in clones.items():
        subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True, env=env)
        shutil.copy2(REPO / "scripts" / "setup.sh", clone / "scripts" / "setup.sh")  # the one under test
        start = time.monotonic()
        done = subprocess.run(["bash", "scripts/setup.sh"], cwd=clone, env=env, capture_output=True, text=True,
                              timeout=SETUP_TIMEOUT_S)  # fmt: skip
        seconds[name] = round(time.monotonic() - start, 1)
        assert done.returncode == 0, f"setup.sh in clone {name} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
        venv = clone / ".venv"
        assert venv.is_dir() and not venv.is_symlink() and (venv / ".intradist-stamp").is_file()
    print(f"setup.sh seconds per clone: {seconds}")

    # Each clone's interpreter, from a folder of neither, imports that clone's folders.
    for name, clone in clones.items():
        done = subprocess.run([str(clone / ".venv" / "bin" / "python"), "-c", WHERE], cwd=tmp_path, env=env,
                              capture_output=True, text=True, check=True)  # fmt: skip
        places = json.loads(done.stdout.strip().splitlines()[-1])
        wrong = {module: place for module, place in places.items() if not inside(place, clone)}
        assert wrong == {}, f"clone {name} imports another clone's code: {wrong}"

    # An edit in clone a reaches clone a's console script, and only it.
    marker = "intradist imported from"
    init_a = clones["a"] / "intradist" / "__init__.py"
    with open(init_a, "a", encoding="utf-8") as init:
        init.write(f"\nprint({marker!r}, __file__)\n")
    printed = {name: subprocess.run([str(clone / ".venv" / "bin" / "intradist"), "--help"], cwd=tmp_path, env=env,
                                    capture_output=True, text=True, check=True).stdout
               for name, clone in clones.items()}  # fmt: skip
    assert f"{marker} {init_a.resolve()}" in printed["a"], printed["a"][:500]
    assert marker not in printed["b"], printed["b"][:500]

    # Nothing changed: a rerun checks the stamp and returns at once.
    start = time.monotonic()
    subprocess.run(["bash", "scripts/setup.sh"], cwd=clones["b"], env=env, check=True, capture_output=True)
    assert time.monotonic() - start < 10

