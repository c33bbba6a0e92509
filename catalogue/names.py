"""Models and datasets by name or id: what every command that takes one accepts.

A reference matches a row whose ``name`` or ``source_uri`` is the text itself, or whose id is
the text or starts with it (``sha256:`` may be left out). Matches by name or source come first:
an id prefix is tried only when nothing has that name. Names are not unique, so a reference
may match several rows: that is an ``AmbiguousReferenceError`` listing them (name and 12
digits of the id), and a reference matching nothing an ``UnknownIdError``. The same queries
answer on a local and on a published catalogue (``RemoteCatalogue`` reads through the same
``query``).
"""

from __future__ import annotations

import duckdb

from modelsci.catalogue.store import Catalogue, UnknownIdError
from modelsci.schemas.entities import source_name

__all__ = ["AmbiguousReferenceError", "resolve_dataset", "resolve_model", "short_id"]

_SHOWN = 10  # matches listed in an error; the rest are counted


class AmbiguousReferenceError(UnknownIdError):
    """A name or id prefix that several models or datasets have."""


def short_id(entity_id: str) -> str:
    """The 12 hex digits after ``sha256:`` that name a row in listings."""
    return entity_id.removeprefix("sha256:")[:12]


def resolve_model(cat: Catalogue, ref: str, *, as_of: str | int | None = None) -> str:
    """The id of the one model named ``ref`` (its name or source) or whose id starts with it."""
    return _resolve(cat, "models", "model", ref, as_of)


def resolve_dataset(cat: Catalogue, ref: str, *, as_of: str | int | None = None) -> str:
    """The id of the one dataset named ``ref`` (its name or source) or whose id starts with it."""
    return _resolve(cat, "datasets", "dataset", ref, as_of)


def _resolve(cat: Catalogue, table: str, what: str, ref: str, as_of: str | int | None) -> str:
    text = ref.strip()
    if not text:
        raise UnknownIdError(f"give a {what}'s name or id (or the start of its id)")
    prefix = text if text.startswith("sha256:") else f"sha256:{text}"
    rows = _candidates(cat, table, text, prefix, as_of)
    named = [r for r in rows if text in (r["name"], r["source_uri"]) or r["id"] == text]
    matches = named or [r for r in rows if r["id"].startswith(prefix)]
    if len(matches) == 1:
        return matches[0]["id"]
    if not matches:
        raise UnknownIdError(f"no {what} named {text!r} or with an id starting with it in the catalogue "
                             f"(`modelsci sql \"SELECT name, id FROM {table}\"` lists them)")
    listed = ", ".join(f"{r['name']} ({short_id(r['id'])})" for r in matches[:_SHOWN])
    more = f" and {len(matches) - _SHOWN} more" if len(matches) > _SHOWN else ""
    raise AmbiguousReferenceError(f"{text!r} matches {len(matches)} {table}: {listed}{more}; give more of an id")


def _candidates(cat: Catalogue, table: str, text: str, prefix: str, as_of: str | int | None) -> list[dict]:
    """The rows whose name, source or id could match, each with a ``name``."""
    try:
        rows = cat.query(f"SELECT id, name, source_uri FROM {table} WHERE name = $text OR source_uri = $text "
                         "OR id = $text OR starts_with(id, $prefix) ORDER BY name, id",
                         {"text": text, "prefix": prefix}, as_of=as_of).to_pylist()
    except duckdb.BinderException:  # a catalogue not yet upgraded to names: they follow from the sources
        rows = cat.query(f"SELECT id, source_uri FROM {table} ORDER BY id", as_of=as_of).to_pylist()
        rows = [{**r, "name": source_name(r["source_uri"])} for r in rows]
        rows = [r for r in rows if text in (r["name"], r["source_uri"], r["id"]) or r["id"].startswith(prefix)]
    return [{**r, "name": r["name"] or source_name(r["source_uri"])} for r in rows]
