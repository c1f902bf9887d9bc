"""``python -m nodes``: the ``loom`` command."""

from nodes.cli import main

main()
