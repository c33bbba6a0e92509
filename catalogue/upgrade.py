"""``modelsci upgrade``: bring a catalogue of an older id format to this one, in place, in one transaction.

Id format 2 put the seed into finding keys: findings of different seeds are replications, no
longer versions of each other. That changes every finding's key and id, the artifact ids that
name them, the links between them, which finding supersedes which, and the commit ids that
digest them all. So the upgrade replays the catalogue's history: it reads every row, checks
each finding's id against its content under the old format (an edited catalogue is refused,
not blessed with new ids), drops the entity tables, creates them with today's columns, and
lands each commit again, in order, through the ordinary landing code, with its author,
message and time. Versions, supersedes links and replication judgments (across versions,
seeds and verification runs) come out as if today's modelsci had landed every commit; links
that bundles gave (``extends``, ``derived_from``) are carried with their ends renamed. Run,
model, dataset and analysis ids do not change, nor the queue, nor any artifact file.

All of it happens in one DuckDB transaction: an upgrade that fails, or is interrupted, leaves
the catalogue as it was.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import duckdb
import pyarrow as pa

from modelsci.catalogue.connection import connect
from modelsci.catalogue.landing import CommitInfo, artifact_id, bundle_tables, land_in_transaction
from modelsci.catalogue.queue import QUEUE_DDL
from modelsci.catalogue.schema import (
    ID_FORMAT,
    SCHEMA_VERSION,
    TABLES,
    OldFormatError,
    add_name_columns,
    create_tables,
    create_views,
    id_format,
    set_by_catalogue,
)
from modelsci.catalogue.store import Catalogue
from modelsci.catalogue.stored_rows import GIVEN_LINKS, entities, finding_id_of, hashed_numbers, rows_by_commit
from modelsci.schemas.bundle import ResultBundle, finding_key, replication_key
from modelsci.schemas.entities import Finding, FindingLink, source_name
from modelsci.schemas.errors import ModelsciError

__all__ = ["UpgradeError", "UpgradeReport", "upgrade"]


class UpgradeError(ModelsciError, ValueError):
    """The catalogue cannot be upgraded as it is; it was left unchanged."""


@dataclass
class UpgradeReport:
    """What ``upgrade`` did."""

    from_format: int
    to_format: int
    commits: dict[str, str] = field(default_factory=dict)
    """Old commit id -> the id it has now (seq numbers are kept)."""
    findings: int = 0
    judgments: int = 0
    """Replication judgments (``replicates``/``contradicts`` links) the catalogue holds now."""

    @property
    def upgraded(self) -> bool:
        return self.from_format != self.to_format


def upgrade(cat: Catalogue) -> UpgradeReport:
    """Recompute the ids of ``cat`` for this modelsci's id format, in one transaction (module docstring)."""
    con = connect(cat.db_path, read_only=False, timeout=cat.write_timeout)
    try:
        found = id_format(con)
        if found == ID_FORMAT:
            if add_name_columns(con):  # schema version 3: names, and whether a model was submitted or derived
                create_views(con, as_of_seq=None, temporary=False)
            return UpgradeReport(found, found)
        if found > ID_FORMAT:
            raise OldFormatError(f"the catalogue {cat.root} is of id format {found}, newer than this modelsci's "
                                 f"{ID_FORMAT}: upgrade modelsci instead")
        con.execute("SET threads = 1")  # as the writer: many small statements
        con.execute("BEGIN TRANSACTION")
        try:
            report = _replay(con, found)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("CHECKPOINT")
        return report
    finally:
        con.close()


def _replay(con: duckdb.DuckDBPyConnection, found: int) -> UpgradeReport:
    old = {name: _rows(con, name) for name in TABLES}
    for table in ("models", "datasets"):  # schema version 3's columns, for rows from before it
        for row in old[table]:
            row.setdefault("name", source_name(row["source_uri"]))
            if table == "models":
                row.setdefault("origin", "derived" if row["source_uri"].startswith("modelsci-") else "submitted")
    seeds = {r["id"]: r["seed"] for r in old["runs"]}
    files: dict[str, dict[str, str]] = {}
    for a in old["artifacts"]:
        files.setdefault(a["finding_id"], {})[a["name"]] = a["sha256"]
    renamed = {f["id"]: _upgraded(f, seeds, files.get(f["id"], {})) for f in old["findings"]}

    for name in reversed(list(TABLES)):  # rebuilt with today's columns, then refilled commit by commit
        con.execute(f"DROP TABLE store.{name}")
    create_tables(con)
    con.execute(QUEUE_DDL)
    report = UpgradeReport(found, ID_FORMAT, findings=len(renamed))
    by_commit = {name: rows_by_commit(rows) for name, rows in old.items() if name != "commits"}
    for commit in sorted(old["commits"], key=lambda c: c["seq"]):
        bundle = _bundle(commit["id"], by_commit, renamed)
        tables = bundle_tables(bundle)
        tables["artifacts"] = _artifacts(by_commit["artifacts"].get(commit["id"], []), renamed)
        landed = land_in_transaction(con, tables, CommitInfo(author=commit["author"], message=commit["message"],
                                                             created_at=commit["created_at"]))
        if landed is not None:
            report.commits[commit["id"]] = landed.id
    con.execute("INSERT OR REPLACE INTO store.meta VALUES ('schema_version', ?), ('id_format', ?)",
                [str(SCHEMA_VERSION), str(ID_FORMAT)])
    add_name_columns(con, transaction=False)  # the replayed rows of an older catalogue have no names
    create_views(con, as_of_seq=None, temporary=False)
    report.judgments = con.execute("SELECT count(*) FROM store.finding_links "
                                   "WHERE relation IN ('replicates', 'contradicts')").fetchall()[0][0]
    return report


def _rows(con: duckdb.DuckDBPyConnection, name: str) -> list[dict[str, Any]]:
    rows = con.sql(f"SELECT * FROM store.{name}").to_arrow_table().to_pylist()
    for row in rows:
        for column in TABLES[name].json_columns & row.keys():
            if isinstance(row[column], str):
                row[column] = json.loads(row[column])
    return rows


def _upgraded(f: dict[str, Any], seeds: dict[str, int], files: dict[str, str]) -> Finding:
    """The finding with the key and id of this format, once its id checks out under format 1."""
    if f["run_id"] not in seeds:
        raise UpgradeError(f"finding {f['id']}: its run {f['run_id']} is not in the catalogue; "
                           "`modelsci check` lists such problems; the catalogue was left unchanged")
    fields = (f["model_id"], f["dataset_id"], f["analysis_name"], f["params_hash"], f["kind"], f["subject"])
    old_key = replication_key(*fields)  # a format-1 key is today's replication key
    numbers = hashed_numbers(f, old_key, files) if f["key_id"] == old_key else None
    if numbers is None:
        raise UpgradeError(f"finding {f['id']}: its id does not match its content under id format 1 (edited?); "
                           "the catalogue was left unchanged")
    seed = seeds[f["run_id"]]
    key = finding_key(*fields, seed=seed)
    row = {c: f.get(c) for c in TABLES["findings"].column_names if c not in set_by_catalogue("findings")}
    value, low, high = numbers
    row.update(id=finding_id_of(f, key, numbers, files), key_id=key, replication_key=old_key, seed=seed,
               value=value, ci_low=low, ci_high=high)
    return Finding(**row)


def _bundle(cid: str, by_commit: dict[str, dict[str, list[dict[str, Any]]]], renamed: dict[str, Finding]) -> ResultBundle:
    """One commit's rows as a bundle of this format (its artifacts come as a table, ``_artifacts``)."""
    def of(name: str) -> list[Any]:
        return entities(name, by_commit[name].get(cid, []))

    links = []
    for link in by_commit["finding_links"].get(cid, []):
        if link["relation"] in GIVEN_LINKS:
            links.append(FindingLink(src_id=_renamed(renamed, link["src_id"]), dst_id=_renamed(renamed, link["dst_id"]),
                                     relation=link["relation"], evidence=link["evidence"]))
    return ResultBundle(models=of("models"), datasets=of("datasets"), analyses=of("analyses"),
                        runs=of("runs"), findings=[renamed[f["id"]] for f in by_commit["findings"].get(cid, [])],
                        links=links)


def _renamed(renamed: dict[str, Finding], old_id: str) -> str:
    if old_id not in renamed:
        raise UpgradeError(f"a link names finding {old_id}, which is not in the catalogue; `modelsci check` lists "
                           "such problems; the catalogue was left unchanged")
    return renamed[old_id].id


def _artifacts(rows: list[dict[str, Any]], renamed: dict[str, Finding]) -> pa.Table:
    """The artifacts rows of one commit as landing takes them, renamed after their findings."""
    owners = [_renamed(renamed, a["finding_id"]) for a in rows]
    return pa.table({
        "finding_id": pa.array(owners, pa.string()),
        "name": pa.array([a["name"] for a in rows], pa.string()),
        "sha256": pa.array([a["sha256"] for a in rows], pa.string()),
        "rows": pa.array([a["rows"] for a in rows], pa.int64()),
        "bytes": pa.array([a["bytes"] for a in rows], pa.int64()),
        "id": pa.array([artifact_id(o, a["name"], a["sha256"]) for o, a in zip(owners, rows)], pa.string()),
    })
