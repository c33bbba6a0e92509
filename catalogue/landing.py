"""Landing a result bundle: check it, write its artifacts, then add its rows in one transaction.

Order matters for "all or nothing". Artifact files are written first, each to a temporary
name and renamed, so a file under its final name is always complete; rows go in after, in one
DuckDB transaction that either commits whole or leaves no trace. A crash between the two
leaves at most unreferenced artifact files, which ``check`` reports and the next landing of
the same bundle reuses.
"""

from __future__ import annotations

import hashlib
import io
import operator
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import ValidationError

from modelsci.catalogue.schema import TABLES, ColumnSpec, TableSpec, key_bits, set_by_catalogue
from modelsci.catalogue.store_memo import MEMO_TABLES, StoreMemo
from modelsci.catalogue.versioning import stored_findings, version_findings
from modelsci.schemas.bundle import BundleArtifact, ResultBundle, finding_key, replication_key
from modelsci.schemas.entities import Commit, source_name
from modelsci.schemas.errors import ModelsciError
from modelsci.schemas.identity import canonical_json, content_id

__all__ = ["REFERENCES", "ArtifactWriteError", "BundleError", "CommitInfo", "artifact_id", "bundle_tables",
           "commit_id", "fsync_dir", "land", "land_in_transaction", "write_artifacts"]

class ArtifactWriteError(ModelsciError, OSError):
    """An artifact file could not be written (a full disk, say); nothing was committed."""


class BundleError(ModelsciError, ValueError):
    """The bundle is malformed or refers to something missing; nothing was committed."""


@dataclass(frozen=True)
class CommitInfo:
    """Identity of a commit to land: made fresh, or carried over by an import."""

    author: str
    message: str
    id: str | None = None
    created_at: datetime | None = None


def write_artifacts(artifacts_dir: Path, artifacts: list[BundleArtifact]) -> None:
    """Write each artifact under its content hash: temp file, fsync, rename. Idempotent."""
    artifacts_dir.mkdir(parents=True, exist_ok=True)
    written = False
    for artifact in artifacts:
        target = artifacts_dir / f"{artifact.sha256}.parquet"
        if target.is_file() and not target.is_symlink() and target.stat().st_size == len(artifact.data):
            continue  # same name means same content: written by an earlier landing
        written = True
        tmp = artifacts_dir / f".tmp-{artifact.sha256}-{os.getpid()}"
        try:
            with open(tmp, "wb") as f:
                f.write(artifact.data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise ArtifactWriteError(exc.errno, f"could not write artifact {target.name} ({exc.strerror}); "
                          "nothing was committed") from exc
    if written:  # the renames are durable once the directory is
        fsync_dir(artifacts_dir)


def fsync_dir(path: Path) -> None:
    """Make a folder's entries (renames into it) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def land(con: duckdb.DuckDBPyConnection, tables: dict[str, pa.Table], info: CommitInfo,
         memo: StoreMemo | None = None) -> Commit | None:
    """Add a bundle's rows (``bundle_tables``) in one transaction; ``None`` when nothing is new.

    Statements read the bundle's Arrow tables from local variables of the function that runs
    them (DuckDB's scan of Arrow objects by name): a third less time than registering a view.
    A writing block passes its ``memo`` of the store, which answers what the store holds.
    """
    con.execute("BEGIN TRANSACTION")
    try:
        landed = _land_rows(con, tables, info, memo)
        con.execute("ROLLBACK" if landed is None else "COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    if landed is None:
        return None
    commit, new = landed
    if memo is not None:
        memo.add(new, (commit.seq, commit.id))
    return commit


def land_in_transaction(con: duckdb.DuckDBPyConnection, tables: dict[str, pa.Table], info: CommitInfo) -> Commit | None:
    """Add a bundle's rows inside the caller's transaction, leaving the queue alone: how
    ``upgrade`` replays a catalogue's history, all of it in one transaction."""
    landed = _land_rows(con, tables, info, None, touch_queue=False)
    return None if landed is None else landed[0]


def bundle_tables(bundle: ResultBundle) -> dict[str, pa.Table]:
    """The bundle as one Arrow table per entity, checked against the schema."""
    _check_artifacts(bundle)
    _check_finding_keys(bundle)
    tables = {
        "models": _to_arrow(TABLES["models"], _named(bundle.models)),
        "datasets": _to_arrow(TABLES["datasets"], _named(bundle.datasets)),
        "analyses": _to_arrow(TABLES["analyses"], bundle.analyses),
        "runs": _to_arrow(TABLES["runs"], bundle.runs),
        "findings": _to_arrow(TABLES["findings"], bundle.findings),
        "finding_links": _to_arrow(TABLES["finding_links"], bundle.links),
    }
    _check_findings(tables["findings"])
    tables["artifacts"] = pa.table({
        "finding_id": pa.array([a.finding_id for a in bundle.artifacts], pa.string()),
        "name": pa.array([a.name for a in bundle.artifacts], pa.string()),
        "sha256": pa.array([a.sha256 for a in bundle.artifacts], pa.string()),
        "rows": pa.array([a.rows for a in bundle.artifacts], pa.int64()),
        "bytes": pa.array([len(a.data) for a in bundle.artifacts], pa.int64()),
        "id": pa.array([artifact_id(a.finding_id, a.name, a.sha256) for a in bundle.artifacts], pa.string()),
    })
    return tables


def _named(rows: list[Any]) -> list[Any]:
    """Models and datasets, each with a name: a bundle's unnamed one is named after its source."""
    return [row if row.name else row.model_copy(update={"name": source_name(row.source_uri)}) for row in rows]


def artifact_id(finding_id: str, name: str, sha256: str) -> str:
    """An artifact's id: its finding, its name within the finding and the hex sha256 of its file."""
    return content_id({"finding": finding_id, "name": name, "sha256": sha256})


def commit_id(parent: str | None, created_at: datetime, author: str, message: str,
              added: dict[str, pa.Table]) -> str:
    """A commit's id: its parent, time, author, message and the rows it added, ``added`` holding
    each table's (an ``id`` column; ``src_id``, ``dst_id``, ``relation`` for links)."""
    digest = hashlib.sha256()
    for name in _DIGEST_ORDER:
        digest.update("".join(sorted(_digest_ids(name, added[name]))).encode())  # = one update per id
    return content_id({
        "parent": parent, "created_at": created_at.isoformat(), "author": author,
        "message": message, "added": digest.hexdigest(),
    })


def _check_artifacts(bundle: ResultBundle) -> None:
    for a in bundle.artifacts:
        try:
            rows = pq.read_metadata(io.BytesIO(a.data)).num_rows
        except Exception as exc:  # pyarrow raises several types for garbage bytes
            raise BundleError(f"artifact {a.name!r} of finding {a.finding_id} is not Parquet: {exc}") from None
        if rows != a.rows:
            raise BundleError(f"artifact {a.name!r} of finding {a.finding_id} says {a.rows} rows "
                              f"but its Parquet holds {rows}")


def _check_finding_keys(bundle: ResultBundle) -> None:
    """Each finding's key_id and replication_key are the hashes of its key fields (hashed again
    only where the fields are not as ``add_finding`` hashed them), and its seed is its run's."""
    seeds = {r.id: r.seed for r in bundle.runs}
    for f in bundle.findings:
        if f.run_id in seeds and f.seed != seeds[f.run_id]:
            raise BundleError(f"finding {f.id}: seed {f.seed!r} is not its run's seed {seeds[f.run_id]!r}")
        if bundle.key_unchanged(f):
            continue
        fields = (f.model_id, f.dataset_id, f.analysis_name, f.params_hash, f.kind, f.subject)
        expected = finding_key(*fields, seed=f.seed)
        if f.key_id != expected:
            raise BundleError(f"finding {f.id}: key_id {f.key_id} does not match its key fields "
                              f"(expected {expected}); make findings with ResultBundle.add_finding")
        expected = replication_key(*fields)
        if f.replication_key != expected:
            raise BundleError(f"finding {f.id}: replication_key {f.replication_key} does not match its key "
                              f"fields (expected {expected}); make findings with ResultBundle.add_finding")


def _check_findings(findings: pa.Table) -> None:
    """Each finding's analysis_id is a version of its analysis_name, and no two findings share a key."""
    ids = findings.column("analysis_id").to_pylist()
    for name, analysis_id in set(zip(findings.column("analysis_name").to_pylist(), ids)):
        if not analysis_id.startswith(f"{name}@"):
            raise BundleError(f"finding {findings.column('id')[ids.index(analysis_id)]}: analysis_id "
                              f"{analysis_id!r} is not a version of analysis_name {name!r}")
    keys = findings.column("key_id")
    if pc.count_distinct(keys).as_py() == findings.num_rows:
        return
    first: dict[str, str] = {}
    for row, (key, finding_id) in enumerate(zip(keys.to_pylist(), findings.column("id").to_pylist())):
        if first.setdefault(key, finding_id) != finding_id:  # the same finding twice is allowed
            kind, subject = findings.column("kind")[row].as_py(), findings.column("subject")[row].as_py()
            raise BundleError(f"findings {first[key]} and {finding_id} share one key (model, dataset, "
                              f"analysis, params, seed, kind={kind!r}, subject={subject!r}) in one bundle")


def _to_arrow(spec: TableSpec, rows: list[Any]) -> pa.Table:
    schema = spec.arrow_schema
    columns = {c.name: _column(spec, c, rows, values) for c, values in zip(spec.columns, _transpose(spec, rows))}
    try:
        table = pa.Table.from_pydict(columns, schema=schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        raise BundleError(_first_invalid_row(spec, rows)) from None
    for field, spec_col in zip(schema, spec.columns):
        column = table.column(field.name)
        if not field.nullable and field.name not in set_by_catalogue(spec.name) and column.null_count:
            bad = rows[column.is_null().to_pylist().index(True)]
            raise BundleError(f"{spec.name}: {_label(bad)} has no {field.name}, which is required")
        if spec_col.choices and len(column):
            unknown = pc.invert(pc.is_in(column, pa.array(spec_col.choices))).fill_null(False)
            if pc.any(unknown).as_py():
                bad = rows[unknown.to_pylist().index(True)]
                raise BundleError(f"{spec.name}: {_label(bad)} has {field.name} = "
                                  f"{_value(bad, field.name)!r}; expected one of {', '.join(spec_col.choices)}")
        # null is allowed (pc.any skips it); NaN and infinity are not
        if pa.types.is_floating(field.type) and len(column) and pc.any(pc.invert(pc.is_finite(column))).as_py():
            bad = rows[pc.is_finite(column).to_pylist().index(False)]
            raise BundleError(f"{spec.name}: {_label(bad)} has {field.name} = {_value(bad, field.name)}, "
                              "a finite number or null is required")
    return table


def _value(row: Any, name: str) -> Any:
    value = row.__dict__.get(name)
    return value.value if isinstance(value, Enum) else value


def _transpose(spec: TableSpec, rows: list[Any]) -> list[tuple[Any, ...]]:
    """The rows' values column by column, in the spec's column order."""
    if not rows:
        return [()] * len(spec.columns)
    # SQLModel rows keep their values in __dict__; reading it skips SQLAlchemy's attribute
    # instrumentation, and itemgetter reads a whole row in one call.
    row_values = operator.itemgetter(*spec.column_names)
    try:
        return list(zip(*(row_values(row.__dict__) for row in rows)))
    except KeyError:  # a row made without some field: read it field by field
        return [tuple(row.__dict__.get(name) for row in rows) for name in spec.column_names]


def _column(spec: TableSpec, col: ColumnSpec, rows: list[Any], values: tuple[Any, ...]) -> list[Any] | tuple[Any, ...]:
    if col.choices:
        return [v.value if isinstance(v, Enum) else v for v in values]
    if col.name not in spec.json_columns:
        return values
    out = []
    for row, value in zip(rows, values):
        if value is None or value == {}:
            out.append("{}")
            continue
        try:
            out.append(canonical_json(value))
        except (TypeError, ValueError) as exc:
            raise BundleError(f"{spec.name}: {_label(row)} has {col.name} that is not finite JSON: {exc}") from None
    return out


def _first_invalid_row(spec: TableSpec, rows: list[Any]) -> str:
    for row in rows:
        data = {k: v for k, v in row.__dict__.items() if not k.startswith("_")}
        try:
            spec.entity.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            return f"{spec.name}: {_label(row)} is malformed: {problems}"
    return f"{spec.name}: a row does not fit the schema"


def _label(row: Any) -> str:
    if getattr(row, "id", None):
        return f"row {row.id}"
    if getattr(row, "src_id", None):
        return f"link {row.src_id} -{_value(row, 'relation')}-> {row.dst_id}"
    return "a row"


# (table, column, referenced entity): every reference a bundle row makes.
REFERENCES = [
    ("runs", "model_id", "models"), ("runs", "dataset_id", "datasets"), ("runs", "analysis_id", "analyses"),
    ("runs", "train_dataset_id", "datasets"), ("runs", "verifies_run_id", "runs"),
    ("findings", "model_id", "models"), ("findings", "dataset_id", "datasets"),
    ("findings", "analysis_id", "analyses"), ("findings", "run_id", "runs"),
    ("finding_links", "src_id", "findings"), ("finding_links", "dst_id", "findings"),
    ("artifacts", "finding_id", "findings"),
]
# Tables in the order their new ids enter a commit's digest.
_DIGEST_ORDER = ("models", "datasets", "analyses", "runs", "findings", "finding_links", "artifacts")


def _land_rows(con: duckdb.DuckDBPyConnection, tables: dict[str, pa.Table], info: CommitInfo,
               memo: StoreMemo | None, *, touch_queue: bool = True) -> tuple[Commit, dict[str, pa.Table]] | None:
    """Stage the bundle against what the store holds, in Python, then insert only what is new;
    the commit and the new rows of each table, or None when nothing is new.

    Staging reads the store in one query (``_probe``), and a second one only when some of the
    bundle's finding keys have versions already; then it writes once per table with new rows.
    Few statements, since each costs DuckDB about a millisecond.
    """
    tables = {name: _first_of_each(table, _identity(name)) for name, table in tables.items()}
    tables["findings"] = _as_first_versions(tables["findings"])
    own = {name: _distinct(table, "id") for name, table in tables.items() if name != "finding_links"}
    store = _probe(con, tables, own, info.id, memo)
    if store.has_commit:
        return None  # an import of a commit we already hold
    seq, parent = (store.head[0] + 1, store.head[1]) if store.head else (1, None)
    stored = stored_findings(con, tables["findings"], store.key_hits)
    held = store.ids
    held["findings"].update((f.id, None) for fs in stored.values() for f in fs)
    _check_references(tables, own, held)

    new = {name: _without(tables[name], held[name]) for name in ("models", "datasets", "analyses", "runs", "artifacts")}
    new["findings"], links = version_findings(tables, stored, held["analyses"], _verifying(con, tables, own))
    new["finding_links"] = _new_links(con, tables["finding_links"], links)
    if not any(t.num_rows for t in new.values()):
        return None

    created_at = info.created_at or datetime.now(UTC).replace(tzinfo=None)
    landed_id = info.id or commit_id(parent, created_at, info.author, info.message, new)
    for name in _DIGEST_ORDER:
        _insert(con, name, new[name], landed_id, seq)
    if held["queue"] and touch_queue:
        # A landed run leaves the queue in the same transaction: never both queued and landed.
        landing_runs = tables["runs"].select(["id", "status", "error"])  # noqa: F841 - read by the SQL
        con.execute("UPDATE store.queue SET status = r.status, error = r.error, finished_at = ? "
                    "FROM landing_runs r WHERE store.queue.run_id = r.id", [created_at])
    superseded = new["findings"].filter(pc.is_valid(new["findings"].column("previous_id")))
    if superseded.num_rows:
        landing_superseded = superseded.select(["key_bits", "previous_id"])  # noqa: F841 - read by the SQL
        con.execute("UPDATE store.findings SET superseded_seq = ? FROM landing_superseded s "
                    "WHERE store.findings.key_bits = s.key_bits AND store.findings.id = s.previous_id", [seq])
    commit = Commit(
        id=landed_id, seq=seq, parent_id=parent, created_at=created_at, author=info.author,
        message=info.message, n_models=new["models"].num_rows, n_datasets=new["datasets"].num_rows,
        n_analyses=new["analyses"].num_rows, n_runs=new["runs"].num_rows,
        n_findings=new["findings"].num_rows, n_links=new["finding_links"].num_rows,
        n_artifacts=new["artifacts"].num_rows,
    )
    names = TABLES["commits"].column_names
    columns = ", ".join(f'"{c}"' for c in names)
    con.execute(f"INSERT INTO store.commits ({columns}) VALUES ({', '.join('?' * len(names))})",
                [getattr(commit, c) for c in names])
    return commit, new


def _identity(table: str) -> tuple[str, ...]:
    return ("src_id", "dst_id", "relation") if table == "finding_links" else ("id",)


def _distinct(table: pa.Table, column: str) -> set[Any]:
    return set(pc.unique(table.column(column)).to_pylist()) - {None}


def _first_of_each(table: pa.Table, key: tuple[str, ...]) -> pa.Table:
    """The table with one row per ``key``, the first; a bundle may carry a row twice (``extend``)."""
    if table.num_rows < 2:
        return table
    if len(key) == 1 and pc.count_distinct(table.column(key[0])).as_py() == table.num_rows:
        return table  # the usual case, found without a row loop
    seen: set[tuple[Any, ...]] = set()
    keep = [i for i, k in enumerate(zip(*(table.column(c).to_pylist() for c in key)))
            if not (k in seen or seen.add(k))]
    return table if len(keep) == table.num_rows else table.take(pa.array(keep, pa.int64()))


def _without(table: pa.Table, ids: set[str] | dict[str, Any]) -> pa.Table:
    """The rows whose id is not in ``ids``."""
    if not ids or not table.num_rows:
        return table
    return table.filter(pc.invert(pc.is_in(table.column("id"), pa.array(list(ids), pa.string()))))


def _as_first_versions(findings: pa.Table) -> pa.Table:
    """Findings as they land when their keys are new: with ``key_bits`` (of the replication key),
    version 1, no previous version, not a verification (``version_findings`` changes those whose
    keys have versions or other seeds, and a verification run's)."""
    bits = pa.array([key_bits(k) for k in findings.column("replication_key").to_pylist()], pa.int64())
    ones = pa.array([1] * findings.num_rows, pa.int64())
    findings = findings.set_column(findings.schema.get_field_index("version"), "version", ones)
    return findings.append_column("key_bits", bits).append_column(
        "verification", pa.repeat(pa.scalar(False), findings.num_rows)).append_column(
        "previous_id", pa.nulls(findings.num_rows, pa.string()))


def _verifying(con: duckdb.DuckDBPyConnection, tables: dict[str, pa.Table], own: dict[str, set[str]]) -> dict[str, str]:
    """The verification runs among the runs of the bundle's findings: run id -> the run it verifies."""
    runs = tables["runs"]
    verifying = {r: v for r, v in zip(runs.column("id").to_pylist(), runs.column("verifies_run_id").to_pylist())
                 if v is not None}
    outside = _distinct(tables["findings"], "run_id") - own["runs"]  # findings of a run landed before: rare
    if outside:
        condition, values = _in("id", outside)
        verifying.update(con.execute(f"SELECT id, verifies_run_id FROM store.runs WHERE {condition} "
                                     "AND verifies_run_id IS NOT NULL", values).fetchall())
    return verifying


@dataclass(frozen=True)
class _Probe:
    """What staging needs to know of the store, read in one query."""

    head: tuple[int, str] | None  # (seq, id) of the latest commit
    has_commit: bool  # the commit being imported is there already
    ids: dict[str, dict[str, Any]]  # table -> the held ids among those wanted -> tolerance (analyses) or None
    key_hits: list[int]  # key_bits of the bundle's findings that have versions


def _probe(con: duckdb.DuckDBPyConnection, tables: dict[str, pa.Table], own: dict[str, set[str]],
           commit_id: str | None, memo: StoreMemo | None) -> _Probe:
    """Read, in one query, the latest commit, which of the ids the bundle carries or refers to
    the store holds (and, under ``queue``, which of its runs are queued), and which of its
    finding keys have versions, found on ``key_bits`` alone: a scan that reads no strings,
    six times faster than a join on the 71-character keys.

    With a ``memo`` (a writing block's), the query reads only the head, the queue and finding
    ids, and the memo answers the rest: half the probe's time, a tenth of a commit's."""
    wanted = {name: set(own[name]) for name in ("models", "datasets", "analyses", "runs", "artifacts")}
    wanted["findings"] = set()  # a held finding of the bundle shows up with its key's versions
    for table, column, target in REFERENCES:
        if tables[table].num_rows:
            wanted[target] |= _distinct(tables[table], column) - (own[target] if target == "findings" else set())
    wanted["queue"] = own["runs"]
    # arg_max, not ORDER BY ... LIMIT 1: half the time (the head of an empty store is all NULL)
    parts = ["SELECT 'head' AS kind, arg_max(id, seq) AS id, max(seq) AS number, NULL::DOUBLE AS tolerance "
             "FROM store.commits"]
    params: list[Any] = []
    if commit_id is not None:
        parts.append("SELECT 'commit', id, seq, NULL FROM store.commits WHERE id = ?")
        params.append(commit_id)
    for name, ids in wanted.items():
        if ids and (memo is None or name not in MEMO_TABLES):
            column = "run_id" if name == "queue" else "id"
            tolerance = "tolerance" if name == "analyses" else "NULL"
            condition, values = _in(column, ids)
            parts.append(f"SELECT '{name}', {column}, NULL, {tolerance} FROM store.{name} WHERE {condition}")
            params += values
    if tables["findings"].num_rows and memo is None:
        # a join, not IN: it plans faster, and DISTINCT folds bits that two keys share
        parts.append("SELECT DISTINCT 'key_bits', NULL, f.key_bits, NULL FROM store.findings f "
                     "JOIN landing_findings b ON f.key_bits = b.key_bits")
        landing_findings = tables["findings"].select(["key_bits"])  # noqa: F841 - read by the SQL
    head, has_commit, hits = None, False, []
    held: dict[str, dict[str, Any]] = {name: {} for name in wanted}
    for kind, row_id, number, tolerance in con.execute(" UNION ALL ".join(parts), params).fetchall():
        if kind == "head":
            head = None if number is None else (number, row_id)
        elif kind == "commit":
            has_commit = True
        elif kind == "key_bits":
            hits.append(number)
        else:
            held[kind][row_id] = tolerance
    if memo is not None:
        if not memo.is_at(head):
            memo.read(con, head)
        held.update({name: memo.held(name, wanted[name]) for name in MEMO_TABLES})
        hits = memo.key_hits(tables["findings"].column("key_bits"))
    return _Probe(head, has_commit, held, hits)


def _in(column: str, ids: set[str]) -> tuple[str, list[Any]]:
    """``column IN (...)`` and its parameters: a placeholder per id for a few (DuckDB then filters
    the scan itself), one list parameter for many (a constant list of 1,000 took 6x longer)."""
    if len(ids) <= 32:
        return f"{column} IN ({', '.join('?' * len(ids))})", sorted(ids)
    return f"{column} IN (SELECT unnest(?::VARCHAR[]))", [sorted(ids)]


def _check_references(tables: dict[str, pa.Table], own: dict[str, set[str]],
                      held: dict[str, dict[str, Any]]) -> None:
    for table, column, target in REFERENCES:
        if not tables[table].num_rows:
            continue
        missing = _distinct(tables[table], column) - own[target] - held[target].keys()
        if missing:
            noun = target.removesuffix("s").replace("analyse", "analysis")
            raise BundleError(f"{table}.{column} names {noun} {min(missing)}, which is neither in the "
                              "bundle nor in the catalogue")


def _new_links(con: duckdb.DuckDBPyConnection, bundle_links: pa.Table,
               judged: list[tuple[str, str, str, str]]) -> pa.Table:
    """The judgments and the bundle's own links, less those the store holds; one of each."""
    rows = list(judged)
    if bundle_links.num_rows:
        condition, values = _in("src_id", _distinct(bundle_links, "src_id"))
        stored = set(con.execute(f"SELECT src_id, dst_id, relation FROM store.finding_links WHERE {condition}",
                                 values).fetchall())
        for link in bundle_links.select(["src_id", "dst_id", "relation", "evidence"]).to_pylist():
            if (link["src_id"], link["dst_id"], link["relation"]) not in stored:
                rows.append(tuple(link.values()))
    seen: set[tuple[str, str, str]] = set()
    unique = [r for r in rows if not (r[:3] in seen or seen.add(r[:3]))]
    return pa.table([pa.array(col, pa.string()) for col in zip(*unique)] if unique else [pa.array([], pa.string())] * 4,
                    names=["src_id", "dst_id", "relation", "evidence"])


def _digest_ids(name: str, table: pa.Table) -> list[str]:
    if name == "finding_links":
        return [f"{s} {r} {d}" for s, d, r in zip(*(table.column(c).to_pylist() for c in ("src_id", "dst_id", "relation")))]
    return table.column("id").to_pylist()


def _insert(con: duckdb.DuckDBPyConnection, name: str, table: pa.Table, commit_id: str, seq: int) -> None:
    """Insert the new rows of one table, stamped with the commit."""
    if not table.num_rows:
        return
    # commit_id is set here; previous_id is staging's, not a column of the store
    table = table.drop_columns([c for c in ("commit_id", "previous_id") if c in table.column_names])
    if name == "artifacts":
        table = table.append_column("path", pc.binary_join_element_wise(
            "artifacts/", table.column("sha256"), ".parquet", ""))
    landing = table.append_column("commit_id", pa.repeat(pa.scalar(commit_id, pa.string()), table.num_rows)) \
        .append_column("commit_seq", pa.repeat(pa.scalar(seq, pa.int64()), table.num_rows))  # noqa: F841
    con.execute(f"INSERT INTO store.{name} BY NAME SELECT * FROM landing")
