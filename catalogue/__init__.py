"""The catalogue: the store of models, datasets, runs and findings, and the only writer of it.

    >>> import catalogue
    >>> cat = catalogue.open("modelsci-catalogue")
    >>> cat.sql("SELECT kind, value FROM findings_current").to_pylist()
"""

from __future__ import annotations

from pathlib import Path

from catalogue.connection import CatalogueBusyError
from catalogue.landing import BundleError
from catalogue.readonly import ReadOnlySQLError
from catalogue.store import Catalogue, UnknownCommitError, default_location

__all__ = [
    "BundleError", "Catalogue", "CatalogueBusyError", "ReadOnlySQLError", "UnknownCommitError",
    "default_location", "open",
]


def open(path: str | Path | None = None) -> Catalogue:  # noqa: A001 - the API the issue names
    """Open (creating if needed) the catalogue at ``path``, ``$MODELSCI_CATALOGUE`` or ``./modelsci-catalogue``."""
    return Catalogue(path if path is not None else default_location())
