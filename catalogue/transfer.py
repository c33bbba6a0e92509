"""``modelsci export`` and ``modelsci import``: a catalogue as plain Parquet files and back.

An export is a folder: ``tables/<name>.parquet`` for every table, ``artifacts/`` with the
artifact files, ``manifest.json`` (tables, rows, hashes, the catalogue commit it shows) and a
README describing the schema. Plain ``duckdb`` and ``datasets.load_dataset("parquet", ...)``
read it. An import replays the export's commits in order through the ordinary commit path,
keeping their ids; ids are content hashes, so importing twice changes nothing.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from modelsci.catalogue.docs import export_readme
from modelsci.catalogue.schema import SCHEMA_VERSION, TABLES, set_by_catalogue
from modelsci.catalogue.store import Catalogue
from modelsci.schemas.bundle import BundleArtifact, ResultBundle
from modelsci.schemas.errors import ModelsciError
from modelsci.schemas.identity import sha256_file

__all__ = ["ExportError", "ImportReport", "export", "import_export"]

FORMAT = "modelsci-export"
# Exported in this order; an import needs every one of them.
EXPORTED = ("commits", "models", "datasets", "analyses", "runs", "findings", "finding_links", "artifacts")


_GIVEN_LINKS = {"extends", "derived_from"}


class ExportError(ModelsciError, ValueError):
    """An export folder that is incomplete, damaged or edited."""


def export(cat: Catalogue, out: str | Path, *, as_of: str | None = None) -> dict[str, Any]:
    """Write every table, the artifacts, a manifest and a README to ``out``; return the manifest."""
    out = Path(out)
    (out / "tables").mkdir(parents=True, exist_ok=True)
    (out / "artifacts").mkdir(exist_ok=True)
    manifest: dict[str, Any] = {
        "format": FORMAT, "schema_version": SCHEMA_VERSION,
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
    landed: list[str] = field(default_factory=list)
    already_present: list[str] = field(default_factory=list)


def import_export(cat: Catalogue, src: str | Path) -> ImportReport:
    """Merge an export into ``cat``, commit by commit; refuse one whose files fail their hashes."""
    src = Path(src)
    tables = _read_verified(src)
    report = ImportReport()
    rows_by_commit = {name: _group_by_commit(tables[name]) for name in EXPORTED if name != "commits"}
    with cat.writing():  # one lock for the whole import; each commit still lands whole or not at all
        for commit in sorted(tables["commits"].to_pylist(), key=lambda c: c["seq"]):
            bundle = _bundle_of(src, commit["id"], rows_by_commit)
            landed = cat.commit(bundle, author=commit["author"], message=commit["message"],
                                commit_id=commit["id"], created_at=commit["created_at"])
            (report.landed if landed else report.already_present).append(commit["id"])
    return report


def _read_verified(src: Path) -> dict[str, pa.Table]:
    manifest_path = src / "manifest.json"
    if not manifest_path.is_file():
        raise ExportError(f"{src} is not a modelsci export: it has no manifest.json")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as exc:
        raise ExportError(f"{manifest_path}: not JSON ({exc})") from None
    if manifest.get("format") != FORMAT:
        raise ExportError(f"{manifest_path}: format is {manifest.get('format')!r}, expected {FORMAT!r}")
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise ExportError(f"{manifest_path}: schema version {manifest.get('schema_version')} "
                          f"is not this modelsci's {SCHEMA_VERSION}")
    tables = {}
    for name in EXPORTED:
        entry = manifest.get("tables", {}).get(name)
        if entry is None:
            raise ExportError(f"{manifest_path} lists no table {name!r}")
        path = src / entry["path"]
        if not path.is_file():
            raise ExportError(f"{path} is missing")
        if sha256_file(path) != entry["sha256"]:
            raise ExportError(f"{path} does not match its sha256 in manifest.json: the export is "
                              "damaged or was edited; refusing to import it")
        tables[name] = pq.read_table(path)
    # one file can serve several artifact rows: verify each file once
    for rel, sha in sorted({(r["path"], r["sha256"]) for r in tables["artifacts"].to_pylist()}):
        path = src / rel
        if not path.is_file() or sha256_file(path) != sha:
            raise ExportError(f"{path} is missing or does not match its sha256 {sha}; "
                              "refusing to import")
    return tables


def _group_by_commit(table: pa.Table) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = {}
    for row in table.to_pylist():
        grouped.setdefault(row["commit_id"], []).append(row)
    return grouped


def _bundle_of(src: Path, commit_id: str, rows: dict[str, dict[str, list[dict[str, Any]]]]) -> ResultBundle:
    def entities(name: str) -> list[Any]:
        spec = TABLES[name]
        out = []
        for row in rows[name].get(commit_id, []):
            values = {c: row[c] for c in spec.column_names if c not in set_by_catalogue(name)}
            for c in spec.json_columns:
                values[c] = json.loads(values[c]) if values[c] is not None else None
            out.append(spec.entity(**values))
        return out

    bundle = ResultBundle(models=entities("models"), datasets=entities("datasets"),
                          analyses=entities("analyses"), runs=entities("runs"),
                          findings=entities("findings"),
                          # supersedes / replicates / contradicts are recomputed as commits land
                          links=[link for link in entities("finding_links") if link.relation in _GIVEN_LINKS])
    for row in rows["artifacts"].get(commit_id, []):
        data = (src / row["path"]).read_bytes()
        bundle.artifacts.append(BundleArtifact(row["finding_id"], row["name"], data, row["rows"]))
    return bundle
