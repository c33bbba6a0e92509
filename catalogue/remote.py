"""Reading a published catalogue over HTTP(S), read-only: ``modelsci.open("https://host/path/")``.

A published catalogue is a ``modelsci export`` folder on a static host: ``manifest.json``,
``tables/<name>.parquet`` and ``artifacts/<sha256>.parquet``. ``modelsci publish DIR`` puts one
in ``DIR/data/`` beside the site, so the URL given may be the export folder's or the site's
(its ``data/`` is tried when the folder itself has no ``manifest.json``).

Nothing is downloaded whole. DuckDB reads the Parquet tables where they lie, through an fsspec
HTTP filesystem registered with it (``catalogue.http_files``), with range requests: a file's
footer first, then only the row groups whose statistics a query's filters cannot rule out.
``modelsci publish`` writes the findings sorted by model in small row groups, so a query on one
model reads a small part of them.

The same SQL answers as on a local catalogue: each published table becomes a view
``store.<name>`` with the store's bookkeeping columns rebuilt from what the export holds (a
row's ``commit_seq`` from its commit, a finding's ``superseded_seq`` from the commit of the link
that superseded it, ``verification`` from its status), and the public views (``findings``,
``findings_current``, ``findings_summary``, ...) are created over those by the local
catalogue's own definitions (``schema.create_views``), cut off at a commit for ``as_of``.

A reader's SQL runs as on a local catalogue (``readonly``): SELECT and EXPLAIN only, within the
same time and memory limits, with file access off except for the exact URLs of the published
tables and of the artifacts the query names (``'artifacts/<sha256>.parquet'`` is resolved
against the catalogue's URL, as it is against a local catalogue's folder). Writing to a
published catalogue is refused with ``ReadOnlyCatalogueError``.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import duckdb
import pyarrow as pa

from modelsci.catalogue.artifact_views import create_artifact_views
from modelsci.catalogue.readonly import ReaderLimits, check_read_only, one_line, run_bounded
from modelsci.catalogue.schema import ID_FORMAT, SCHEMA_VERSION, TABLES, create_views
from modelsci.catalogue.store import Catalogue, mark_json, resolve_commit
from modelsci.catalogue.transfer import EXPORTED, FORMAT
from modelsci.schemas.bundle import ResultBundle
from modelsci.schemas.entities import Commit
from modelsci.schemas.errors import MissingExtraError, ModelsciError
from modelsci.schemas.queued_run import QueuedRun

__all__ = ["HTTP_TIMEOUT_S", "ReadOnlyCatalogueError", "RemoteCatalogue", "RemoteCatalogueError", "is_url", "store_statements"]

HTTP_TIMEOUT_S = 60.0
"""How long one HTTP request of a published catalogue may take."""
_MANIFEST_MAX_BYTES = 1 << 20  # a manifest lists eight tables: far less than this
_URL = re.compile(r"https?://[^\s'\"]+", re.IGNORECASE)
_RELATIVE_ARTIFACT = re.compile(r"'(artifacts/[0-9a-f]{64}\.parquet)'")


class RemoteCatalogueError(ModelsciError, OSError):
    """A published catalogue that cannot be reached, or a URL that holds none."""


class ReadOnlyCatalogueError(ModelsciError, PermissionError):
    """A write asked of a published catalogue, which is read over HTTP and never written."""


def is_url(location: object) -> bool:
    """Whether a catalogue location is an http(s) URL (a published catalogue) rather than a folder."""
    return isinstance(location, str) and _URL.fullmatch(location.strip()) is not None


class RemoteCatalogue(Catalogue):
    """A published catalogue read over HTTP(S): ``sql``, ``findings``, ``history``, ``show`` and the
    other reading methods answer as a local catalogue's; the writing ones raise ``ReadOnlyCatalogueError``."""

    def __init__(self, url: str, *, timeout: float = HTTP_TIMEOUT_S) -> None:
        if not is_url(url):
            raise RemoteCatalogueError(f"{url!r} is not an http:// or https:// URL")
        self.url = url.strip().rstrip("/") + "/"
        self.timeout = timeout
        self.base, self.manifest = _find_manifest(self.url, timeout)
        self._held = None  # the reading methods of Catalogue check that no writing block holds it

    def __repr__(self) -> str:
        return f"RemoteCatalogue({self.base!r})"

    def table_url(self, name: str) -> str:
        """The URL of one published table's Parquet file."""
        return f"{self.base}tables/{name}.parquet"

    # -- reading ---------------------------------------------------------------------------

    @contextmanager
    def reader(self, as_of: str | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
        """An in-memory connection whose views read the published tables, cut off at ``as_of`` if given."""
        con = duckdb.connect()
        try:
            con.register_filesystem(_filesystem(self.timeout))
            _create_store(con, self, history=as_of is not None)
            seq = None if as_of is None else resolve_commit(con, str(as_of))
            create_views(con, as_of_seq=seq, temporary=False)
            yield con
        finally:
            con.close()

    def sql(self, query: str, *, as_of: str | None = None, timeout: float | None = None,
            memory_limit: int | str | None = None) -> pa.Table:
        """Run a reader's query (SELECT only; no file access beyond the published tables and the
        artifacts it names) as Arrow, within the same limits as on a local catalogue."""
        check_read_only(query)
        limits = ReaderLimits.resolve(timeout, memory_limit)
        with self.reader(as_of) as con:
            files = create_artifact_views(con, query, self.base)
            query = _lock_down(con, self, query, limits, files)
            types = con.sql(query).types  # binds the query only: what run_bounded's Arrow loses
            return mark_json(run_bounded(con, query, limits), types)

    # -- writing: refused ------------------------------------------------------------------

    def _refuse(self, what: str) -> NoReturn:
        raise ReadOnlyCatalogueError(f"{self.base} is a published catalogue, read-only over HTTP: {what} needs a "
                                     "local catalogue (a folder: --catalogue DIR, or modelsci.open(path))")

    def commit(self, bundle: ResultBundle, **kwargs: Any) -> Commit | None:
        """Refused: a published catalogue is never written."""
        self._refuse("committing")

    @contextmanager
    def writing(self) -> Iterator[Catalogue]:
        """Refused: a published catalogue is never written."""
        self._refuse("writing")
        yield self  # never reached; a generator for contextmanager

    def enqueue(self, runs: list[QueuedRun]) -> list[str]:
        """Refused: a published catalogue has no queue."""
        self._refuse("queueing runs")

    def claim(self, worker: str) -> QueuedRun | None:
        """Refused: a published catalogue has no queue."""
        self._refuse("running the queue")

    def release(self, run_ids: list[str]) -> None:
        """Refused: a published catalogue has no queue."""
        self._refuse("running the queue")

    def queue(self) -> pa.Table:
        """Refused: the queue is not published."""
        self._refuse("the queue (it is not published)")

    @contextmanager
    def _writer(self) -> Iterator[duckdb.DuckDBPyConnection]:
        self._refuse("writing")
        yield duckdb.connect()  # never reached


def _find_manifest(url: str, timeout: float) -> tuple[str, dict[str, Any]]:
    """The URL of the export folder (``url``, else ``url/data/``) and its manifest, checked."""
    for base in (url, f"{url}data/"):
        data = _fetch(f"{base}manifest.json", timeout)
        if data is not None:
            return base, _checked_manifest(f"{base}manifest.json", data)
    raise RemoteCatalogueError(f"{url} holds no published modelsci catalogue (no manifest.json there or in data/); "
                               "give the URL of a folder made by `modelsci publish` or `modelsci export`")


def _fetch(url: str, timeout: float) -> bytes | None:
    """A small file's bytes, or None when the server says it has none (404 or 410)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            data = response.read(_MANIFEST_MAX_BYTES + 1)
    except urllib.error.HTTPError as exc:
        if exc.code in (404, 410):
            return None
        raise RemoteCatalogueError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise RemoteCatalogueError(f"cannot reach {url}: {reason}") from None
    if len(data) > _MANIFEST_MAX_BYTES:
        raise RemoteCatalogueError(f"{url} is larger than a manifest can be ({_MANIFEST_MAX_BYTES} bytes)")
    return data


def _checked_manifest(url: str, data: bytes) -> dict[str, Any]:
    """The manifest, if it is a modelsci export of this schema version and id format listing every table."""
    try:
        manifest = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise RemoteCatalogueError(f"{url}: not JSON ({one_line(str(exc))})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise RemoteCatalogueError(f"{url} is not a modelsci export's manifest (its format is not {FORMAT!r})")
    found = (manifest.get("schema_version"), manifest.get("id_format"))
    if found != (SCHEMA_VERSION, ID_FORMAT):
        raise RemoteCatalogueError(f"{url}: a catalogue of schema version {found[0]}, id format {found[1]}; this "
                                   f"modelsci reads {SCHEMA_VERSION}, {ID_FORMAT}: read it with the modelsci that "
                                   "published it, or publish it again with this one")
    tables = manifest.get("tables")
    for name in EXPORTED:
        entry = tables.get(name) if isinstance(tables, dict) else None
        if not isinstance(entry, dict) or entry.get("path") != f"tables/{name}.parquet":
            raise RemoteCatalogueError(f"{url} does not list the table {name} at tables/{name}.parquet")
    return manifest


def _filesystem(timeout: float) -> Any:
    """The fsspec HTTP filesystem for DuckDB (``Any``: fsspec is an optional extra, typed only when installed)."""
    try:
        from modelsci.catalogue.http_files import http_filesystem
    except ModuleNotFoundError as exc:
        raise MissingExtraError(f"reading a published catalogue over HTTP needs {exc.name}, which is not "
                                "installed: pip install 'modelsci[remote]'") from None
    return http_filesystem(timeout)


def _create_store(con: duckdb.DuckDBPyConnection, cat: RemoteCatalogue, *, history: bool) -> None:
    """Views ``store.<name>`` over the published tables (``store_statements``)."""
    for statement in store_statements(cat.table_url, history=history):
        con.execute(statement)


def store_statements(table_url: Callable[[str], str], *, history: bool, json_type: str = "JSON") -> list[str]:
    """The SQL making views ``store.<name>`` over the published tables (each read at ``table_url(name)``),
    with the columns of the local store's tables; the site's Query page runs it too.

    With ``history`` (an ``as_of`` query), the bookkeeping that cuts views off at a commit is
    rebuilt from the commits and links; without it, only what the current views read: a
    finding's status (that it was superseded, and whether a verification run made it).
    ``json_type`` is what JSON columns are cast to: ``VARCHAR`` for a DuckDB without the json extension.
    """
    statements = ["CREATE SCHEMA store"]
    for name in EXPORTED:  # commits first: the others join it
        spec = TABLES[name]
        cols = ", ".join(f'CAST(p."{c.name}" AS {json_type if c.sql_type == "JSON" else c.sql_type}) AS "{c.name}"'
                         for c in spec.columns)
        source = f"read_parquet({_quote(table_url(name))}) p"
        if name == "commits":
            statements.append(f"CREATE VIEW store.commits AS SELECT {cols} FROM {source}")
            continue
        if history:
            cols += ", c.seq AS commit_seq"
            source += " JOIN store.commits c ON c.id = p.commit_id"
        else:
            cols += ", NULL::BIGINT AS commit_seq"
        if name == "findings":
            if history:
                links = _quote(table_url("finding_links"))
                source += (f" LEFT JOIN (SELECT l.dst_id, min(lc.seq) AS seq FROM read_parquet({links}) l "
                           "JOIN store.commits lc ON lc.id = l.commit_id WHERE l.relation = 'supersedes' "
                           "GROUP BY l.dst_id) s ON s.dst_id = p.id")
                cols += ", s.seq AS superseded_seq"
            else:
                cols += ", CASE WHEN p.status = 'superseded' THEN 0 END AS superseded_seq"  # any seq: only set or not
            cols += ", NULL::BIGINT AS key_bits, p.status = 'verification' AS verification"
        statements.append(f"CREATE VIEW store.{name} AS SELECT {cols} FROM {source}")
    return statements


def _lock_down(con: duckdb.DuckDBPyConnection, cat: RemoteCatalogue, query: str, limits: ReaderLimits,
               views_read: list[str]) -> str:
    """``readonly.lock_down`` for a published catalogue: file access only to the published tables and
    the artifacts the query names or its artifact views read (``views_read``), by URL; returns the
    query with relative artifact paths made URLs."""
    query = _RELATIVE_ARTIFACT.sub(lambda m: _quote(cat.base + m[1]), query)
    artifact = re.compile(re.escape(cat.base) + r"artifacts/[0-9a-f]{64}\.parquet")
    named = set(artifact.findall(" ".join([query, *views_read])))
    allowed = sorted({cat.table_url(name) for name in EXPORTED} | named)
    con.execute("SET temp_directory = ''")
    con.execute("SET memory_limit = ?", [f"{limits.memory_bytes}b"])
    con.execute("SET enable_progress_bar = false")
    con.execute("SET allowed_paths = ?", [allowed])
    con.execute("SET enable_external_access = false")
    con.execute("SET autoinstall_known_extensions = false")
    con.execute("SET autoload_known_extensions = false")
    con.execute("SET lock_configuration = true")
    return query


def _quote(text: str) -> str:
    """A SQL string literal."""
    return "'" + text.replace("'", "''") + "'"
