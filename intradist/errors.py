"""The one convention for user mistakes: raise :class:`UserError`; the command layer prints one line and exits 2.

The message names the file or flag and the fix. Library code raises; only commands call :func:`fail`.
"""

from __future__ import annotations

import sys
from typing import NoReturn


class UserError(Exception):
    """Bad input from the user (a missing file, an inconsistent flag). Commands print it as one line."""


def fail(command: str, error: UserError) -> NoReturn:
    """Print a user mistake as ``COMMAND: message`` on stderr and exit with status 2."""
    print(f"{command}: {error}", file=sys.stderr, flush=True)
    sys.exit(2)
