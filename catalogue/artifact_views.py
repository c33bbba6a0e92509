"""Views ``artifact_<name>``: every artifact of one name as one table, each row with its finding.

An analysis attaches Parquet tables to its findings under names it documents (``attributions``,
``interactions``, ``predictions``, ``points``, ...); the ``artifacts`` table lists them, one file
``artifacts/<sha256>.parquet`` each. ``artifact_<name>`` reads all the files of that name at once
(their columns united by name; a column a file lacks is null there), and puts before each row
its finding's ``finding_id``, ``model_id``, ``dataset_id``, ``analysis_name``, ``kind``, ``seed``
and ``status``, so that one ``SELECT`` aggregates, say, interactions across examples and models.

Column names need no quoting: a stored column named by a reserved word (``order``) or one of
the finding's columns above is prefixed with the artifact's name in the singular
(``interaction_order``), and other characters than ASCII letters, digits and ``_`` become ``_``.

The catalogue layer knows no analysis, so the names come from the ``artifacts`` table itself.
The views are made per connection, for the names a query mentions only: a view reads the
footer of each of its files when it is made, which a query that does not use it should not pay.
The same definitions serve a local catalogue (files by path), a published one (files by URL)
and the site's Query page (files by their relative name, registered with DuckDB-WASM).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import duckdb

__all__ = ["FINDING_COLUMNS", "PREFIX", "ArtifactView", "artifact_views", "create_artifact_views", "mentioned",
           "view_name"]

PREFIX = "artifact_"
"""Every artifact view's name starts with it."""
FINDING_COLUMNS = ("finding_id", "model_id", "dataset_id", "analysis_name", "kind", "seed", "status")
"""The finding's columns that come first in every artifact view."""
_MENTION = re.compile(r"\bartifact_([a-z0-9_]+)\b", re.IGNORECASE)
_PATH = re.compile(r"artifacts/[0-9a-f]{64}\.parquet")  # the only paths a view reads: never a crafted one
_NOT_IDENTIFIER = re.compile(r"[^a-z0-9_]+")
_FILE_COLUMN = "__modelsci_artifact_file"  # the file each row came from, when "filename" is taken; not shown


@dataclass(frozen=True)
class ArtifactView:
    """One artifact name's view: its files (relative paths) and its columns (stored name, view name)."""

    name: str
    artifact: str
    paths: tuple[str, ...]
    columns: tuple[tuple[str, str], ...]

    def select(self, prefix: str = "") -> str:
        """The view's SELECT, reading each file at ``prefix + path`` (a folder, a URL, or nothing for a
        file registered by its relative name)."""
        files = ", ".join(_quote(prefix + p) for p in self.paths)
        stored = ", ".join(f'p."{_ident(s)}" AS {v}' for s, v in self.columns)
        # filename = true (a column "filename") is what every DuckDB reads, the site's older one included;
        # a file with a column of that name needs another name for it, which newer ones take.
        file_column = "filename"
        filename = "true"
        if any(s == "filename" for s, _ in self.columns):
            file_column, filename = _FILE_COLUMN, f"'{_FILE_COLUMN}'"
        return (f"SELECT a.finding_id, f.model_id, f.dataset_id, f.analysis_name, f.kind, f.seed, f.status"
                f"{', ' + stored if stored else ''} "
                f"FROM read_parquet([{files}], union_by_name = true, filename = {filename}) p "
                f"JOIN artifacts a ON a.name = {_quote(self.artifact)} "
                f"AND {_quote(prefix)} || a.path = p.{file_column} "
                f"JOIN findings f ON f.id = a.finding_id")


def view_name(artifact: str) -> str:
    """``artifact_<name>``, the name made a plain lower-case identifier."""
    return PREFIX + _NOT_IDENTIFIER.sub("_", artifact.lower()).strip("_")


def mentioned(query: str) -> set[str]:
    """Names of the artifact views a query may read (any word starting ``artifact_``), lower-cased."""
    return {f"{PREFIX}{m.lower()}" for m in _MENTION.findall(query)}


def artifact_views(con: duckdb.DuckDBPyConnection, prefix: str, names: set[str] | None = None,
                   keep: Callable[[str], bool] | None = None) -> list[ArtifactView]:
    """The views of the artifacts listed in ``con``'s ``artifacts`` view (those among ``names``, if given),
    their columns read from the files at ``prefix + path``; only the paths ``keep`` accepts, if given."""
    rows = con.execute("SELECT name, list(DISTINCT path ORDER BY path) FROM artifacts GROUP BY name "
                       "ORDER BY name").fetchall()
    reserved = {r[0] for r in con.execute(
        "SELECT keyword_name FROM duckdb_keywords() WHERE keyword_category <> 'unreserved'").fetchall()}
    views = []
    for artifact, paths in rows:
        name = view_name(artifact)
        paths = tuple(p for p in paths if _PATH.fullmatch(p) and (keep is None or keep(p)))
        if name == PREFIX or not paths or (names is not None and name not in names):
            continue
        files = ", ".join(_quote(prefix + p) for p in paths)
        described = con.execute(f"DESCRIBE SELECT * FROM read_parquet([{files}], union_by_name = true)").fetchall()
        views.append(ArtifactView(name, artifact, paths, _columns([r[0] for r in described], artifact, reserved)))
    return views


def create_artifact_views(con: duckdb.DuckDBPyConnection, query: str, prefix: str,
                          keep: Callable[[str], bool] | None = None) -> list[str]:
    """Create (temporary) the artifact views ``query`` mentions, reading the files at ``prefix + path``
    (those ``keep`` accepts, if given); returns those files."""
    wanted = mentioned(query)
    if not wanted:
        return []
    files: list[str] = []
    for view in artifact_views(con, prefix, wanted, keep):
        con.execute(f"CREATE OR REPLACE TEMP VIEW {view.name} AS {view.select(prefix)}")
        files += [prefix + p for p in view.paths]
    return files


def _columns(stored: list[str], artifact: str, reserved: set[str]) -> tuple[tuple[str, str], ...]:
    """(stored name, view name) for each column: plain identifiers, none reserved or taken by the finding's."""
    singular = view_name(artifact)[len(PREFIX):].removesuffix("s") or "artifact"
    taken = set(FINDING_COLUMNS)
    out = []
    for column in stored:
        name = _NOT_IDENTIFIER.sub("_", column.lower()).strip("_") or "column"
        if name[0].isdigit() or name in reserved or name in taken:
            name = f"{singular}_{name}"
        while name in taken:  # two stored names that became one
            name += "_"
        taken.add(name)
        out.append((column, name))
    return tuple(out)


def _quote(text: str) -> str:
    """A SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def _ident(text: str) -> str:
    """The inside of a double-quoted identifier."""
    return text.replace('"', '""')
