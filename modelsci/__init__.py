"""modelsci: a catalogue and knowledge base for model science.

    >>> import modelsci
    >>> cat = modelsci.open("modelsci-catalogue")
    >>> cat.sql("SELECT kind, value FROM findings_current").to_pylist()
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from modelsci.catalogue import Catalogue, open  # noqa: A004 - modelsci.open, as the catalogue names it

__all__ = ["Catalogue", "__version__", "open"]

try:
    __version__ = version("modelsci")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"
