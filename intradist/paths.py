"""Where the project's data lives: one resolver for the quick start, the tests and the scripts."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from intradist.errors import UserError

#: Environment variable that points the toolkit at another copy of the shipped corpora.
DATA_ENV_VAR = "INTRADIST_DATA"

REPO_ROOT = Path(__file__).resolve().parent.parent


def fairseq_plugin_folder() -> Path:
    """The fairseq plugin's folder, what ``--user-dir`` names: ``user_dir/`` of a clone, ``intradist/user_dir/`` installed.

    Located, not imported: fairseq imports the plugin from this folder as the top-level module
    ``user_dir``, and a second import as ``intradist.user_dir`` would register its criterions twice.
    """
    spec = importlib.util.find_spec("intradist.user_dir")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("intradist is installed without its fairseq plugin; reinstall it (pip install -e .)")
    return Path(list(spec.submodule_search_locations)[0])


def data_root() -> Path:
    """The folder holding the shipped corpora: ``$INTRADIST_DATA`` if set, else ``data/`` of the repository."""
    override = os.environ.get(DATA_ENV_VAR)
    return Path(override).expanduser().resolve() if override else REPO_ROOT / "data"


def corpus_dir(name: str) -> Path:
    """The folder of one shipped corpus (``multi30k``, ``glue/RTE``), checked to exist."""
    path = data_root() / name
    if not path.is_dir():
        raise UserError(
            f"{path}: corpus {name!r} not found; set {DATA_ENV_VAR} to the folder holding it "
            f"(the repository ships it under data/)"
        )
    return path


def output_folder(out: Path) -> Path:
    """``--out`` of a command that writes into a folder (made, or reused by a rerun): a file there is a user error."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a folder")
    return out
