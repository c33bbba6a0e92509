"""The one base class of modelsci's own errors.

An error of this kind is about what the user gave modelsci (a manifest, a model, a query, a
path) or about the catalogue's state, never a bug: the command line prints its message in
one line and exits 1. Anything else that escapes a command is a bug, shown with its traceback.
"""

from __future__ import annotations

__all__ = ["MissingExtraError", "ModelsciError"]


class ModelsciError(Exception):
    """Something the user can fix, said in one line."""


class MissingExtraError(ModelsciError, ImportError):
    """A feature needs an optional extra that is not installed; the message has the pip line."""
