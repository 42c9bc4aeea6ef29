"""The one convention for user mistakes: raise :class:`UserError`; the command prints one line and exits 2.

The message names the file or flag and the fix. Library code only raises. Inside a click command
(every ``intradist`` subcommand, ``analyze-sensitivity``) click itself turns the exception into
``COMMAND: message`` on stderr and exit status 2; no command catches it to print it by hand.
"""

from __future__ import annotations

import sys
from typing import IO, Optional

import click


class UserError(click.ClickException):
    """Bad input from the user (a missing file, an inconsistent flag). Commands print it as one line."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(message)
        context = click.get_current_context(silent=True)  # the command that was running when it was raised
        self.command: Optional[str] = context.command_path if context is not None else None

    def show(self, file: Optional[IO[str]] = None) -> None:
        click.echo(f"{self.command or 'error'}: {self.format_message()}", file=file or sys.stderr)
