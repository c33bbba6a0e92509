"""Export and import: round trips, idempotence, readers of plain Parquet, damaged exports."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from modelsci import catalogue
from modelsci.catalogue.integrity import check
from modelsci.catalogue.transfer import ExportError, export, import_export
from modelsci.schemas import FindingLink
from tests.bundles import rerun, verification_of
from tests.conftest import accuracy_bundle, modelsci, toy_model

QUERIES = [
    "SELECT id, version, status, value, ci_low, ci_high, commit_id FROM findings ORDER BY id",
    "SELECT * FROM findings_current ORDER BY id",
    "SELECT * FROM findings_summary ORDER BY replication_key",
    "SELECT src_id, dst_id, relation, evidence FROM finding_links ORDER BY ALL",
    "SELECT * FROM commits ORDER BY seq",
    "SELECT * FROM artifacts ORDER BY id",
    "SELECT * FROM models ORDER BY id",
    "SELECT * FROM runs ORDER BY id",
]


@pytest.fixture
def source(tmp_path: Path) -> catalogue.Catalogue:
    cat = catalogue.open(tmp_path / "source", create=True)
    first = accuracy_bundle(0.90, (0.85, 0.95), seed=0)
    first.add_finding(first.runs[0], kind="per_example", statement="rows",
                      artifacts={"rows": pa.table({"example": [0, 1, 2], "ok": [True, True, False]})})
    cat.commit(first, message="first")
    cat.commit(rerun(0.40, (0.35, 0.45), 1), message="contradicting rerun")
    other = accuracy_bundle(0.7, None, model=toy_model(seed=3), subject="class 1")
    other.links.append(FindingLink(src_id=other.findings[0].id, dst_id=first.findings[0].id,
                                   relation="extends"))
    cat.commit(other, message="another model")
    cat.commit(accuracy_bundle(0.41, (0.36, 0.46), seed=1), message="another seed")
    cat.commit(verification_of(first, 0.9, (0.85, 0.95)), message="verification of the first")
    return cat


def answers(cat: catalogue.Catalogue) -> list[list[dict]]:
    return [cat.sql(q).to_pylist() for q in QUERIES]


def test_export_then_import_into_an_empty_catalogue_gives_identical_answers(source, tmp_path) -> None:
    manifest = export(source, tmp_path / "export")
    assert manifest["catalogue_commit"]["seq"] == 5
    assert manifest["tables"]["findings"]["rows"] == 6
    assert (manifest["schema_version"], manifest["id_format"]) == (3, 2)
    target = catalogue.open(tmp_path / "target", create=True)
    report = import_export(target, tmp_path / "export")
    assert len(report.landed) == 5 and report.renamed == {}
    assert answers(target) == answers(source)
    # the judgments were made again as the commits landed: a version's, a seed's, a verification's
    assert target.sql("SELECT json_extract_string(evidence, '$.between') AS between, relation FROM finding_links "
                      "WHERE relation IN ('replicates', 'contradicts') ORDER BY ALL").to_pylist() == [
        {"between": "seeds", "relation": "replicates"}, {"between": "verification", "relation": "replicates"},
        {"between": "versions", "relation": "contradicts"}]
    assert check(target).ok
    # as-of works on the imported history too
    first = source.sql("SELECT id FROM commits WHERE seq = 1").column("id")[0].as_py()
    assert target.sql("SELECT count(*) AS n FROM findings", as_of=first).to_pylist() == [{"n": 2}]


def test_importing_twice_changes_nothing(source, tmp_path) -> None:
    export(source, tmp_path / "export")
    target = catalogue.open(tmp_path / "target", create=True)
    import_export(target, tmp_path / "export")
    before = answers(target)
    report = import_export(target, tmp_path / "export")
    assert report.landed == [] and len(report.already_present) == 5
    assert answers(target) == before
    # importing into the source itself changes nothing either
    report = import_export(source, tmp_path / "export")
    assert report.landed == []


def test_the_cli_round_trip(source, tmp_path) -> None:
    modelsci("export", str(tmp_path / "export"), catalogue_dir=source.root)
    out = modelsci("import", str(tmp_path / "export"), catalogue_dir=tmp_path / "target")
    assert "imported 5 commit(s); 0 already present" in out.stdout
    again = modelsci("import", str(tmp_path / "export"), catalogue_dir=tmp_path / "target")
    assert "imported 0 commit(s); 5 already present" in again.stdout


def test_plain_duckdb_reads_the_exported_parquet(source, tmp_path) -> None:
    export(source, tmp_path / "export")
    con = duckdb.connect()
    rows = con.sql(f"SELECT id, version, status FROM '{tmp_path}/export/tables/findings.parquet' "
                   "ORDER BY id").fetchall()
    assert rows == [tuple(r.values()) for r in
                    source.sql("SELECT id, version, status FROM findings ORDER BY id").to_pylist()]
    path = con.sql(f"SELECT path FROM '{tmp_path}/export/tables/artifacts.parquet'").fetchall()[0][0]
    assert con.sql(f"SELECT count(*) FROM '{tmp_path}/export/{path}'").fetchall() == [(3,)]


def test_datasets_loads_the_findings_table(source, tmp_path) -> None:
    from datasets import load_dataset

    export(source, tmp_path / "export")
    loaded = load_dataset("parquet", data_files=str(tmp_path / "export/tables/findings.parquet"),
                          split="train", cache_dir=str(tmp_path / "hf-cache"))
    assert loaded.num_rows == 6
    assert sorted(loaded["version"], key=lambda v: (v is None, v)) == [1, 1, 1, 1, 2, None]
    assert sorted(loaded["status"]) == ["current", "current", "current", "current", "superseded", "verification"]


def test_a_damaged_export_is_refused_and_nothing_lands(source, tmp_path) -> None:
    export(source, tmp_path / "export")
    findings = tmp_path / "export/tables/findings.parquet"
    findings.write_bytes(findings.read_bytes()[:-10] + b"0123456789")
    target = catalogue.open(tmp_path / "target", create=True)
    with pytest.raises(ExportError, match="findings.parquet does not match its sha256 in manifest.json"):
        import_export(target, tmp_path / "export")
    assert target.sql("SELECT count(*) AS n FROM commits").to_pylist() == [{"n": 0}]
    result = modelsci("import", str(tmp_path / "export"), catalogue_dir=tmp_path / "t2", check=False)
    assert result.returncode == 1 and "does not match its sha256" in result.stderr


def test_a_changed_artifact_in_an_export_is_refused(source, tmp_path) -> None:
    export(source, tmp_path / "export")
    [artifact] = (tmp_path / "export/artifacts").iterdir()
    artifact.write_bytes(b"not the same")
    with pytest.raises(ExportError, match=r"artifacts/\w+\.parquet: its bytes hash to \w+, not to the sha256"):
        import_export(catalogue.open(tmp_path / "target", create=True), tmp_path / "export")


def test_the_export_describes_itself(source, tmp_path) -> None:
    export(source, tmp_path / "export")
    manifest = json.loads((tmp_path / "export/manifest.json").read_text())
    assert set(manifest["tables"]) == {"commits", "models", "datasets", "analyses", "runs",
                                       "findings", "finding_links", "artifacts"}
    readme = (tmp_path / "export/README.md").read_text()
    assert "### `findings`" in readme and "`ci_low`" in readme
