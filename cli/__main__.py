"""``python -m cli``: the same as the ``lcs`` command."""

from cli import main

main()
