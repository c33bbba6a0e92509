"""A reader's SQL can neither change the catalogue nor read or write outside it."""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from modelsci import catalogue
from modelsci.schemas.identity import sha256_file
from tests.conftest import accuracy_bundle, modelsci

WRITES = {
    "INSERT INTO store.findings SELECT * FROM store.findings": "INSERT",
    "UPDATE store.findings SET value = 0": "UPDATE",
    "DELETE FROM store.findings": "DELETE",
    "CREATE TABLE t AS SELECT 1": "CREATE",
    "DROP VIEW findings": "DROP",
    "COPY findings TO 'stolen.csv'": "COPY",
    "COPY (SELECT 1) TO 'artifacts/x.parquet'": "COPY",
    "ATTACH 'other.duckdb' AS other": "ATTACH",
    "INSTALL httpfs": "LOAD",
    "LOAD json": "LOAD",
    "PRAGMA enable_profiling": "PRAGMA",
    "SET enable_external_access = true": "SET",
    "EXPORT DATABASE 'out'": "EXPORT",
    "CHECKPOINT": "CALL",
    "SELECT 1; DELETE FROM store.findings": "DELETE",
}


@pytest.fixture
def filled(cat) -> catalogue.Catalogue:
    bundle = accuracy_bundle(0.9, (0.8, 1.0))
    bundle.add_finding(bundle.runs[0], kind="per_example", statement="rows",
                       artifacts={"rows": pa.table({"example": [0, 1], "score": [0.25, 0.75]})})
    cat.commit(bundle)
    return cat


@pytest.mark.parametrize("statement", sorted(WRITES))
def test_every_kind_of_write_is_refused_and_the_file_is_unchanged(filled, statement) -> None:
    before = sha256_file(filled.db_path)
    with pytest.raises(catalogue.ReadOnlySQLError, match=f"refused: {WRITES[statement]} statements are not allowed"):
        filled.sql(statement)
    assert sha256_file(filled.db_path) == before
    assert not (filled.root / "stolen.csv").exists() and not (Path.cwd() / "stolen.csv").exists()


def test_the_cli_refuses_a_write_with_a_clear_message_and_exit_code(filled) -> None:
    before = sha256_file(filled.db_path)
    result = modelsci("sql", "DELETE FROM store.findings", catalogue_dir=filled.root, check=False)
    assert result.returncode == 1
    assert "refused: DELETE statements are not allowed" in result.stderr
    assert "Traceback" not in result.stderr
    assert sha256_file(filled.db_path) == before


def test_writes_fail_even_past_the_statement_check(filled) -> None:
    """Layers two and three on their own: a locked-down read-only connection."""
    from modelsci.catalogue.readonly import lock_down

    with filled.reader() as con:
        lock_down(con, filled.root, "")
        with pytest.raises(duckdb.Error):
            con.execute("DELETE FROM store.findings")
        with pytest.raises(duckdb.Error, match="(?i)permission|disabled"):
            con.execute(f"COPY (SELECT 1) TO '{filled.root / 'escape.csv'}'")
        with pytest.raises(duckdb.Error, match="locked"):
            con.execute("SET enable_external_access = true")
    assert not (filled.root / "escape.csv").exists()


@pytest.mark.parametrize("query", [
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_text('/etc/passwd')",
    "SELECT * FROM '/etc/passwd'",
    "SELECT * FROM read_csv('artifacts/../../../../../../etc/passwd')",
    "SELECT * FROM glob('/etc/*')",
])
def test_reading_outside_the_catalogue_is_refused(filled, query) -> None:
    # a bare path is not even looked up as a file once file access is off
    with pytest.raises(duckdb.Error, match="(?i)permission|disabled|does not exist"):
        filled.sql(query)


def test_path_tricks_through_an_artifact_path_are_refused(filled) -> None:
    path = filled.sql("SELECT path FROM artifacts").column("path")[0].as_py()
    with pytest.raises(duckdb.Error, match="(?i)permission|disabled"):
        filled.sql(f"SELECT * FROM read_csv('{path}/../../../../../../etc/passwd')")
    with pytest.raises(duckdb.Error, match="(?i)permission|disabled"):
        filled.sql(f"SELECT * FROM read_csv('{filled.root / path}/../../../../../../etc/passwd')")


def test_a_symlink_planted_under_an_artifact_name_is_not_followed(filled) -> None:
    fake = "f" * 64
    os.symlink("/etc/passwd", filled.artifacts_dir / f"{fake}.parquet")
    with pytest.raises(duckdb.Error, match="(?i)permission|disabled"):
        filled.sql(f"SELECT * FROM read_csv('artifacts/{fake}.parquet')")


def test_a_file_hard_linked_in_under_an_artifact_name_is_not_read(filled, tmp_path) -> None:
    secret = tmp_path / "secret.csv"  # on the catalogue's file system, so that it can be linked
    secret.write_text("password\nhunter2\n")
    fake = "e" * 64
    os.link(secret, filled.artifacts_dir / f"{fake}.parquet")
    with pytest.raises(duckdb.Error, match="(?i)permission|disabled"):
        filled.sql(f"SELECT * FROM read_csv('artifacts/{fake}.parquet')")


def test_a_real_artifact_with_a_second_name_is_not_read_either(filled, tmp_path) -> None:
    path = filled.sql("SELECT path FROM artifacts").column("path")[0].as_py()
    assert filled.sql(f"SELECT count(*) AS n FROM '{path}'").to_pylist() == [{"n": 2}]
    os.link(filled.root / path, tmp_path / "elsewhere.parquet")  # whoever holds the other name can change it
    with pytest.raises(duckdb.Error, match="(?i)permission|disabled"):
        filled.sql(f"SELECT count(*) AS n FROM '{path}'")


def test_artifact_rows_can_be_selected_by_relative_or_absolute_path(filled) -> None:
    path = filled.sql("SELECT path FROM artifacts").column("path")[0].as_py()
    rows = filled.sql(f"SELECT example, score FROM '{path}' ORDER BY example").to_pylist()
    assert rows == [{"example": 0, "score": 0.25}, {"example": 1, "score": 0.75}]
    absolute = filled.sql(f"SELECT sum(score) AS s FROM read_parquet('{filled.root / path}')").to_pylist()
    assert absolute == [{"s": 1.0}]
    out = modelsci("sql", f"SELECT count(*) AS n FROM '{path}'", "--format", "csv", catalogue_dir=filled.root)
    assert out.stdout.splitlines() == ["n", "2"]


def test_cli_output_formats(filled, tmp_path) -> None:
    import json

    import pyarrow.parquet as pq

    query = "SELECT kind, value FROM findings_current ORDER BY kind"
    as_json = json.loads(modelsci("sql", query, "-f", "json", catalogue_dir=filled.root).stdout)
    assert as_json == [{"kind": "accuracy", "value": 0.9}, {"kind": "per_example", "value": None}]
    modelsci("sql", query, "-f", "parquet", "--out", str(tmp_path / "out.parquet"), catalogue_dir=filled.root)
    assert pq.read_table(tmp_path / "out.parquet").to_pylist() == as_json
    table = modelsci("sql", query, catalogue_dir=filled.root).stdout
    assert "accuracy" in table and "2 rows" in table
