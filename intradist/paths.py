"""Where the project's data lives: one resolver for the quick start, the tests and the scripts."""

from __future__ import annotations

import os
from pathlib import Path

from intradist.errors import UserError

#: Environment variable that points the toolkit at another copy of the shipped corpora.
DATA_ENV_VAR = "INTRADIST_DATA"

REPO_ROOT = Path(__file__).resolve().parent.parent


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
