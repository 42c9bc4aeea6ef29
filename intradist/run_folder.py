"""Output folders that are complete or absent, and never take what a command did not write.

Every command that writes a folder ``OUT`` follows one protocol (docs/reliability.md):

1. :meth:`RunFolder.check`, before any work: ``OUT`` must not be a file, the current folder or one
   above it, a folder holding an input of the run, or in a place that cannot be written; an
   existing ``OUT`` is replaced only when it carries the marker of an earlier run of the same
   command (and the command replaces earlier runs, or ``--overwrite`` is given), or when
   ``--overwrite`` is given and it holds no input. A refusal is one :class:`UserError` line, and
   nothing is created.
2. ``with RunFolder(...) as run:`` the command writes into ``run.staging`` (``OUT.partial``),
   which it holds locked: a second run on the same ``OUT`` is refused, not interleaved.
3. :meth:`RunFolder.commit` writes the marker and puts the staging folder in place of ``OUT`` with
   SIGINT and SIGTERM held back, so ``OUT`` is the old result or the new one, never a mix.

On an error, Ctrl-C or SIGTERM (turned into :class:`Terminated` while the folder is open) the
staging folder is removed and ``OUT`` is left as it was, except that a *resumable* run (a trainer
that writes checkpoints there) keeps it: the same command, rerun, then continues from them.

In a multi-process run only the writer (rank 0) touches the file system; the other ranks get the
same paths and do nothing in :meth:`__enter__`, :meth:`__exit__` and :meth:`commit`.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Callable, Dict, Optional, Sequence

from intradist.errors import UserError

#: The file that marks a folder as a command's complete output (and a staging folder as its work).
MARKER = ".intradist-run.json"
#: The lock file inside a staging folder, held with ``flock`` while a run writes it.
LOCK = ".intradist-lock"
STAGING_SUFFIX = ".partial"
REPLACED_SUFFIX = ".replaced"


class Terminated(BaseException):
    """SIGTERM, raised like Ctrl-C's KeyboardInterrupt so that the same cleanup runs."""


def read_marker(folder: Path) -> Optional[Dict[str, Any]]:
    """The marker of ``folder`` (None when it has none or it is unreadable)."""
    try:
        value = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _is_within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


@dataclass
class RunFolder:
    """The output folder of one run of ``command``; see the module docstring for the protocol.

    ``inputs`` are the files and folders the run reads (never inside what it may replace);
    ``replace_earlier`` lets a rerun replace an earlier run's folder without ``overwrite``;
    ``resumable`` keeps the staging folder when the run is interrupted, and ``fingerprint``
    (the settings that must match, e.g. a hash of the config) decides whether a rerun resumes
    it or starts afresh.
    """

    out: Path
    command: str
    inputs: Sequence[Path] = ()
    overwrite: bool = False
    replace_earlier: bool = False
    resumable: bool = False
    fingerprint: str = ""
    writer: bool = True
    flag: str = "--out"
    #: True inside the ``with`` block when a resumable staging folder of the same settings was found.
    resuming: bool = field(default=False, init=False)
    _lock: Optional[Any] = field(default=None, init=False, repr=False)
    _signals: Dict[int, Any] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self.out = Path(self.out)

    @property
    def staging(self) -> Path:
        return self.out.with_name(self.out.name + STAGING_SUFFIX)

    def _error(self, problem: str) -> UserError:
        return UserError(f"{self.flag} {self.out}: {problem}")

    def check(self) -> "RunFolder":
        """Refuse, in one line, an ``OUT`` this run may not write (see the module docstring). Creates nothing."""
        out = self.out
        if out.name in ("", ".", ".."):
            raise self._error("names the current folder or one above it; give a new folder's name")
        target = Path(os.path.abspath(out))
        if _is_within(Path.cwd().resolve(), target.resolve() if target.exists() else target):
            raise self._error("is the current folder or one above it; give a new folder's name")
        if out.exists() and not out.is_dir():
            raise self._error("exists and is not a folder")
        for item in self.inputs:
            if _is_within(Path(os.path.abspath(item)).resolve(), target.resolve() if target.exists() else target):
                raise self._error(f"holds an input of this run ({item}); write somewhere else")
        existing = next(parent for parent in (target, *target.parents) if parent.exists())
        if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
            raise self._error(f"cannot write in {existing}")
        if out.is_dir() and any(out.iterdir()):
            marker = read_marker(out)
            if marker is None or marker.get("command") != self.command:
                if not self.overwrite:
                    raise self._error(f"exists and was not written by {self.command}; "
                                      "choose a new folder or pass --overwrite to replace it")  # fmt: skip
            elif not (self.overwrite or self.replace_earlier):
                raise self._error("holds an earlier run; choose a new folder or pass --overwrite to replace it")
        if self.staging.exists():
            marker = read_marker(self.staging)
            if not self.staging.is_dir() or marker is None or marker.get("command") != self.command:
                raise UserError(f"{self.staging}: exists and is not {self.command}'s work; move it away and rerun")
        return self

    # -- the with block -------------------------------------------------------------------

    def __enter__(self) -> "RunFolder":
        if not self.writer:
            self.resuming = self.resumable and (read_marker(self.staging) or {}).get("fingerprint") == self.fingerprint
            return self
        self.check()
        staging = self.staging
        staging.mkdir(parents=True, exist_ok=True)
        self._lock = open(staging / LOCK, "a")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            self._lock = None
            raise UserError(f"{self.flag} {self.out}: another run is writing it now ({staging} is locked)") from None
        marker = read_marker(staging)
        self.resuming = self.resumable and marker is not None and marker.get("fingerprint") == self.fingerprint
        if not self.resuming:
            self._empty(staging)
        self._write_marker(staging, complete=False)
        self._catch_sigterm()
        return self

    def __exit__(self, kind, error, traceback) -> None:
        self._restore_signals()
        if not self.writer:
            return
        if error is not None and self.staging.exists():
            interrupted = isinstance(error, (KeyboardInterrupt, Terminated))
            if self.resumable and interrupted:
                print(f"{self.command}: interrupted; {self.staging} keeps the checkpoints, "
                      "and the same command continues from them", file=sys.stderr)  # fmt: skip
            else:
                shutil.rmtree(self.staging, ignore_errors=True)
        self._unlock()

    def commit(self) -> None:
        """Put the staging folder in place of ``OUT`` (replacing an earlier result), uninterruptibly."""
        if not self.writer:
            return
        blocked = {signal.SIGINT, signal.SIGTERM}
        main = threading.current_thread() is threading.main_thread()
        if main:
            signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
        try:
            self._write_marker(self.staging, complete=True)
            (self.staging / LOCK).unlink(missing_ok=True)
            replaced = self.out.with_name(self.out.name + REPLACED_SUFFIX)
            if self.out.exists():
                shutil.rmtree(replaced, ignore_errors=True)
                self.out.rename(replaced)
            self.staging.rename(self.out)
            shutil.rmtree(replaced, ignore_errors=True)
        finally:
            if main:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, blocked)

    # -- helpers --------------------------------------------------------------------------

    def _write_marker(self, folder: Path, complete: bool) -> None:
        record = {"command": self.command, "fingerprint": self.fingerprint, "complete": complete}
        (folder / MARKER).write_text(json.dumps(record) + "\n")

    @staticmethod
    def _empty(folder: Path) -> None:
        for item in folder.iterdir():
            if item.name in (LOCK, MARKER):
                continue
            if item.is_dir() and not item.is_symlink():
                shutil.rmtree(item)
            else:
                item.unlink()

    def _catch_sigterm(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def terminate(signum: int, frame: Optional[FrameType]) -> None:
            raise Terminated(f"signal {signum}")

        self._signals[signal.SIGTERM] = signal.signal(signal.SIGTERM, terminate)

    def _restore_signals(self) -> None:
        for signum, handler in self._signals.items():
            signal.signal(signum, handler)
        self._signals.clear()

    def _unlock(self) -> None:
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None



def write_folder(out: Path, command: str, write: Callable[[Path], None], **options: Any) -> Path:
    """Write the folder ``out`` through the protocol: ``write(staging)`` fills it, then it takes ``out``'s place.

    ``options`` are :class:`RunFolder`'s; returns ``out``.
    """
    with RunFolder(out, command, **options) as run:
        write(run.staging)
        run.commit()
    return Path(out)
