"""The house's floors (docs/architecture.md), checked against the code.

- Static: no module imports (at module level or inside a function) a module of a floor above its own.
- Per module, in a child forked from an interpreter that has loaded only the third-party libraries
  (numpy, pandas, torch, transformers): every library module imports; the analysis, the
  non-fairseq trainers and the ground floor leave fairseq unimported; importing any library module
  installs nothing process-wide (no excepthook, no root-logger handler).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional

import pytest

REPO = Path(__file__).resolve().parent.parent

#: From the ground up; a module may import its own floor and those below, never one above. A name
#: is a package with everything in it, or with a trailing ``$`` that one module alone.
FLOORS = [
    ("ground", ["intradist$", "intradist.errors", "intradist.paths", "intradist.provenance", "intradist.downloads",
                "intradist.results", "intradist.losses", "intradist.checkpoint_safety", "intradist.fidelity",
                "intradist.settings", "intradist.run_folder", "intradist.fairseq_dictionaries",
                "intradist.balance_statistics", "intradist.live_balance"]),
    ("fairseq plugin", ["user_dir"]),
    ("analysis", ["intradist.analysis"]),
    ("trainers and data preparation", ["intradist.trainers", "intradist.prepare"]),
    ("recipes and studies", ["intradist.recipes", "intradist.studies"]),
    ("commands", ["intradist.cli", "intradist.__main__"]),
]  # fmt: skip

#: Floors whose modules must not import fairseq when imported: fairseq loads only where it is used.
WITHOUT_FAIRSEQ = ("ground", "analysis", "trainers and data preparation")


def floor_of(module: str) -> Optional[int]:
    """The floor index of a project module (the longest matching prefix), None for other packages."""
    best, best_length = None, -1
    for index, (_, prefixes) in enumerate(FLOORS):
        for prefix in prefixes:
            exact = prefix.endswith("$")
            prefix = prefix.rstrip("$")
            matches = module == prefix or (not exact and module.startswith(prefix + "."))
            if matches and len(prefix) > best_length:
                best, best_length = index, len(prefix)
    return best


#: Folder of the clone -> the name its modules are imported by (setup.py's package_dir): the
#: plugin by the name fairseq gives it, its folder's.
IMPORT_NAMES = {"intradist": "intradist", "analysis": "intradist.analysis", "user_dir": "user_dir"}


def project_modules() -> Dict[str, Path]:
    modules = {}
    for folder, name in IMPORT_NAMES.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            parts = [name, *path.relative_to(REPO / folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def imported_modules(path: Path, module: str) -> List[str]:
    """Every module a file imports, at any depth of its code; relative imports resolved."""
    names = []
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names += [base] + [f"{base}.{alias.name}" for alias in node.names]
    return names


def test_every_project_module_has_a_floor():
    assert [m for m in project_modules() if floor_of(m) is None] == []


def test_no_module_imports_a_floor_above_its_own():
    violations = []
    for module, path in project_modules().items():
        own = floor_of(module)
        for name in imported_modules(path, module):
            target = floor_of(name)
            if target is not None and target > own:
                violations.append(f"{module} ({FLOORS[own][0]}) imports {name} ({FLOORS[target][0]})")
    assert violations == []


def test_code_imports_each_package_by_its_installed_name():
    """``analysis`` only as ``intradist.analysis``; the plugin never as ``intradist.user_dir`` (a second copy)."""
    sources = dict(project_modules())
    sources.update({".".join(p.relative_to(REPO).with_suffix("").parts): p
                    for folder in ("tests", "benchmarks", "scripts") for p in (REPO / folder).rglob("*.py")})
    wrong = [f"{module} imports {name}" for module, path in sources.items() for name in imported_modules(path, module)
             if name == "analysis" or name.startswith(("analysis.", "intradist.user_dir"))]
    assert wrong == []


def test_intradist_is_the_one_installed_top_level_name():
    """What an install writes to site-packages: ``intradist`` and nothing that another package could also own."""
    import setuptools  # noqa: F401  (puts setuptools' distutils, which run_setup belongs to, in place)
    from distutils.core import run_setup

    distribution = run_setup(str(REPO / "setup.py"), stop_after="init")
    assert {name.split(".")[0] for name in distribution.packages} == {"intradist"}
    folders = {name: distribution.package_dir.get(name, name.replace(".", "/")) for name in distribution.packages}
    assert folders["intradist.analysis"] == "analysis" and folders["intradist.user_dir"] == "user_dir"
    assert all((REPO / folder / "__init__.py").is_file() for folder in folders.values())
    assert {p.parent.relative_to(REPO).as_posix() for folder in IMPORT_NAMES for p in (REPO / folder).rglob("__init__.py")} \
        == set(folders.values())  # fmt: skip


def test_the_floor_check_can_fail(tmp_path):
    """A ground module importing a trainer is caught."""
    bad = tmp_path / "errors.py"
    bad.write_text("def f():\n    from intradist.trainers import glue\n")
    names = imported_modules(bad, "intradist.errors")
    assert any(floor_of(name) > floor_of("intradist.errors") for name in names if floor_of(name) is not None)


#: Run once per half of the modules: loads the third-party libraries the project builds on (checked
#: to import no fairseq and to install nothing), then imports each module in a forked child, which
#: starts from that state, and prints one JSON line per module: what importing it changed.
PROBE = """
import importlib, json, logging, os, sys
def seen(hook, handlers):
    return {"fairseq": "fairseq" in sys.modules, "excepthook": sys.excepthook is not hook,
            "root_handlers": len(logging.getLogger().handlers) - len(handlers)}
hook, handlers = sys.excepthook, list(logging.getLogger().handlers)
import numpy, pandas, torch, transformers, transformers.trainer
print(json.dumps({"third-party libraries": seen(hook, handlers)}), flush=True)
for module in sys.argv[1:]:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            importlib.import_module(module)
            result = seen(hook, handlers)
        except BaseException as error:
            result = {"error": f"{type(error).__name__}: {error}"}
        os.write(write, json.dumps({module: result}).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as child:
        line = child.read()
    os.waitpid(pid, 0)
    print(line, flush=True)
"""


def probe(modules: List[str]) -> Dict[str, Dict[str, object]]:
    completed = subprocess.run([sys.executable, "-c", PROBE, *modules], capture_output=True, text=True, cwd=REPO,
                               timeout=600)  # fmt: skip
    assert completed.returncode == 0, completed.stderr.strip().splitlines()[-1:]
    results: Dict[str, Dict[str, object]] = {}
    for line in completed.stdout.splitlines():
        if line.startswith("{"):
            results.update(json.loads(line))
    return results


LIBRARY_MODULES = sorted(m for m in project_modules()  # __main__ runs the command when imported
                         if floor_of(m) is not None and not m.startswith("user_dir") and not m.endswith("__main__"))


@pytest.fixture(scope="module")
def probes() -> Dict[str, Dict[str, object]]:
    with ThreadPoolExecutor(max_workers=2) as pool:
        halves = list(pool.map(probe, [LIBRARY_MODULES[0::2], LIBRARY_MODULES[1::2]]))
    base = halves[0].pop("third-party libraries")
    assert base == halves[1].pop("third-party libraries") == {"fairseq": False, "excepthook": False, "root_handlers": 0}
    results = {**halves[0], **halves[1]}
    failed = {m: seen["error"] for m, seen in results.items() if "error" in seen}
    assert failed == {} and sorted(results) == LIBRARY_MODULES
    return results


def test_fairseq_loads_only_where_it_is_used(probes):
    loaded = [m for m, seen in probes.items() if seen["fairseq"] and FLOORS[floor_of(m)][0] in WITHOUT_FAIRSEQ]
    assert loaded == []


def test_importing_a_library_module_installs_nothing_process_wide(probes):
    changed = {m: seen for m, seen in probes.items() if seen["excepthook"] or seen["root_handlers"]}
    assert changed == {}
