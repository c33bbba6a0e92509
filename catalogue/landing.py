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

from catalogue.schema import TABLES, TableSpec, set_by_catalogue
from schemas.bundle import BundleArtifact, ResultBundle, finding_key
from schemas.entities import Commit
from schemas.identity import canonical_json, content_id

__all__ = ["BundleError", "CommitInfo", "land", "write_artifacts"]

class BundleError(ValueError):
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
    for artifact in artifacts:
        target = artifacts_dir / f"{artifact.sha256}.parquet"
        if target.is_file() and not target.is_symlink() and target.stat().st_size == len(artifact.data):
            continue  # same name means same content: written by an earlier landing
        tmp = artifacts_dir / f".tmp-{artifact.sha256}-{os.getpid()}"
        try:
            with open(tmp, "wb") as f:
                f.write(artifact.data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise OSError(exc.errno, f"could not write artifact {target.name} ({exc.strerror}); "
                          "nothing was committed") from exc
    _fsync_dir(artifacts_dir)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def land(con: duckdb.DuckDBPyConnection, bundle: ResultBundle, info: CommitInfo) -> Commit | None:
    """Add the bundle's rows in one transaction; ``None`` when it holds nothing new."""
    tables = bundle_tables(bundle)
    con.execute("BEGIN TRANSACTION")
    try:
        for name, table in tables.items():
            con.register(f"bundle_{name}", table)
        commit = _land_rows(con, info)
        if commit is None:
            con.execute("ROLLBACK")
        else:
            con.execute("COMMIT")
        return commit
    except BaseException:
        con.execute("ROLLBACK")
        raise
    finally:
        for name in tables:
            con.unregister(f"bundle_{name}")


def bundle_tables(bundle: ResultBundle) -> dict[str, pa.Table]:
    """The bundle as one Arrow table per entity, checked against the schema."""
    _check_artifacts(bundle)
    _check_finding_keys(bundle)
    tables = {
        "models": _to_arrow(TABLES["models"], bundle.models),
        "datasets": _to_arrow(TABLES["datasets"], bundle.datasets),
        "analyses": _to_arrow(TABLES["analyses"], bundle.analyses),
        "runs": _to_arrow(TABLES["runs"], bundle.runs),
        "findings": _to_arrow(TABLES["findings"], bundle.findings),
        "finding_links": _to_arrow(TABLES["finding_links"], bundle.links),
    }
    tables["artifacts"] = pa.table({
        "finding_id": pa.array([a.finding_id for a in bundle.artifacts], pa.string()),
        "name": pa.array([a.name for a in bundle.artifacts], pa.string()),
        "sha256": pa.array([a.sha256 for a in bundle.artifacts], pa.string()),
        "rows": pa.array([a.rows for a in bundle.artifacts], pa.int64()),
        "bytes": pa.array([len(a.data) for a in bundle.artifacts], pa.int64()),
        "id": pa.array([content_id({"finding": a.finding_id, "name": a.name, "sha256": a.sha256})
                        for a in bundle.artifacts], pa.string()),
    })
    return tables


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
    seen: dict[str, str] = {}
    for f in bundle.findings:
        expected = finding_key(f.model_id, f.dataset_id, f.analysis_name, f.params_hash, f.kind, f.subject)
        if f.key_id != expected:
            raise BundleError(f"finding {f.id}: key_id {f.key_id} does not match its key fields "
                              f"(expected {expected}); make findings with ResultBundle.add_finding")
        if not str(f.analysis_id).startswith(f"{f.analysis_name}@"):
            raise BundleError(f"finding {f.id}: analysis_id {f.analysis_id!r} is not a version of "
                              f"analysis_name {f.analysis_name!r}")
        if seen.setdefault(f.key_id, f.id) != f.id:
            raise BundleError(f"findings {seen[f.key_id]} and {f.id} share one key (model, dataset, "
                              f"analysis, params, kind={f.kind!r}, subject={f.subject!r}) in one bundle")


def _to_arrow(spec: TableSpec, rows: list[Any]) -> pa.Table:
    schema = spec.arrow_schema()
    columns = {name: _column(spec, name, rows) for name in spec.column_names}
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
        if pa.types.is_floating(field.type) and len(column):
            bad_mask = pc.or_(pc.is_nan(column), pc.is_inf(column)).fill_null(False)
            if pc.any(bad_mask).as_py():
                bad = rows[bad_mask.to_pylist().index(True)]
                raise BundleError(f"{spec.name}: {_label(bad)} has {field.name} = {_value(bad, field.name)}, "
                                  "a finite number or null is required")
    return table


def _value(row: Any, name: str) -> Any:
    # SQLModel table rows keep their values in __dict__; reading it skips SQLAlchemy's
    # attribute instrumentation, a third of the conversion's time.
    value = row.__dict__.get(name) if hasattr(row, "__dict__") else getattr(row, name, None)
    return value.value if isinstance(value, Enum) else value


def _column(spec: TableSpec, name: str, rows: list[Any]) -> list[Any]:
    values = [_value(row, name) for row in rows]
    if name not in spec.json_columns:
        return values
    out = []
    for row, value in zip(rows, values):
        try:
            out.append(canonical_json(value if value is not None else {}))
        except (TypeError, ValueError) as exc:
            raise BundleError(f"{spec.name}: {_label(row)} has {name} that is not finite JSON: {exc}") from None
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


def _land_rows(con: duckdb.DuckDBPyConnection, info: CommitInfo) -> Commit | None:
    if info.id is not None and _one(con, "SELECT 1 FROM store.commits WHERE id = ?", [info.id]):
        return None  # an import of a commit we already hold
    last = _one(con, "SELECT seq, id FROM store.commits ORDER BY seq DESC LIMIT 1")
    seq, parent = (last[0] + 1, last[1]) if last else (1, None)

    new = {name: _new_rows(con, name) for name in ("models", "datasets", "analyses", "runs", "findings")}
    _check_references(con)
    _stage_versions(con)
    counts = dict(zip(new, _one(con, "SELECT " + ", ".join(f"(SELECT count(*) FROM {t})" for t in new.values()))))
    n_links = _stage_links(con)
    n_artifacts = _stage_artifacts(con)
    if not any(counts.values()) and not n_links and not n_artifacts:
        return None

    created_at = info.created_at or datetime.now(UTC).replace(tzinfo=None)
    added = hashlib.sha256()
    for table in ("new_models", "new_datasets", "new_analyses", "new_runs", "new_findings", "new_links", "new_artifacts"):
        for (row_id,) in con.execute(f"SELECT id FROM {table} ORDER BY id").fetchall():
            added.update(row_id.encode())
    commit_id = info.id or content_id({
        "parent": parent, "created_at": created_at.isoformat(), "author": info.author,
        "message": info.message, "added": added.hexdigest(),
    })
    for name in ("models", "datasets", "analyses", "runs"):
        cols = _cols(name, skip={"commit_id"})
        con.execute(f"INSERT INTO store.{name} ({cols}, commit_id, commit_seq) "
                    f"SELECT {cols}, ?, ? FROM new_{name}", [commit_id, seq])
    # A landed run leaves the queue in the same transaction: never both queued and landed.
    con.execute("UPDATE store.queue SET status = r.status, error = r.error, finished_at = ? "
                "FROM bundle_runs r WHERE store.queue.run_id = r.id", [created_at])
    cols = _cols("findings", skip={"commit_id", "version"})
    con.execute(f"INSERT INTO store.findings ({cols}, version, commit_id, commit_seq) "
                f"SELECT {cols}, new_version, ?, ? FROM new_findings", [commit_id, seq])
    con.execute("UPDATE store.findings SET superseded_seq = ? WHERE id IN "
                "(SELECT prev_id FROM new_findings WHERE prev_id IS NOT NULL)", [seq])
    con.execute("INSERT INTO store.finding_links (src_id, dst_id, relation, evidence, commit_id, commit_seq) "
                "SELECT src_id, dst_id, relation, evidence, ?, ? FROM new_links", [commit_id, seq])
    con.execute("INSERT INTO store.artifacts (id, finding_id, name, path, rows, sha256, bytes, commit_id, commit_seq) "
                "SELECT id, finding_id, name, 'artifacts/' || sha256 || '.parquet', rows, sha256, bytes, ?, ? "
                "FROM new_artifacts", [commit_id, seq])
    commit = Commit(
        id=commit_id, seq=seq, parent_id=parent, created_at=created_at, author=info.author,
        message=info.message, n_models=counts["models"], n_datasets=counts["datasets"],
        n_analyses=counts["analyses"], n_runs=counts["runs"], n_findings=counts["findings"],
        n_links=n_links, n_artifacts=n_artifacts,
    )
    cols = _cols("commits")
    con.execute(f"INSERT INTO store.commits ({cols}) VALUES ({', '.join('?' * len(TABLES['commits'].columns))})",
                [getattr(commit, c) for c in TABLES["commits"].column_names])
    return commit


def _one(con: duckdb.DuckDBPyConnection, query: str, params: list[Any] | None = None) -> Any:
    """First row or None; fetches everything, since DuckDB refuses new work on an unfinished result."""
    rows = con.execute(query, params or []).fetchall()
    return rows[0] if rows else None


def _cols(table: str, skip: set[str] = frozenset()) -> str:  # type: ignore[assignment]
    return ", ".join(f'"{c}"' for c in TABLES[table].column_names if c not in skip)


def _new_rows(con: duckdb.DuckDBPyConnection, name: str) -> str:
    """Stage the bundle's rows of ``name`` whose ids the catalogue does not hold yet."""
    con.execute(f"CREATE OR REPLACE TEMP TABLE new_{name} AS "
                f"SELECT DISTINCT ON (id) * FROM bundle_{name} "
                f"WHERE id NOT IN (SELECT id FROM store.{name})")
    return f"new_{name}"


# (table, column, referenced entity): every reference a bundle row makes.
_REFERENCES = [
    ("runs", "model_id", "models"), ("runs", "dataset_id", "datasets"), ("runs", "analysis_id", "analyses"),
    ("findings", "model_id", "models"), ("findings", "dataset_id", "datasets"),
    ("findings", "analysis_id", "analyses"), ("findings", "run_id", "runs"),
    ("finding_links", "src_id", "findings"), ("finding_links", "dst_id", "findings"),
    ("artifacts", "finding_id", "findings"),
]


def _check_references(con: duckdb.DuckDBPyConnection) -> None:
    for table, column, target in _REFERENCES:
        missing = _one(
            con, f"SELECT b.{column} FROM bundle_{table} b WHERE b.{column} IS NOT NULL "
            f"AND b.{column} NOT IN (SELECT id FROM store.{target}) "
            f"AND b.{column} NOT IN (SELECT id FROM bundle_{target}) LIMIT 1")
        if missing:
            noun = target.removesuffix("s").replace("analyse", "analysis")
            raise BundleError(f"{table}.{column} names {noun} {missing[0]}, which is neither in the "
                              "bundle nor in the catalogue")


def _stage_versions(con: duckdb.DuckDBPyConnection) -> None:
    """Give each new finding the next version of its key, next to the version it supersedes."""
    con.execute("""
        CREATE OR REPLACE TEMP TABLE new_findings AS
        SELECT f.*, coalesce(prev.version, 0) + 1 AS new_version,
               prev.id AS prev_id, prev.run_id AS prev_run_id, prev.value AS prev_value,
               prev.ci_low AS prev_ci_low, prev.ci_high AS prev_ci_high,
               a.tolerance AS tolerance
        FROM new_findings f
        LEFT JOIN (SELECT key_id, id, version, run_id, value, ci_low, ci_high
                   FROM store.findings WHERE superseded_seq IS NULL) prev USING (key_id)
        LEFT JOIN (SELECT id, tolerance FROM store.analyses
                   UNION ALL SELECT id, tolerance FROM bundle_analyses) a ON a.id = f.analysis_id
        QUALIFY row_number() OVER (PARTITION BY f.id) = 1
    """)


def _stage_links(con: duckdb.DuckDBPyConnection) -> int:
    """Stage supersedes links, replication judgments and the bundle's own links; return how many."""
    con.execute("""
        CREATE OR REPLACE TEMP TABLE judged AS
        SELECT id AS src_id, prev_id AS dst_id, value - prev_value AS difference, tolerance,
               CASE WHEN tolerance IS NOT NULL THEN abs(value - prev_value) <= tolerance
                    ELSE greatest(coalesce(ci_low, value), coalesce(prev_ci_low, prev_value))
                         <= least(coalesce(ci_high, value), coalesce(prev_ci_high, prev_value))
               END AS agrees,
               value, ci_low, ci_high, prev_value, prev_ci_low, prev_ci_high
        FROM new_findings
        WHERE prev_id IS NOT NULL AND run_id <> prev_run_id
          AND value IS NOT NULL AND prev_value IS NOT NULL
    """)
    con.execute("""
        CREATE OR REPLACE TEMP TABLE new_links AS
        SELECT DISTINCT ON (src_id, dst_id, relation) *,
               src_id || ' ' || relation || ' ' || dst_id AS id  -- only for the commit's digest
        FROM (
        SELECT id AS src_id, prev_id AS dst_id, 'supersedes' AS relation,
               json_object('version', new_version, 'previous_version', new_version - 1) AS evidence
        FROM new_findings WHERE prev_id IS NOT NULL
        UNION ALL
        SELECT src_id, dst_id, CASE WHEN agrees THEN 'replicates' ELSE 'contradicts' END,
               json_object('value', value, 'ci', [ci_low, ci_high], 'previous_value', prev_value,
                           'previous_ci', [prev_ci_low, prev_ci_high], 'difference', difference,
                           'rule', CASE WHEN tolerance IS NOT NULL
                                        THEN 'absolute difference <= ' || tolerance
                                        ELSE 'overlapping 95% CIs (equality without a CI)' END)
        FROM judged
        UNION ALL
        SELECT src_id, dst_id, relation, evidence::JSON
        FROM bundle_finding_links b
        WHERE NOT EXISTS (SELECT 1 FROM store.finding_links l WHERE l.src_id = b.src_id
                          AND l.dst_id = b.dst_id AND l.relation = b.relation))
    """)
    return _one(con, "SELECT count(*) FROM new_links")[0]


def _stage_artifacts(con: duckdb.DuckDBPyConnection) -> int:
    con.execute("CREATE OR REPLACE TEMP TABLE new_artifacts AS SELECT DISTINCT ON (id) * FROM bundle_artifacts "
                "WHERE id NOT IN (SELECT id FROM store.artifacts)")
    return _one(con, "SELECT count(*) FROM new_artifacts")[0]

