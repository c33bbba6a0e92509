"""A catalogue of an older id format is refused until `modelsci upgrade` recomputes it, in one transaction."""

from __future__ import annotations

import hashlib
from pathlib import Path

import duckdb
import pytest

from modelsci import catalogue
from modelsci.catalogue.integrity import check
from modelsci.catalogue.transfer import export, import_export
from modelsci.catalogue.upgrade import UpgradeError, upgrade
from tests.conftest import accuracy_bundle, modelsci
from tests.data.old_catalogue import AUTHOR, CREATED, MESSAGES, bundles, commit_all, extract

TABLES = ("models", "datasets", "analyses", "runs", "findings", "finding_links", "artifacts", "commits")


@pytest.fixture
def old(tmp_path: Path) -> Path:
    """The catalogue that the modelsci of id format 1 wrote (tests/data/old_catalogue.py)."""
    return extract(tmp_path / "fixture") / "catalogue"


def raw(db: Path) -> dict[str, list[tuple]]:
    """Every row of every table of the store, and the files beside the database, read without modelsci."""
    with duckdb.connect(str(db), read_only=True) as con:
        names = con.sql("SELECT table_name FROM duckdb_tables() WHERE schema_name = 'store' ORDER BY 1").fetchall()
        rows = {name: con.sql(f"SELECT * FROM store.{name} ORDER BY ALL").fetchall() for (name,) in names}
        rows["columns"] = con.sql("SELECT table_name, column_name FROM duckdb_columns() "
                                  "WHERE schema_name = 'store' ORDER BY ALL").fetchall()
    rows["files"] = sorted((p.name, hashlib.sha256(p.read_bytes()).hexdigest()) for p in (db.parent / "artifacts").iterdir())
    return rows


def test_an_older_catalogue_is_refused_for_reading_and_writing_naming_the_upgrade(old) -> None:
    before = raw(old / "catalogue.duckdb")
    cat = catalogue.open(old)
    with pytest.raises(catalogue.OldFormatError, match=r"is of an older format \(id format 1; this modelsci computes "
                                                        r"format 2, with the seed in finding keys\): run `modelsci "
                                                        r"--catalogue .* upgrade`"):
        cat.sql("SELECT * FROM findings")
    with pytest.raises(catalogue.OldFormatError, match="upgrade"):
        catalogue.open(old).commit(accuracy_bundle(0.5, None, seed=3))
    for args in (["sql", "SELECT 1"], ["findings"], ["check"]):
        result = modelsci(*args, catalogue_dir=old, check=False)
        assert result.returncode == 1 and result.stderr.strip().count("\n") == 0, result.stderr
        assert "of an older format" in result.stderr and f"modelsci --catalogue {old} upgrade" in result.stderr
    assert raw(old / "catalogue.duckdb") == before


def test_upgrade_gives_the_catalogue_todays_modelsci_lands_from_the_same_bundles(old, tmp_path) -> None:
    out = modelsci("upgrade", catalogue_dir=old).stdout
    assert out.startswith("upgraded id format 1 -> 2: 7 findings over 5 commits, 4 replication judgments")
    upgraded = catalogue.open(old)
    fresh = catalogue.open(tmp_path / "fresh", create=True)
    commit_all(fresh)
    for table in TABLES:  # ids of findings, artifacts, links and commits included
        query = f"SELECT * FROM {table} ORDER BY ALL"
        assert upgraded.sql(query).to_pylist() == fresh.sql(query).to_pylist(), table
    assert upgraded.sql("SELECT author, message, created_at FROM commits ORDER BY seq").to_pylist() == [
        {"author": AUTHOR, "message": m, "created_at": c} for m, c in zip(MESSAGES, CREATED)]
    # seeds 1 and 2 are no longer versions of seed 0: two versions of seed 0, three seeds
    rows = upgraded.sql("SELECT seed, version, status, value FROM findings WHERE kind = 'accuracy' AND subject = '' "
                        "ORDER BY seed, version").to_pylist()
    assert [tuple(r.values()) for r in rows] == [(0, 1, "superseded", 0.90), (0, 2, "current", 0.91),
                                                 (1, 1, "current", 0.40), (2, 1, "current", 0.92)]
    [summary] = upgraded.sql("SELECT n_seeds, all_replicate FROM findings_summary "
                             "WHERE kind = 'accuracy' AND subject = ''").to_pylist()
    assert summary == {"n_seeds": 3, "all_replicate": False}
    assert upgraded.sql("SELECT count(*) AS n FROM findings", as_of="2").to_pylist() == [{"n": 4}]
    assert check(upgraded).ok
    assert "nothing to do" in modelsci("upgrade", catalogue_dir=old).stdout
    # its export verifies: every id recomputes, no commit is renamed
    export(upgraded, tmp_path / "export")
    report = import_export(catalogue.open(tmp_path / "imported", create=True), tmp_path / "export")
    assert len(report.landed) == 5 and report.renamed == {}


def test_the_fixture_holds_what_its_bundles_say(old) -> None:
    """The bundles that the test above lands with today's code are those the fixture was made of."""
    with duckdb.connect(str(old / "catalogue.duckdb"), read_only=True) as con:
        stored = con.execute("SELECT r.id, r.seed, f.kind, f.subject, f.value, c.message FROM store.findings f "
                             "JOIN store.runs r ON r.id = f.run_id JOIN store.commits c ON c.id = f.commit_id "
                             "ORDER BY ALL").fetchall()
    made = sorted((f.run_id, r.seed, f.kind, f.subject, f.value, message)
                  for b, message in zip(bundles(), MESSAGES) for r in b.runs for f in b.findings)
    assert stored == made


def test_an_upgrade_that_fails_midway_leaves_the_catalogue_as_it_was(old) -> None:
    """A link of the third commit names a finding that is not there: the first two commits have
    been replayed into the rebuilt tables when the upgrade fails, and all of it is rolled back."""
    with duckdb.connect(str(old / "catalogue.duckdb")) as con:
        (commit_id, seq), = con.execute("SELECT id, seq FROM store.commits WHERE seq = 3").fetchall()
        src = con.execute("SELECT id FROM store.findings WHERE commit_seq = 3").fetchall()[0][0]
        con.execute("INSERT INTO store.finding_links VALUES (?, ?, 'derived_from', '{}', ?, ?)",
                    [src, "sha256:" + "e" * 64, commit_id, seq])
    before = raw(old / "catalogue.duckdb")
    with pytest.raises(UpgradeError, match=r"a link names finding sha256:e{64}, which is not in the catalogue"):
        upgrade(catalogue.open(old))
    assert raw(old / "catalogue.duckdb") == before
    result = modelsci("sql", "SELECT 1", catalogue_dir=old, check=False)
    assert result.returncode == 1 and "of an older format" in result.stderr


def test_an_edited_old_catalogue_is_not_blessed_with_new_ids(old) -> None:
    with duckdb.connect(str(old / "catalogue.duckdb")) as con:
        con.execute("UPDATE store.findings SET value = 0.99 WHERE value = 0.4")
    before = raw(old / "catalogue.duckdb")
    result = modelsci("upgrade", catalogue_dir=old, check=False)
    assert result.returncode == 1 and result.stderr.strip().count("\n") == 0
    assert "its id does not match its content under id format 1 (edited?)" in result.stderr
    assert raw(old / "catalogue.duckdb") == before
