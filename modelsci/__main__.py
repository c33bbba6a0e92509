"""``python -m modelsci``: the same as the ``modelsci`` command."""

from modelsci.cli import main

main()
