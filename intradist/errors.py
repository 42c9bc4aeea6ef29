"""The one exception type for user mistakes: its message names the file or flag and the fix."""


class UserError(Exception):
    """Bad input from the user (a missing file, an inconsistent flag). Commands print it as one line."""
