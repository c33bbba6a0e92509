"""The catalogue: the store of models, datasets, runs and findings, and the only writer of it.

    >>> from modelsci import catalogue
    >>> cat = catalogue.open("modelsci-catalogue")
    >>> cat.sql("SELECT kind, value FROM findings_current").to_pylist()
"""

from __future__ import annotations

import os
from pathlib import Path

from modelsci.catalogue.connection import CatalogueBusyError
from modelsci.catalogue.landing import ArtifactWriteError, BundleError
from modelsci.catalogue.readonly import ReadOnlySQLError
from modelsci.catalogue.remote import ReadOnlyCatalogueError, RemoteCatalogue, RemoteCatalogueError, is_url
from modelsci.catalogue.schema import OldFormatError
from modelsci.catalogue.store import (
    Catalogue,
    NoCatalogueError,
    UnknownCommitError,
    UnknownIdError,
    default_location,
)

__all__ = [
    "ArtifactWriteError", "BundleError", "Catalogue", "CatalogueBusyError", "NoCatalogueError", "OldFormatError",
    "ReadOnlyCatalogueError", "ReadOnlySQLError", "RemoteCatalogue", "RemoteCatalogueError",
    "UnknownCommitError", "UnknownIdError", "default_location", "open",
]


def open(path: str | Path | None = None, *, create: bool = False) -> Catalogue:  # noqa: A001 - modelsci.open
    """Open the catalogue at ``path``, ``$MODELSCI_CATALOGUE`` or ``./modelsci-catalogue``.

    A folder that holds no catalogue is an error (``NoCatalogueError``) unless ``create``. An
    ``http://`` or ``https://`` URL opens a published catalogue read-only (``RemoteCatalogue``).
    """
    location = path if path is not None else os.environ.get("MODELSCI_CATALOGUE") or default_location()
    if is_url(location):
        if create:
            raise ReadOnlyCatalogueError(f"{location} is a published catalogue, read-only over HTTP: a catalogue "
                                         "is made in a local folder")
        return RemoteCatalogue(str(location))
    return Catalogue(location, create=create)
