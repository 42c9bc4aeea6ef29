"""The files of ``intradist prepare xtreme`` that both tasks share: UTF-8 sources, whole writes, the manifest.

Every file is written under a ``.partial`` name and renamed when complete, so an interrupted run
leaves only ``.partial`` items; the manifest and the checksum record sit at the top of ``OUT``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict

from intradist.errors import UserError

LOCK_NAME = "xtreme-archives.sha256"
MANIFEST_NAME = "xtreme-manifest.json"


def utf8_text(data: bytes, where: str) -> str:
    """``data`` decoded as UTF-8; a source in another encoding is refused, naming ``where`` it came from."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise UserError(f"{where}: not UTF-8 text ({error})") from error


def replace_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` whole: under ``path.partial`` first, then renamed."""
    partial = path.with_name(path.name + ".partial")
    try:
        partial.write_text(text, encoding="utf-8")
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(path)


def update_manifest(
    out: Path, task: str, sources: Dict[str, Dict[str, str]], files: Dict[str, Dict[str, object]]
) -> None:
    """Merge a task's sources (name -> url/sha256) and written files (path -> counts) into the manifest."""
    path = out / MANIFEST_NAME
    manifest = json.loads(path.read_text()) if path.is_file() else {}
    entry = manifest.setdefault(task, {"sources": {}, "files": {}})
    entry["sources"].update(sources)
    entry["files"].update(files)
    replace_text(path, json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
