"""``python -m intradist``: the same as the ``intradist`` command."""

from intradist.cli import main

main()
