"""``modelsci export`` and ``modelsci import``: a catalogue as plain Parquet files and back.

An export is a folder holding these files and no others that an import reads:

- ``manifest.json``: ``{"format": "modelsci-export", "schema_version": 3, "id_format": 2, "exported_at": ...,
  "catalogue_commit": {"id", "seq"} or null, "tables": {name: {"path": "tables/<name>.parquet",
  "rows": n, "sha256": hex}}, "artifacts": {"files": n, "bytes": n}}``;
- ``tables/<name>.parquet`` for every table of ``EXPORTED``, as the catalogue's views show it;
- ``artifacts/<sha256>.parquet``: the artifact files, each named by the sha256 of its bytes;
- ``README.md``, the schema for people.

Plain ``duckdb`` and ``datasets.load_dataset("parquet", ...)`` read it. An import replays the
export's commits in order through the ordinary commit path; ids are content hashes, so
importing twice changes nothing.

An import trusts nothing in the folder. Before it writes anything, it

1. reads each file through ``schemas.untrusted_files`` (a regular file, within its size limit,
   no link leaving the folder), at exactly the paths above: a manifest naming another is refused;
2. checks the manifest's format, schema version and id format (an export of an older format
   is refused as such: its ids are computed otherwise, so they cannot be checked here), each
   table file's sha256 and row count, and each table's columns and types;
3. recomputes every id that an export holds the content of, with the functions that made it:
   findings (``finding_key``, ``replication_key``, ``finding_id``; the seed must be the run's),
   runs (``params_hash``; ``run_key`` and ``run_id`` when the run records its key and attempt,
   as planned runs do, ``verification_run_key`` for a verification run), analyses (``name@version``),
   artifacts (``artifact_id``; the path must be ``artifacts/<sha256>.parquet``) and commits
   (``commit_id``, after their chain of parents and their row counts);
4. checks that each reference names a row of the same or an earlier commit, or of the catalogue;
5. compares each row with the catalogue's row of the same id, field by field: a difference in
   what the id covers (``_COVERED``; for models and datasets, whose weights and rows an export
   does not hold, their parameter count, split, row limit and rows) is a conflict, and refused;
   other fields (a model's source or license, a run's timings) stay as the catalogue has them,
   and the report lists each one kept;
6. re-hashes every artifact file, and writes those the catalogue lacks into its ``artifacts/``.

Only then do commits land. A refusal is an ``ExportError`` naming the file, or the table and
the row; it leaves the catalogue's rows as they were and removes the artifact files it wrote.

A commit whose id does not recompute from the export is one that the exporting catalogue
imported from elsewhere (its parent, and the rows it added, were others there), or one whose
author, message or time was edited. Those are claims either way; an id that cannot vouch for
them is not carried: the commit lands under an id of its own, and the report lists it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from modelsci.catalogue.docs import export_readme
from modelsci.catalogue.landing import (
    REFERENCES,
    BundleError,
    artifact_id,
    bundle_tables,
    commit_id,
    write_artifacts,
)
from modelsci.catalogue.schema import ID_FORMAT, SCHEMA_VERSION, TABLES
from modelsci.catalogue.store import Catalogue
from modelsci.catalogue.stored_rows import GIVEN_LINKS, entities, hashed_numbers, rows_by_commit
from modelsci.schemas.bundle import (
    BundleArtifact,
    ResultBundle,
    finding_key,
    params_hash,
    replication_key,
    run_id,
    run_key,
    verification_run_key,
)
from modelsci.schemas.errors import ModelsciError
from modelsci.schemas.identity import sha256_file
from modelsci.schemas.untrusted_files import RefusedFileError, limit, open_regular, read_text

__all__ = ["FORMAT", "ExportError", "ImportReport", "export", "import_export"]

FORMAT = "modelsci-export"
# Exported in this order; an import needs every one of them.
EXPORTED = ("commits", "models", "datasets", "analyses", "runs", "findings", "finding_links", "artifacts")

_SHA256 = re.compile(r"[0-9a-f]{64}")
_COUNTS = {"models": "n_models", "datasets": "n_datasets", "analyses": "n_analyses", "runs": "n_runs",
           "findings": "n_findings", "finding_links": "n_links", "artifacts": "n_artifacts"}

# What each table's id covers: the catalogue's row of the same id must agree on these columns,
# else the import is refused as a conflict.
_COVERED: dict[str, tuple[str, ...]] = {
    "models": ("parameter_count",),  # the id hashes the tensors; their count follows from them
    "datasets": ("split", "row_limit", "rows"),  # the id hashes the rows as used, split and limit
    "analyses": ("name", "version"),
    "runs": ("model_id", "dataset_id", "train_dataset_id", "analysis_id", "params", "params_hash", "seed",
             "verifies_run_id"),
    "findings": tuple(c for c in TABLES["findings"].column_names if c not in ("version", "commit_id")),
    "artifacts": tuple(c for c in TABLES["artifacts"].column_names if c != "commit_id"),
    "finding_links": ("src_id", "dst_id", "relation"),
    "commits": ("created_at", "author", "message"),
}
# Columns that each catalogue sets for itself: neither compared nor reported.
_OWN = {"commit_id", "version", "seq", "parent_id", *_COUNTS.values()}


class ExportError(ModelsciError, ValueError):
    """An export folder that is incomplete, damaged or edited."""


def export(cat: Catalogue, out: str | Path, *, as_of: str | None = None) -> dict[str, Any]:
    """Write every table, the artifacts, a manifest and a README to ``out``; return the manifest."""
    out = Path(out)
    (out / "tables").mkdir(parents=True, exist_ok=True)
    (out / "artifacts").mkdir(exist_ok=True)
    manifest: dict[str, Any] = {
        "format": FORMAT, "schema_version": SCHEMA_VERSION, "id_format": ID_FORMAT,
        "exported_at": datetime.now(UTC).isoformat(timespec="seconds"), "tables": {},
    }
    with cat.reader(as_of) as con:
        head = next(iter(con.execute("SELECT id, seq FROM commits ORDER BY seq DESC LIMIT 1").fetchall()), None)
        manifest["catalogue_commit"] = {"id": head[0], "seq": head[1]} if head else None
        for name in EXPORTED:
            table = con.sql(f"SELECT * FROM {name}").to_arrow_table()
            path = out / "tables" / f"{name}.parquet"
            pq.write_table(table, path, compression="zstd")
            manifest["tables"][name] = {"path": f"tables/{name}.parquet", "rows": table.num_rows,
                                        "sha256": sha256_file(path)}
        files = [row[0] for row in con.execute("SELECT DISTINCT path FROM artifacts ORDER BY path").fetchall()]
    for rel in files:
        target = out / rel
        if not target.exists():
            shutil.copyfile(cat.root / rel, target)
    manifest["artifacts"] = {"files": len(files), "bytes": sum((out / rel).stat().st_size for rel in files)}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    (out / "README.md").write_text(export_readme(manifest))
    return manifest


@dataclass
class ImportReport:
    """What an import did, and what of the catalogue's own it kept."""

    landed: list[str] = field(default_factory=list)
    """The export's commits that added rows (their ids in the export)."""
    already_present: list[str] = field(default_factory=list)
    """The export's commits whose rows the catalogue held already."""
    renamed: dict[str, str] = field(default_factory=dict)
    """Commits whose ids did not recompute from the export: export id -> the id they landed under."""
    kept: list[str] = field(default_factory=list)
    """One line per row the catalogue held with other metadata (fields its id does not cover), kept."""

    def notes(self) -> list[str]:
        """The renamed commits and the kept metadata, one line each, for people."""
        return [f"commit {_short(old)} landed as {_short(new)}: its id does not recompute from the export "
                "(imported there from elsewhere, or edited)" for old, new in self.renamed.items()] + self.kept


def import_export(cat: Catalogue, src: str | Path) -> ImportReport:
    """Merge an export into ``cat``, commit by commit, after verifying all of it (module docstring).

    Raises ``ExportError`` naming the first problem; the catalogue is then as it was.
    """
    src = Path(src)
    manifest, rows, tables = _read_export(src)
    _verify_ids(rows)
    commits, recomputed = _verify_commits(rows, tables, manifest.get("catalogue_commit"))
    held = _held(cat, rows)
    _verify_references(rows, commits, held)
    report = ImportReport()
    held_commits = _compare(rows, held, report)
    by_commit = {name: rows_by_commit(rows[name]) for name in _COUNTS}
    bundles = {}
    for c in commits:
        if c["id"] not in held_commits:
            bundles[c["id"]] = _bundle_of(c["id"], by_commit)
            try:
                bundle_tables(bundles[c["id"]])  # the checks a commit makes, before any commit lands
            except BundleError as exc:
                raise ExportError(f"{_label('commits', c)}: {exc}") from None
    staged = _stage_artifacts(cat, src, rows["artifacts"])
    in_use: set[str] = set()  # the artifact files of the commits that have landed
    try:
        with cat.writing():  # one lock for the whole import; each commit still lands whole or not at all
            for commit in commits:
                cid = commit["id"]
                if cid in held_commits:
                    report.already_present.append(cid)
                    continue
                bundle = bundles[cid]
                bundle.artifacts.extend(_own_artifact(cat, a) for a in by_commit["artifacts"].get(cid, []))
                landed = cat.commit(bundle, author=commit["author"], message=commit["message"],
                                    commit_id=cid if cid in recomputed else None, created_at=commit["created_at"])
                in_use.update(a.sha256 for a in bundle.artifacts)
                (report.landed if landed else report.already_present).append(cid)
                if landed and landed.id != cid:
                    report.renamed[cid] = landed.id
    except BaseException:
        _remove(p for p in staged if p.stem not in in_use)
        raise
    return report


# -- reading ---------------------------------------------------------------------------------

def _read(src: Path, rel: str, max_bytes: int) -> bytes:
    """A file of the export: a regular file inside it, within ``max_bytes``."""
    try:
        return _bounded_read(src / rel, src, max_bytes, "export")
    except RefusedFileError as exc:
        raise ExportError(f"{exc}; refusing to import") from None


def _bounded_read(path: Path, within: Path, max_bytes: int, what: str) -> bytes:
    """A regular file's bytes, read to the size it has (``read_bytes`` would set aside ``max_bytes``
    of memory first, 16 GB for a table)."""
    with open_regular(path, within=within, what=what, max_bytes=max_bytes) as f:
        size = os.fstat(f.fileno()).st_size
        data = f.read(size + 1)
    if len(data) != size:
        raise RefusedFileError(f"{what}: {path} changed size while it was read")
    return data


def _manifest(src: Path) -> dict[str, Any]:
    path = src / "manifest.json"
    if not path.exists() and not path.is_symlink():
        raise ExportError(f"{src} is not a modelsci export: it has no manifest.json")
    try:
        manifest = json.loads(read_text(path, limit("json"), within=src, what="export"),
                              parse_constant=_no_constant)
    except RefusedFileError as exc:
        raise ExportError(f"{exc}; refusing to import") from None
    except (ValueError, RecursionError) as exc:  # json's errors are ValueErrors
        raise ExportError(f"{path}: not JSON ({_one_line(exc)})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else manifest
        raise ExportError(f"{path}: format {found!r} is not {FORMAT!r}; this is not a modelsci export")
    _check_versions(path, manifest)
    listed = manifest.get("tables")
    if not isinstance(listed, dict):
        raise ExportError(f"{path} lists no tables")
    unknown = sorted(set(listed) - set(EXPORTED))
    if unknown:
        raise ExportError(f"{path} lists table(s) this modelsci does not know: {', '.join(map(repr, unknown))}")
    for name in EXPORTED:
        entry = listed.get(name)
        if not isinstance(entry, dict):
            raise ExportError(f"{path} lists no table {name!r}")
        expected = f"tables/{name}.parquet"
        if entry.get("path") != expected:
            raise ExportError(f"{path}: table {name}'s path {_show(entry.get('path'))} is not {expected!r}; "
                              "an export's files are at their documented paths inside it")
        if not isinstance(entry.get("sha256"), str) or not _SHA256.fullmatch(entry["sha256"]):
            raise ExportError(f"{path}: table {name}'s sha256 {_show(entry.get('sha256'))} is not a hex sha256")
        if type(entry.get("rows")) is not int:
            raise ExportError(f"{path}: table {name}'s rows {_show(entry.get('rows'))} is not a whole number")
    return manifest


def _check_versions(path: Path, manifest: dict[str, Any]) -> None:
    """The export's schema version and id format are this modelsci's (format 1 wrote no id_format)."""
    version, ids = manifest.get("schema_version"), manifest.get("id_format", 1)
    for name, found in (("schema_version", version), ("id_format", ids)):
        if type(found) is not int:
            raise ExportError(f"{path}: {name} {found!r} is not a whole number")
    if version > SCHEMA_VERSION or ids > ID_FORMAT:
        raise ExportError(f"{path}: schema version {version}, id format {ids} is newer than this modelsci's "
                          f"({SCHEMA_VERSION}, {ID_FORMAT}); upgrade modelsci to import it")
    if version < SCHEMA_VERSION or ids < ID_FORMAT:
        raise ExportError(f"{path}: an export of an older format (schema version {version}, id format {ids}; this "
                          f"modelsci reads {SCHEMA_VERSION}, {ID_FORMAT}), whose ids it cannot check: run `modelsci "
                          "upgrade` on the catalogue it came from and export again (or import it with the modelsci "
                          "that made it into a catalogue of its own, then `modelsci upgrade` that catalogue)")


def _read_export(src: Path) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]], dict[str, pa.Table]]:
    """The manifest, and every table checked against it and the schema: as rows (JSON columns
    parsed) and as Arrow."""
    manifest = _manifest(src)
    rows, tables = {}, {}
    for name in EXPORTED:
        entry = manifest["tables"][name]
        data = _read(src, entry["path"], limit("dataset"))
        where = src / entry["path"]
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise ExportError(f"{where} does not match its sha256 in manifest.json: the export is damaged "
                              "or was edited; refusing to import it")
        try:
            table = pq.read_table(pa.BufferReader(data))
        except pa.ArrowException as exc:
            raise ExportError(f"{where} is not a Parquet table ({_one_line(exc)})") from None
        if table.num_rows != entry["rows"]:
            raise ExportError(f"{where} holds {table.num_rows} rows; manifest.json says {entry['rows']}")
        tables[name] = _conform(name, table, where)
        rows[name] = _parsed(name, tables[name].to_pylist())
    return manifest, rows, tables


def _conform(name: str, table: pa.Table, where: Path) -> pa.Table:
    """The table's columns of the schema, each present once, of its type, filled where required."""
    for expected in TABLES[name].arrow_schema:
        found = table.schema.get_all_field_indices(expected.name)
        if len(found) != 1:
            raise ExportError(f"{where} has {'no' if not found else 'more than one'} column {expected.name!r}")
        column = table.column(found[0])
        if column.type != expected.type:
            raise ExportError(f"{where}: column {expected.name} is {column.type}, not {expected.type}")
        if column.null_count and (not expected.nullable or expected.name == "commit_id"):
            raise ExportError(f"{where}: column {expected.name} has empty values; it may not")
    return table.select(TABLES[name].column_names)


def _parsed(name: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for row in rows:
        for column in TABLES[name].json_columns:
            if row[column] is not None:
                try:
                    row[column] = json.loads(row[column], parse_constant=_no_constant)
                except (ValueError, RecursionError) as exc:
                    raise ExportError(f"{_label(name, row)}: {column} is not JSON ({_one_line(exc)})") from None
    return rows


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number JSON allows")


# -- ids ---------------------------------------------------------------------------------------

def _verify_ids(rows: dict[str, list[dict[str, Any]]]) -> None:
    """Each row appears once, and each id that the row's content makes is that content's."""
    for name in EXPORTED:
        seen: set[Any] = set()
        for row in rows[name]:
            key = _key(name, row)
            if key in seen:
                raise ExportError(f"{_label(name, row)} appears twice in the export")
            seen.add(key)
    files: dict[str, dict[str, str]] = {}  # finding id -> artifact name -> sha256
    for a in rows["artifacts"]:
        if not _SHA256.fullmatch(a["sha256"]):
            raise ExportError(f"{_label('artifacts', a)}: sha256 {_show(a['sha256'])} is not a hex sha256")
        if a["path"] != f"artifacts/{a['sha256']}.parquet":
            raise ExportError(f"{_label('artifacts', a)}: path {_show(a['path'])} is not "
                              "'artifacts/<its sha256>.parquet'; an export's files are at their documented paths")
        if a["id"] != artifact_id(a["finding_id"], a["name"], a["sha256"]):
            raise ExportError(f"{_label('artifacts', a)}: its id does not match its finding, name and sha256")
        if files.setdefault(a["finding_id"], {}).setdefault(a["name"], a["sha256"]) != a["sha256"]:
            raise ExportError(f"{_label('artifacts', a)}: its finding has another artifact named {a['name']!r}")
    for r in rows["runs"]:
        _verify_run(r)
    seeds = {r["id"]: r["seed"] for r in rows["runs"]}  # a run the catalogue holds: see _verify_references
    for f in rows["findings"]:
        _verify_finding(f, files.get(f["id"], {}), seeds)
    for a in rows["analyses"]:
        if a["id"] != f"{a['name']}@{a['version']}":
            raise ExportError(f"{_label('analyses', a)}: its id is not its name@version ({a['name']}@{a['version']})")


def _verify_finding(f: dict[str, Any], artifacts: dict[str, str], seeds: dict[str, int]) -> None:
    label = _label("findings", f)
    if f["analysis_id"].split("@", 1)[0] != f["analysis_name"]:
        raise ExportError(f"{label}: analysis_name {f['analysis_name']!r} is not the name of {f['analysis_id']!r}")
    fields = (f["model_id"], f["dataset_id"], f["analysis_name"], f["params_hash"], f["kind"], f["subject"])
    if f["key_id"] != finding_key(*fields, seed=f["seed"]):
        raise ExportError(f"{label}: its key_id does not match its model, dataset, analysis, params, seed, kind "
                          "and subject (edited?)")
    if f["replication_key"] != replication_key(*fields):
        raise ExportError(f"{label}: its replication_key does not match its model, dataset, analysis, params, kind "
                          "and subject (edited?)")
    if f["run_id"] in seeds and seeds[f["run_id"]] != f["seed"]:
        raise ExportError(f"{label}: its seed {f['seed']} is not its run's {seeds[f['run_id']]} (edited?)")
    if hashed_numbers(f, f["key_id"], artifacts) is None:
        raise ExportError(f"{label}: its id does not match its content (value edited?)")


def _verify_run(r: dict[str, Any]) -> None:
    label = _label("runs", r)
    if not isinstance(r["params"], dict) or r["params_hash"] != params_hash(r["params"]):
        raise ExportError(f"{label}: its params_hash does not match its params (edited?)")
    env = r["environment"] if isinstance(r["environment"], dict) else {}
    if "run_key" not in env and "attempt" not in env:
        return  # a run made outside the planner: its id is a name, not a hash of its content
    if r["verifies_run_id"] is not None:
        key, covers = verification_run_key(r["verifies_run_id"]), "the run it verifies"
    else:
        key = run_key(r["model_id"], r["dataset_id"], r["analysis_id"], r["params_hash"], r["seed"],
                      r["train_dataset_id"])
        covers = "its model, dataset, training data, analysis, params and seed"
    if env.get("run_key") != key:
        raise ExportError(f"{label}: its run_key does not match {covers} (edited?)")
    if r["id"] != run_id(key, env.get("attempt")):
        raise ExportError(f"{label}: its id does not match its run key and attempt (edited?)")


def _verify_commits(rows: dict[str, list[dict[str, Any]]], tables: dict[str, pa.Table],
                    head: Any) -> tuple[list[dict[str, Any]], set[str]]:
    """The commits in order, each row belonging to one, each count right, the chain unbroken;
    and the ids of those whose id recomputes from the export."""
    commits = sorted(rows["commits"], key=lambda c: c["seq"])
    for i, c in enumerate(commits):
        if c["seq"] != i + 1 or c["parent_id"] != (commits[i - 1]["id"] if i else None):
            raise ExportError(f"{_label('commits', c)}: its seq {c['seq']} and parent do not follow the "
                              "commit before it")
    last = {"id": commits[-1]["id"], "seq": commits[-1]["seq"]} if commits else None
    if head != last:
        raise ExportError(f"manifest.json: catalogue_commit {_show(head)} is not the export's last commit")
    index = {c["id"]: i for i, c in enumerate(commits)}
    members: dict[str, dict[str, list[int]]] = {name: {c["id"]: [] for c in commits} for name in _COUNTS}
    for name in _COUNTS:
        for i, row in enumerate(rows[name]):
            if row["commit_id"] not in index:
                raise ExportError(f"{_label(name, row)}: its commit {_short(row['commit_id'])} is not in the export")
            members[name][row["commit_id"]].append(i)
    recomputed = set()
    for c in commits:
        for name, count in _COUNTS.items():
            if len(members[name][c["id"]]) != c[count]:
                raise ExportError(f"{_label('commits', c)}: {count} is {c[count]}, but the export has "
                                  f"{len(members[name][c['id']])} {name} rows of it")
        added = {name: tables[name].take(pa.array(members[name][c["id"]], pa.int64())) for name in _COUNTS}
        if commit_id(c["parent_id"], c["created_at"], c["author"], c["message"], added) == c["id"]:
            recomputed.add(c["id"])
    return commits, recomputed


# -- against the catalogue ---------------------------------------------------------------------

def _held(cat: Catalogue, rows: dict[str, list[dict[str, Any]]]) -> dict[str, dict[Any, dict[str, Any]]]:
    """The catalogue's rows with the ids that the export's rows have or refer to, by table and key."""
    wanted = {name: {row["id"] for row in rows[name]} for name in EXPORTED if name != "finding_links"}
    for table, column, target in REFERENCES:
        wanted[target] |= {row[column] for row in rows[table] if row[column] is not None}
    wanted["finding_links"] = {row["src_id"] for row in rows["finding_links"]}
    held: dict[str, dict[Any, dict[str, Any]]] = {}
    for name, ids in wanted.items():
        column = "src_id" if name == "finding_links" else "id"
        found = cat.query(f"SELECT * FROM {name} WHERE {column} IN (SELECT unnest(?::VARCHAR[]))",
                          [sorted(ids)]).to_pylist() if ids else []
        held[name] = {_key(name, row): row for row in _parsed(name, found)}
    return held


def _verify_references(rows: dict[str, list[dict[str, Any]]], commits: list[dict[str, Any]],
                       held: dict[str, dict[Any, dict[str, Any]]]) -> None:
    """Each reference names a row of the same or an earlier commit of the export, or of the catalogue."""
    seq = {c["id"]: c["seq"] for c in commits}
    for f in rows["findings"]:
        run = held["runs"].get(f["run_id"])
        if run is not None and run["seed"] != f["seed"]:
            raise ExportError(f"{_label('findings', f)}: its seed {f['seed']} is not its run's {run['seed']} (edited?)")
    landed_at = {name: {row["id"]: seq[row["commit_id"]] for row in rows[name]}
                 for name in ("models", "datasets", "analyses", "runs", "findings")}
    for table, column, target in REFERENCES:
        for row in rows[table]:
            ref = row[column]
            if ref is None or ref in held[target]:
                continue
            at = landed_at[target].get(ref)
            if at is not None and at <= seq[row["commit_id"]]:
                continue
            raise ExportError(f"{_label(table, row)}: {column} {_short(ref)} is neither in the catalogue nor "
                              "in the export at or before its commit")


def _compare(rows: dict[str, list[dict[str, Any]]], held: dict[str, dict[Any, dict[str, Any]]],
             report: ImportReport) -> set[str]:
    """Refuse rows that conflict with the catalogue's, note the metadata kept; the commits it holds."""
    for name in EXPORTED:
        for row in rows[name]:
            if name == "finding_links" and row["relation"] not in GIVEN_LINKS:
                continue  # not imported: the catalogue judges versions itself
            ours = held[name].get(_key(name, row))
            if ours is None:
                continue
            for column in _COVERED[name]:
                if ours[column] != row[column]:
                    raise ExportError(f"{_label(name, row)} conflicts with the catalogue's row of that id: its "
                                      f"{column} is {_show(row[column])} in the export but {_show(ours[column])} "
                                      "in the catalogue; refusing to import")
            kept = [c for c in TABLES[name].column_names
                    if c not in _COVERED[name] and c not in _OWN and ours[c] != row[c]]
            if kept:
                report.kept.append(f"{_label(name, row)}: kept the catalogue's "
                                   + "; ".join(f"{c} {_show(ours[c])} (the export has {_show(row[c])})" for c in kept))
    held_commits = {c["id"] for c in rows["commits"] if c["id"] in held["commits"]}
    for name in _COUNTS:  # a commit the catalogue holds is skipped whole: it must hold all of it
        for row in rows[name]:
            if (row["commit_id"] in held_commits and _key(name, row) not in held[name]
                    and (name != "finding_links" or row["relation"] in GIVEN_LINKS)):
                raise ExportError(f"commits row {_short(row['commit_id'])}: the catalogue holds this "
                                  f"commit but not its {_label(name, row)}; refusing to import")
    return held_commits


# -- landing -----------------------------------------------------------------------------------

def _bundle_of(cid: str, by_commit: dict[str, dict[str, list[dict[str, Any]]]]) -> ResultBundle:
    """The rows of one commit as a bundle, without its artifacts (added once they are verified)."""
    def of(name: str) -> list[Any]:
        return entities(name, by_commit[name].get(cid, []))

    return ResultBundle(models=of("models"), datasets=of("datasets"), analyses=of("analyses"), runs=of("runs"),
                        findings=of("findings"), links=[link for link in of("finding_links")
                                                        if link.relation in GIVEN_LINKS])


def _stage_artifacts(cat: Catalogue, src: Path, artifacts: list[dict[str, Any]]) -> list[Path]:
    """Re-hash each artifact file of the export and write those the catalogue lacks into its
    ``artifacts/``; the files written. On a refusal, nothing is left written."""
    by_file: dict[str, list[dict[str, Any]]] = {}
    for a in artifacts:
        by_file.setdefault(a["sha256"], []).append(a)
    staged: list[Path] = []
    try:
        for sha, same in sorted(by_file.items()):
            rel = f"artifacts/{sha}.parquet"
            data = _read(src, rel, limit("dataset"))
            digest = hashlib.sha256(data).hexdigest()
            if digest != sha:
                raise ExportError(f"{src / rel}: its bytes hash to {digest}, not to the sha256 that its name and "
                                  "its artifacts row give (changed after export?); refusing to import")
            rows = _parquet_rows(data, src / rel)
            for a in same:
                if (a["rows"], a["bytes"]) != (rows, len(data)):
                    raise ExportError(f"{_label('artifacts', a)}: it says {a['rows']} rows in {a['bytes']} bytes, "
                                      f"but {rel} holds {rows} rows in {len(data)} bytes")
            target = cat.artifacts_dir / f"{sha}.parquet"
            if target.exists() or target.is_symlink():
                _own_bytes(cat, sha)  # the catalogue's copy must be sound too
                continue
            write_artifacts(cat.artifacts_dir, [BundleArtifact(same[0]["finding_id"], same[0]["name"], data, rows)])
            staged.append(target)
    except BaseException:
        _remove(staged)
        raise
    return staged


def _parquet_rows(data: bytes, where: Path) -> int:
    try:
        return pq.read_metadata(pa.BufferReader(data)).num_rows
    except pa.ArrowException as exc:
        raise ExportError(f"{where} is not a Parquet file ({_one_line(exc)})") from None


def _own_bytes(cat: Catalogue, sha: str) -> bytes:
    """An artifact file of the catalogue itself, which must hash to its name."""
    path = cat.artifacts_dir / f"{sha}.parquet"
    try:
        data = _bounded_read(path, cat.artifacts_dir, limit("dataset"), "catalogue")
    except RefusedFileError as exc:
        raise ExportError(f"{exc}; `modelsci check` lists such files: remove it and import again") from None
    if hashlib.sha256(data).hexdigest() != sha:
        raise ExportError(f"the catalogue's own {path} does not hash to its name (damaged?); `modelsci check` "
                          "lists such files: remove it and import again")
    return data


def _own_artifact(cat: Catalogue, a: dict[str, Any]) -> BundleArtifact:
    return BundleArtifact(a["finding_id"], a["name"], _own_bytes(cat, a["sha256"]), a["rows"])


def _remove(paths: Iterable[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


# -- words -------------------------------------------------------------------------------------

def _key(name: str, row: dict[str, Any]) -> Any:
    return (row["src_id"], row["dst_id"], row["relation"]) if name == "finding_links" else row["id"]


def _label(name: str, row: dict[str, Any]) -> str:
    if name == "finding_links":
        return f"finding_links row {_short(row['src_id'])} -{row['relation']}-> {_short(row['dst_id'])}"
    return f"{name} row {_short(row['id'])}"


def _short(value: Any) -> str:
    text = str(value)
    return text[:19] + "..." if text.startswith("sha256:") and len(text) > 19 else _show(value)


def _show(value: Any) -> str:
    text = repr(value.isoformat() if isinstance(value, datetime) else value)
    return text if len(text) <= 200 else text[:197] + "..."


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
