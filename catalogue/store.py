"""The catalogue: a directory holding ``catalogue.duckdb``, ``artifacts/`` and, while a finished
run waits for a busy catalogue, ``spool/`` (see ``spool``).

Only this package writes it. The database is held for the moment of one commit or one read,
so readers (``modelsci sql``, the site build, the Python API) and a long ``modelsci run``
live side by side.
"""

from __future__ import annotations

import getpass
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from modelsci.catalogue.artifact_views import create_artifact_views
from modelsci.catalogue.connection import connect, lock_timeout
from modelsci.catalogue.landing import CommitInfo, bundle_tables, land, write_artifacts
from modelsci.catalogue.queue import claim, enqueue, release
from modelsci.catalogue.readonly import ReaderLimits, check_read_only, lock_down, plain_file, run_bounded
from modelsci.catalogue.schema import create_schema, create_views, require_current_format, upgrade_store
from modelsci.catalogue.spool import Spool
from modelsci.catalogue.store_memo import StoreMemo
from modelsci.schemas.bundle import ResultBundle
from modelsci.schemas.entities import Commit
from modelsci.schemas.errors import ModelsciError
from modelsci.schemas.queued_run import QueuedRun

__all__ = ["DEFAULT_LOCATION", "JSON_FIELD", "Catalogue", "UnknownCommitError", "UnknownIdError",
           "NoCatalogueError", "default_location", "json_columns", "mark_json",
           "resolve_commit"]

DEFAULT_LOCATION = "modelsci-catalogue"
DB_NAME = "catalogue.duckdb"
JSON_FIELD = {b"modelsci.sql_type": b"JSON"}
"""Metadata of an Arrow field that holds JSON text: DuckDB hands JSON columns to Arrow as plain strings."""


class NoCatalogueError(ModelsciError, FileNotFoundError):
    """The folder holds no catalogue, and the caller did not ask to create one."""


class UnknownIdError(ModelsciError, LookupError):
    """No row, or more than one, has the id (or id prefix) asked for."""


class UnknownCommitError(ModelsciError, LookupError):
    """An ``--as-of`` commit that the catalogue does not hold."""


def default_location() -> Path:
    """``$MODELSCI_CATALOGUE``, else ``./modelsci-catalogue``."""
    return Path(os.environ.get("MODELSCI_CATALOGUE") or DEFAULT_LOCATION)


class Catalogue:
    """A catalogue directory; open one with ``catalogue.open(path)``."""

    def __init__(self, root: str | Path, *, create: bool = False, write_timeout: float | None = None,
                 read_timeout: float | None = None) -> None:
        self.root = Path(root).absolute()
        self.db_path = self.root / DB_NAME
        self.artifacts_dir = self.root / "artifacts"
        self.spool = Spool(self.root / "spool")  # bundles computed while the catalogue was busy
        self.write_timeout = write_timeout if write_timeout is not None else lock_timeout(120.0)
        self.read_timeout = read_timeout if read_timeout is not None else lock_timeout(60.0)
        self._held: duckdb.DuckDBPyConnection | None = None  # the connection ``writing`` holds
        self._memo: StoreMemo | None = None  # what ``writing`` knows of the store it holds
        self._upgraded = False  # the writer checked the id format and the queue
        self._format_checked = False  # a reader checked the id format
        if not self.db_path.exists():
            if not create:
                raise NoCatalogueError(f"{self.root} holds no modelsci catalogue (no {DB_NAME}); "
                                       "`modelsci submit`, `import` or `demo` make one, or give "
                                       "--catalogue DIR")
            self._create()

    def __repr__(self) -> str:
        return f"Catalogue({str(self.root)!r})"

    def _create(self) -> None:
        """Make an empty catalogue under a temporary name, then link it into place.

        ``os.link`` fails if the name exists, so two processes creating one catalogue at once
        cannot replace a database that the other has already written to.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        self.artifacts_dir.mkdir(exist_ok=True)
        tmp = self.root / f".{DB_NAME}.new-{os.getpid()}"
        tmp.unlink(missing_ok=True)
        con = duckdb.connect(str(tmp))
        try:
            create_schema(con)
        finally:
            con.close()
        try:
            os.link(tmp, self.db_path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)

    # -- writing ---------------------------------------------------------------------------

    def commit(self, bundle: ResultBundle, *, author: str | None = None, message: str = "",
               commit_id: str | None = None, created_at: Any = None) -> Commit | None:
        """Land ``bundle`` whole or not at all; returns the commit, or None if nothing was new."""
        info = CommitInfo(author=author or _default_author(), message=message, id=commit_id,
                          created_at=created_at)
        tables = bundle_tables(bundle)  # checked and converted before the lock is taken
        write_artifacts(self.artifacts_dir, bundle.artifacts)
        with self._writer() as con:
            return land(con, tables, info, self._memo)

    @contextmanager
    def writing(self) -> Iterator[Catalogue]:
        """Hold the write lock across several commits (an import, a bulk load).

        Each commit is still its own transaction; readers wait (bounded) until the block ends.
        The block keeps what it learns of the store (``StoreMemo``), so that each commit reads
        less of it.
        """
        if self._held is not None:
            yield self
            return
        with self._writer() as con:
            self._held, self._memo = con, StoreMemo()
            try:
                yield self
            finally:
                self._held, self._memo = None, None

    def enqueue(self, runs: list[QueuedRun]) -> list[str]:
        """Queue planned runs (those not queued already); returns the ids added."""
        with self._writer() as con:
            return enqueue(con, runs)

    def claim(self, worker: str) -> QueuedRun | None:
        """Take the next queued run for ``worker``, or None when the queue is empty."""
        with self._writer() as con:
            return claim(con, worker)

    def release(self, run_ids: list[str]) -> None:
        """Put runs that were interrupted before they landed back in the queue."""
        if run_ids:
            with self._writer() as con:
                release(con, run_ids)

    def queue(self) -> pa.Table:
        """Every queued, running, succeeded and failed run of the queue, oldest first."""
        return self.query("""
            SELECT q.run_id, q.status, q.analysis_id, q.model_id, q.dataset_id, q.seed, q.attempt,
                   q.queued_at, q.finished_at, r.wall_s, q.worker, q.error, r.traceback
            FROM store.queue q LEFT JOIN store.runs r ON r.id = q.run_id
            ORDER BY q.queued_at, q.run_id""")

    @contextmanager
    def _writer(self) -> Iterator[duckdb.DuckDBPyConnection]:
        if self._held is not None:
            yield self._held
            return
        con = connect(self.db_path, read_only=False, timeout=self.write_timeout)
        try:
            # A commit is a few small statements: on one thread DuckDB does not wake the others
            # for each of them (a commit of 1,000 findings took 15% less time on 2 cores).
            con.execute("SET threads = 1")
            if not self._upgraded:
                upgrade_store(con, self.root)
                self._upgraded = True
            yield con
        finally:
            con.close()

    # -- reading ---------------------------------------------------------------------------

    @contextmanager
    def reader(self, as_of: str | int | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
        """A short-lived read-only connection, its views cut off at commit ``as_of`` if given."""
        if self._held is not None:
            raise RuntimeError("this catalogue is held for writing (inside `writing()`); read after the block ends")
        con = connect(self.db_path, read_only=True, timeout=self.read_timeout)
        try:
            if not self._format_checked:  # ids of another format would answer wrongly, not fail
                require_current_format(con, self.root)
                self._format_checked = True
            if as_of is not None:
                create_views(con, as_of_seq=resolve_commit(con, as_of), temporary=True)
            yield con
        finally:
            con.close()

    def sql(self, query: str, *, as_of: str | int | None = None, timeout: float | None = None,
            memory_limit: int | str | None = None) -> pa.Table:
        """Run a reader's query (SELECT only, no file access beyond its artifacts) as Arrow.

        The query is stopped after ``timeout`` seconds (default 60, or ``$MODELSCI_SQL_TIMEOUT``)
        and when it, or its result, needs more than ``memory_limit`` (bytes, or text such as
        ``"2GB"`` or ``"10%"``; default a quarter of the machine's memory, or
        ``$MODELSCI_SQL_MEMORY_LIMIT``), with a ``QueryLimitError`` that says which.
        """
        check_read_only(query)
        limits = ReaderLimits.resolve(timeout, memory_limit)
        with self.reader(as_of) as con:
            # the files' real paths, as lock_down allows them; no file linked in from elsewhere
            root = self.root.resolve()
            files = create_artifact_views(con, query, f"{root}/", keep=lambda path: plain_file(root / path))
            query = lock_down(con, self.root, query, limits, files)
            types = con.sql(query).types  # binds the query only: what run_bounded's Arrow loses
            return mark_json(run_bounded(con, query, limits), types)

    def query(self, query: str, params: list[Any] | dict[str, Any] | None = None, *,
              as_of: str | int | None = None) -> pa.Table:
        """Run one of modelsci's own parametrised queries (trusted SQL) as Arrow."""
        with self.reader(as_of) as con:
            relation = con.sql(query, params=params or None)
            return mark_json(relation.to_arrow_table(), relation.types)

    def findings(self, *, model: str | None = None, analysis: str | None = None, seeds: bool = False,
                 all_versions: bool = False, contradicted: bool = False, as_of: str | int | None = None) -> pa.Table:
        """The findings summary (``findings_summary``: one row per replication key, the seeds'
        values summarised), filtered by model id prefix and analysis name.

        With ``seeds``, each seed's current finding instead; with ``all_versions``, every finding
        (superseded versions and verification runs' findings too); with ``contradicted``, the
        findings linked ``contradicts`` to another (an earlier version, the first seed, or the
        original a verification re-ran), beside the value they contradict.
        """
        where, params = [], []
        if model:
            self._model_ids(model, as_of=as_of)  # a prefix that matches no model is an error, not no rows
            where.append("starts_with(f.model_id, ?)")
            params.append(_id_prefix(model))
        if analysis:
            where.append("f.analysis_name = ?")
            params.append(analysis)
        order = "f.model_id, f.analysis_id, f.kind, f.subject, f.seed, f.version"
        if contradicted:
            source = ("findings f JOIN finding_links l ON l.src_id = f.id AND l.relation = 'contradicts' "
                      "JOIN findings p ON p.id = l.dst_id")
            cols = ("f.id, f.kind, f.subject, f.model_id, f.analysis_id, f.seed, f.version, f.status, f.value, "
                    "f.ci_low, f.ci_high, json_extract_string(l.evidence, '$.between') AS between, "
                    "p.id AS contradicts_id, p.seed AS contradicts_seed, p.version AS contradicts_version, "
                    "p.value AS contradicts_value, p.ci_low AS contradicts_ci_low, "
                    "p.ci_high AS contradicts_ci_high, f.value - p.value AS difference, f.statement")
        elif seeds or all_versions:
            source = "findings f" if all_versions else "findings_current f"
            cols = ("f.id, f.kind, f.subject, f.model_id, f.analysis_id, f.seed, f.version, f.status, f.value, "
                    "f.ci_low, f.ci_high, f.n, f.unit, f.statement")
        else:
            source = "findings_summary f"
            cols = ("f.model_id, f.analysis_name, f.kind, f.subject, f.n_seeds, f.mean, f.ci_low, f.ci_high, "
                    "f.all_replicate, f.unit, f.first_id")
            order = "f.model_id, f.analysis_name, f.kind, f.subject"
        sql = f"SELECT {cols} FROM {source}"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY {order}"
        return self.query(sql, params, as_of=as_of)

    def model_id(self, ref: str, *, as_of: str | int | None = None) -> str:
        """The id of the one model whose id is ``ref`` or starts with it (``UnknownIdError`` otherwise)."""
        ids = self._model_ids(ref, as_of=as_of)
        if len(ids) > 1:
            raise UnknownIdError(f"model prefix {ref!r} is ambiguous: {len(ids)} models match "
                                 f"({', '.join(i[7:19] for i in ids[:3])}{', ...' if len(ids) > 3 else ''}); "
                                 "give more of the id")
        return ids[0]

    def _model_ids(self, ref: str, *, as_of: str | int | None = None) -> list[str]:
        """Ids of the models whose id starts with ``ref``; ``UnknownIdError`` when there is none."""
        rows = self.query("SELECT id FROM models WHERE starts_with(id, $ref) ORDER BY id",
                          {"ref": _id_prefix(ref.strip())}, as_of=as_of).column("id").to_pylist()
        if not rows:
            raise UnknownIdError(f"no model {ref!r} in the catalogue (`modelsci sql \"SELECT id FROM models\"` "
                                 "lists them)")
        return rows

    def verification(self, run_id: str, *, as_of: str | int | None = None) -> pa.Table:
        """What a verification run showed: each finding of the run it verified, beside the
        verification run's finding of the same key and the judgment linking them (null where the
        re-run made no such finding, or either value is null)."""
        return self.query("""
            WITH v AS (SELECT * FROM findings WHERE run_id = $run),
                 o AS (SELECT f.* FROM findings f JOIN runs r ON r.verifies_run_id = f.run_id WHERE r.id = $run)
            SELECT coalesce(o.kind, v.kind) AS kind, coalesce(o.subject, v.subject) AS subject,
                   o.id AS original_id, o.value AS original_value, o.ci_low AS original_ci_low,
                   o.ci_high AS original_ci_high, v.id AS verification_id, v.value, v.ci_low, v.ci_high,
                   l.relation, l.evidence
            FROM o FULL JOIN v ON v.key_id = o.key_id
            LEFT JOIN finding_links l ON l.src_id = v.id AND l.dst_id = o.id
                 AND l.relation IN ('replicates', 'contradicts')
            ORDER BY kind, subject""", {"run": run_id}, as_of=as_of)

    def history(self, key_or_id: str, *, as_of: str | int | None = None) -> pa.Table:
        """Every version of one finding key (given the key or any version's id), oldest first, then
        the verification runs' findings of the key; each with its judgment against the version
        before it (or the verified original)."""
        ref = _id_prefix(key_or_id)
        return self.query("""
            WITH k AS (SELECT DISTINCT key_id FROM findings
                       WHERE starts_with(key_id, $ref) OR starts_with(id, $ref))
            SELECT f.version, f.status, f.seed, f.id, f.value, f.ci_low, f.ci_high, f.run_id, f.analysis_id,
                   c.seq AS commit_seq, f.commit_id, c.created_at,
                   (SELECT string_agg(l.relation, ',' ORDER BY l.relation) FROM finding_links l
                    JOIN findings d ON d.id = l.dst_id AND d.key_id = f.key_id  -- not the other seeds'
                    WHERE l.src_id = f.id AND l.relation IN ('replicates', 'contradicts')) AS judgment,
                   f.statement, f.key_id
            FROM findings f JOIN k USING (key_id) JOIN commits c ON c.id = f.commit_id
            ORDER BY f.key_id, f.version NULLS LAST, c.seq""", {"ref": ref}, as_of=as_of)

    def show(self, ref: str, *, as_of: str | int | None = None) -> dict[str, Any]:
        """The row with this id (or unique id prefix) in whichever table holds it, with its links."""
        full = _id_prefix(ref)
        matches: list[tuple[str, dict[str, Any]]] = []
        for table in ("models", "datasets", "analyses", "runs", "findings", "commits", "artifacts"):
            rows = self.query(f"SELECT * FROM {table} WHERE id = $ref OR starts_with(id, $full)",
                              {"ref": ref, "full": full}, as_of=as_of).to_pylist()
            matches += [(table, row) for row in rows]
        if not matches:
            raise UnknownIdError(f"nothing in the catalogue has the id {ref!r}")
        if len(matches) > 1:
            raise UnknownIdError(f"{ref!r} is ambiguous: {len(matches)} rows match; give more of the id")
        table, row = matches[0]
        shown: dict[str, Any] = {"table": table, "row": row}
        if table == "findings":
            shown["links"] = self.query(
                "SELECT * FROM finding_links WHERE src_id = $id OR dst_id = $id ORDER BY relation",
                {"id": row["id"]}, as_of=as_of).to_pylist()
            shown["artifacts"] = self.query(
                "SELECT * FROM artifacts WHERE finding_id = $id ORDER BY name",
                {"id": row["id"]}, as_of=as_of).to_pylist()
        return shown

    def head(self) -> Commit | None:
        """The latest commit."""
        rows = self.query("SELECT * FROM commits ORDER BY seq DESC LIMIT 1").to_pylist()
        return Commit(**rows[0]) if rows else None


def json_columns(schema: pa.Schema) -> list[str]:
    """Names of the fields of a table from ``sql`` or ``query`` that hold JSON text."""
    return [f.name for f in schema if f.metadata and f.metadata.get(b"modelsci.sql_type") == b"JSON"]


def mark_json(table: pa.Table, types: list[Any]) -> pa.Table:
    """``table`` with its JSON-typed columns (by DuckDB's types) marked by ``JSON_FIELD``."""
    marked = [i for i, t in enumerate(types) if str(t) == "JSON"]
    if not marked or len(types) != table.num_columns:
        return table
    schema = table.schema
    for i in marked:
        schema = schema.set(i, schema.field(i).with_metadata(JSON_FIELD))
    return table.cast(schema)


def _id_prefix(ref: str) -> str:
    """An id or id prefix as typed, with the ``sha256:`` that every id starts with."""
    return ref if ref.startswith("sha256:") else f"sha256:{ref}"


# ASCII digits only: str.isdigit() also accepts "²", which int() refuses
_SEQ = re.compile(r"[0-9]{1,11}")
_COMMIT_PREFIX = re.compile(r"(sha256:)?[0-9a-fA-F]{1,64}")


def resolve_commit(con: duckdb.DuckDBPyConnection, ref: str | int) -> int:
    """Sequence number of a commit given by id, unique id prefix (with or without ``sha256:``) or seq."""
    if isinstance(ref, bool) or not isinstance(ref, (str, int)):  # True is an int, and no commit
        raise UnknownCommitError(f"{ref!r} is not a commit: give its seq (a number), its id or a prefix of it")
    ref = str(ref).strip()
    if _SEQ.fullmatch(ref):
        row = con.execute("SELECT seq FROM store.commits WHERE seq = ?", [int(ref)]).fetchall()
    elif _COMMIT_PREFIX.fullmatch(ref):
        prefix = _id_prefix(ref.lower())
        row = con.execute("SELECT seq FROM store.commits WHERE starts_with(id, ?)", [prefix]).fetchall()
    else:
        raise UnknownCommitError(f"{ref!r} is not a commit: give its seq (a number), its id or a prefix "
                                 "of it (hex digits, with or without sha256:)")
    if len(row) == 1:
        return row[0][0]
    if not row:
        raise UnknownCommitError(f"no commit {ref!r} in the catalogue (see `modelsci sql "
                                 "\"SELECT seq, id, message FROM commits\"`)")
    raise UnknownCommitError(f"commit prefix {ref!r} is ambiguous: {len(row)} commits match")


def _default_author() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in some containers
        return "unknown"

