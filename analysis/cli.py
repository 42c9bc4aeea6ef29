"""``analyze-sensitivity``: the command line over :mod:`analysis` (not implemented yet)."""

import sys


def main() -> None:
    """Say plainly that the command does not exist yet, and fail."""
    print("analyze-sensitivity: not implemented yet (see the project's sensitivity-analysis issue)", file=sys.stderr)
    sys.exit(2)
