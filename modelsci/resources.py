"""Files that ship inside modelsci: the site's sources and the demo's inputs.

They are package data (``modelsci.site``, ``modelsci.demo_inputs``), found through
``importlib.resources`` whether modelsci runs from a wheel or from a checkout; both lay
them out as plain folders, which is what mkdocs and jinja2 read.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

__all__ = ["demo_inputs", "site_sources"]


def site_sources() -> Path:
    """The folder holding ``mkdocs.yml``, ``templates/``, ``assets/`` and the npm lock."""
    return Path(str(files("modelsci.site")))


def demo_inputs() -> Path:
    """The folder holding the demo's manifests (``*.yaml``, ``large/*.yaml``) and data."""
    return Path(str(files("modelsci.demo_inputs")))
