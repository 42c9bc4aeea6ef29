"""What makes a result traceable: file hashes, checksum records of archives, and package versions."""

from __future__ import annotations

import hashlib
import importlib.metadata
import platform
import subprocess
from pathlib import Path
from typing import Dict, Optional, Sequence

from intradist.errors import UserError


def data_checksums(folder: Path) -> Dict[str, str]:
    """File name -> SHA-256 of every file directly in ``folder`` (a data-bin), to record what a run read."""
    return {file.name: sha256_of(file) for file in sorted(Path(folder).iterdir()) if file.is_file()}


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def package_versions(packages: Sequence[str]) -> Dict[str, str]:
    """Python's version and each installed package's (absent packages are left out)."""
    found = {"python": platform.python_version()}
    for package in packages:
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


# ---------------------------------------------------------------------------------------------
# Checksum records: for archives nobody publishes a checksum of, the SHA-256 of the copy first used


def read_checksum_record(record: Path) -> Dict[str, str]:
    """Archive name -> SHA-256 from a ``sha256sum``-format record (empty when there is none)."""
    if not record.is_file():
        return {}
    recorded = {}
    for line in record.read_text().splitlines():
        digest, _, name = line.partition("  ")
        if name:
            recorded[name] = digest
    return recorded


def check_sha256(digest: str, name: str, where: str, record: Path, published: Optional[str] = None) -> None:
    """Refuse ``digest`` of archive ``name`` (read from ``where``) unless it is the published and recorded one."""
    if published is not None and digest != published:
        raise UserError(f"{where}: SHA-256 {digest} is not the published {published} of {name}; download it again")
    recorded = read_checksum_record(record).get(name)
    if recorded is not None and digest != recorded:
        raise UserError(
            f"{where}: SHA-256 {digest} differs from {recorded}, recorded for {name} in {record} when it was first "
            f"used; the archive changed: restore the original, or delete that line to accept this one"
        )


def record_sha256(record: Path, name: str, digest: str) -> None:
    """Add an archive's SHA-256 to the record (kept when already there); the file is written whole, then renamed."""
    recorded = read_checksum_record(record)
    if name in recorded:
        return
    recorded[name] = digest
    partial = record.with_name(record.name + ".partial")
    partial.write_text("".join(f"{value}  {key}\n" for key, value in sorted(recorded.items())))
    partial.replace(record)


def git_commit(repo: Optional[Path] = None) -> Optional[str]:
    """The commit of the project's checkout (``+dirty`` with uncommitted changes); None outside git."""
    where = str(repo or Path(__file__).resolve().parent.parent)
    try:
        commit = subprocess.run(["git", "-C", where, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", where, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    return commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
