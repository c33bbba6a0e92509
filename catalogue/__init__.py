"""The catalogue: the store of models, datasets, runs and findings, and the only writer of it.

    >>> from modelsci import catalogue
    >>> cat = catalogue.open("modelsci-catalogue")
    >>> cat.sql("SELECT kind, value FROM findings_current").to_pylist()
"""

from __future__ import annotations

from pathlib import Path

from modelsci.catalogue.connection import CatalogueBusyError
from modelsci.catalogue.landing import ArtifactWriteError, BundleError
from modelsci.catalogue.readonly import ReadOnlySQLError
from modelsci.catalogue.store import (
    Catalogue,
    NoCatalogueError,
    UnknownCommitError,
    UnknownIdError,
    default_location,
)

__all__ = [
    "ArtifactWriteError", "BundleError", "Catalogue", "CatalogueBusyError", "NoCatalogueError", "ReadOnlySQLError",
    "UnknownCommitError", "UnknownIdError", "default_location", "open",
]


def open(path: str | Path | None = None, *, create: bool = False) -> Catalogue:  # noqa: A001 - modelsci.open
    """Open the catalogue at ``path``, ``$MODELSCI_CATALOGUE`` or ``./modelsci-catalogue``.

    A folder that holds no catalogue is an error (``NoCatalogueError``) unless ``create``.
    """
    return Catalogue(path if path is not None else default_location(), create=create)
