"""`modelsci verify`: re-running the catalogue's runs from their provenance, and catching edits."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pytest

from modelsci import catalogue
from tests.conftest import modelsci
from tests.models import breast_cancer_skops, write_manifest


@pytest.fixture(scope="module")
def verified_catalogue(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A catalogue with two evaluation runs and one attribution run, all succeeded."""
    root = tmp_path_factory.mktemp("verify")
    manifest = write_manifest(root / "m.yaml", str(breast_cancer_skops(root / "lr")), analyses=[
        {"name": "evaluation.performance", "params": {"n_bootstrap": 100}},
        {"name": "attribution.kernel_shap", "params": {"examples": 2, "budget": 128}, "seeds": [0, 1]},
    ])
    modelsci("submit", str(manifest), "--run", "--device", "cpu", catalogue_dir=root / "cat", timeout=600)
    return root / "cat"


def test_verify_replicates_every_run_and_leaves_current_findings_alone(verified_catalogue: Path,
                                                                        tmp_path: Path) -> None:
    cat_dir = shutil.copytree(verified_catalogue, tmp_path / "cat")
    before = catalogue.open(cat_dir).sql("SELECT id, value FROM findings_current ORDER BY id").to_pylist()
    out = modelsci("verify", "--fraction", "1", catalogue_dir=cat_dir, timeout=600).stdout
    assert "verifying 3 run(s)" in out
    assert "3 replicated, 0 contradicted, 0 could not be verified" in out
    cat = catalogue.open(cat_dir)
    assert cat.sql("SELECT id, value FROM findings_current ORDER BY id").to_pylist() == before
    runs = cat.sql("SELECT verifies_run_id FROM runs WHERE verifies_run_id IS NOT NULL").to_pylist()
    assert len(runs) == 3
    relations = cat.sql(
        "SELECT DISTINCT l.relation FROM finding_links l JOIN findings f ON f.id = l.src_id "
        "JOIN runs r ON r.id = f.run_id WHERE r.verifies_run_id IS NOT NULL").to_pylist()
    assert relations == [{"relation": "replicates"}]


def test_verify_reports_an_edited_value_as_contradicted(verified_catalogue: Path, tmp_path: Path) -> None:
    cat_dir = shutil.copytree(verified_catalogue, tmp_path / "cat")
    db = catalogue.open(cat_dir).db_path
    with duckdb.connect(str(db)) as con:  # someone edits a stored number behind the catalogue's back
        edited = con.execute("UPDATE store.findings SET value = value + 0.2 "
                             "WHERE kind = 'accuracy' RETURNING run_id").fetchall()
    assert len(edited) == 1
    result = modelsci("verify", "--runs", "3", catalogue_dir=cat_dir, check=False, timeout=600)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "2 replicated, 1 contradicted, 0 could not be verified" in result.stdout
    line = next(line for line in result.stdout.splitlines() if line.startswith("contradicted"))
    assert edited[0][0][:19] in line and "evaluation.performance" in line and "accuracy" in line


def test_verify_says_what_it_cannot_verify(verified_catalogue: Path, tmp_path: Path) -> None:
    cat_dir = shutil.copytree(verified_catalogue, tmp_path / "cat")
    recorded = catalogue.open(cat_dir).sql("SELECT source_uri FROM models").to_pylist()[0]["source_uri"]
    source = verified_catalogue.parent / recorded  # recorded relative to the manifest's folder
    away = shutil.move(source, tmp_path / "elsewhere")  # the model is gone from this machine
    try:
        result = modelsci("verify", "--fraction", "0.5", "--seed", "3", catalogue_dir=cat_dir, check=False)
    finally:
        shutil.move(away, source)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 replicated, 0 contradicted, 2 could not be verified" in result.stdout
    assert "unverifiable" in result.stdout and "does not exist" in result.stdout


def test_import_verify_re_runs_the_share_of_runs_it_added(verified_catalogue: Path, tmp_path: Path) -> None:
    modelsci("export", str(tmp_path / "export"), catalogue_dir=verified_catalogue)
    # Not queued here, the runs' local model is found by its recorded source under --sources.
    result = modelsci("import", str(tmp_path / "export"), "--verify", "0.5", "--seed", "1",
                      "--sources", str(verified_catalogue.parent), catalogue_dir=tmp_path / "cat", timeout=600)
    assert "verifying 2 run(s)" in result.stdout  # half of the 3 runs the import added, rounded up
    assert "2 replicated, 0 contradicted, 0 could not be verified" in result.stdout
    again = modelsci("import", str(tmp_path / "export"), "--verify", "1", catalogue_dir=tmp_path / "cat")
    assert "verifying 0 run(s)" in again.stdout  # nothing new was added
