"""Names, not paths: models and datasets have names, local sources are recorded relative to the
manifest's folder, and no absolute local path reaches the catalogue, its export or its site."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from modelsci import catalogue
from modelsci.catalogue.schema import TABLES, VIEWS
from modelsci.catalogue.upgrade import upgrade
from modelsci.cli import app
from modelsci.http_serve import make_server
from modelsci.schemas.errors import ModelsciError
from tests.conftest import accuracy_bundle, modelsci, toy_model
from tests.models import breast_cancer_skops, write_manifest

NAME = "Breast cancer LR"


def cli(cat_dir: Path | str, *args: str, code: int = 0) -> str:
    """Run a modelsci command in this process; its output once it exits with ``code``."""
    result = CliRunner().invoke(app, ["--catalogue", str(cat_dir), *args], env={"COLUMNS": "200"})
    assert result.exit_code == code, (result.output, result.exception)
    return result.output


def refused(cat_dir: Path | str, *args: str) -> str:
    """The message of a command that stops on a user error (the console script prints it in one line, exit 1)."""
    result = CliRunner().invoke(app, ["--catalogue", str(cat_dir), *args])
    assert isinstance(result.exception, ModelsciError), (result.output, result.exception)
    return str(result.exception)


def other_model(folder: Path) -> Path:
    """A logistic regression on breast_cancer with weights other than ``breast_cancer_skops``'s."""
    import skops.io as sio
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = load_breast_cancer(return_X_y=True)
    folder.mkdir(parents=True)
    sio.dump(make_pipeline(StandardScaler(), LogisticRegression(C=0.01)).fit(x, y), folder / "model.skops")
    return folder


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A catalogue made through the CLI from a manifest folder under a temporary directory: a model
    and a parquet file inside it, a model outside it whose run fails, then its export and site."""
    root = tmp_path_factory.mktemp("names")
    project, cat_dir = root / "project", root / "cat"
    breast_cancer_skops(project / "models" / "lr")
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame.head(60)
    (project / "data").mkdir()
    frame.to_parquet(project / "data" / "rows.parquet")
    inside = write_manifest(project / "lr.yaml", "models/lr", dataset={"source": "data/rows.parquet"},
                            analyses=[{"name": "evaluation.performance", "params": {"n_bootstrap": 100}}])
    data = json.loads(inside.read_text())
    data["model"]["name"] = NAME
    inside.write_text(json.dumps(data))
    cli(cat_dir, "submit", str(inside), "--run", "--device", "cpu")

    outside = other_model(root / "elsewhere" / "lr2")
    manifest = write_manifest(project / "lr2.yaml", str(outside),
                              analyses=[{"name": "evaluation.performance", "params": {"n_bootstrap": 100}}])
    data = json.loads(manifest.read_text())
    data["model"]["name"] = NAME  # names are not unique
    manifest.write_text(json.dumps(data))
    cli(cat_dir, "submit", str(manifest))
    # The weights change after the run was queued: it fails, with an error naming the model's folder.
    (outside / "model.skops").write_bytes((project / "models" / "lr" / "model.skops").read_bytes())
    cli(cat_dir, "run", "--device", "cpu", code=1)

    cli(cat_dir, "export", str(root / "export"))
    cli(cat_dir, "site", "build", "--out", str(root / "site"))
    return {"root": root, "cat": cat_dir, "export": root / "export", "site": root / "site"}


def _strings(value: object) -> list[str]:
    """Every text in a value, JSON columns included."""
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in [str(k), *_strings(v)]]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [str(value)] if value is not None else []


def test_no_local_path_in_the_catalogue_its_export_or_its_site(built: dict[str, Path]) -> None:
    root = str(built["root"])
    cat = catalogue.open(built["cat"])
    models = {r["name"]: r for r in cat.sql("SELECT name, source_uri, origin FROM models").to_pylist()}
    assert list(models) == [NAME]  # both models have the one name
    sources = sorted(r["source_uri"] for r in cat.sql("SELECT source_uri FROM models").to_pylist())
    assert sources == ["local:lr2", "models/lr"]
    assert cat.sql("SELECT DISTINCT origin FROM models").to_pylist() == [{"origin": "submitted"}]
    datasets = cat.sql("SELECT name, source_uri, features FROM datasets ORDER BY name").to_pylist()
    assert [(d["name"], d["source_uri"]) for d in datasets] == [
        ("breast_cancer", "sklearn://breast_cancer"), ("rows.parquet", "data/rows.parquet")]
    assert json.loads(datasets[1]["features"])["spec"]["source"] == "data/rows.parquet"
    error = cat.sql("SELECT error, traceback FROM runs WHERE status = 'failed'").to_pylist()
    assert len(error) == 1 and "local:lr2" in error[0]["error"]  # the path, in the form the catalogue records
    # The queue is this machine's and keeps where the files are: the check below can see a path.
    queued = [s for row in cat.query("SELECT * FROM store.queue").to_pylist() for s in _strings(row)]
    assert any(root in s for s in queued)

    for name in [*TABLES, *VIEWS]:
        for row in cat.sql(f"SELECT * FROM {name}").to_pylist():
            leaked = [s for s in _strings(row) if root in s]
            assert not leaked, (name, leaked)
    for file in built["export"].rglob("*"):
        if file.suffix == ".parquet":
            for row in pq.read_table(file).to_pylist():
                assert not [s for s in _strings(row) if root in s], file
        elif file.is_file():
            assert root.encode() not in file.read_bytes(), file
    pages = [f for f in built["site"].rglob("*") if f.is_file()]
    assert any(f.name == "search_index.json" for f in pages)
    for file in pages:
        assert root.encode() not in file.read_bytes(), file
    model_pages = [f.read_text() for f in (built["site"] / "models").glob("*.html")]
    assert sum(NAME in page for page in model_pages) >= 2  # each model's page has its name


def test_commands_take_a_name_or_an_id_prefix(built: dict[str, Path]) -> None:
    cat_dir = built["cat"]
    ids = {r["source_uri"]: r["id"] for r in catalogue.open(cat_dir).sql("SELECT id, source_uri FROM models").to_pylist()}
    ambiguous = modelsci("findings", "--model", NAME, catalogue_dir=cat_dir, check=False)
    assert ambiguous.returncode == 1 and ambiguous.stdout == ""
    assert f"'{NAME}' matches 2 models" in ambiguous.stderr
    assert all(f"{NAME} ({i[7:19]})" in ambiguous.stderr for i in ids.values())
    assert "no model named 'nothing'" in refused(cat_dir, "findings", "--model", "nothing")
    assert "no model named 'nothing'" in refused(cat_dir, "compare", "nothing", "models/lr")
    by_source = json.loads(cli(cat_dir, "findings", "--model", "models/lr", "--format", "json"))
    by_prefix = json.loads(cli(cat_dir, "findings", "--model", ids["models/lr"][7:19], "--format", "json"))
    assert by_source == by_prefix and {r["kind"] for r in by_source} >= {"accuracy"}
    assert json.loads(cli(cat_dir, "findings", "--model", "local:lr2", "--format", "json")) == []  # its run failed
    shown = json.loads(cli(cat_dir, "show", "rows.parquet"))
    assert shown["table"] == "datasets" and shown["row"]["source_uri"] == "data/rows.parquet"
    compared = json.loads(cli(cat_dir, "compare", "models/lr", ids["models/lr"][:12], "--format", "json"))
    assert compared and all(r["overlap"] for r in compared if r["mean_a"] is not None)

    server = make_server(built["export"])  # the same names answer on the catalogue read over HTTP
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        assert json.loads(cli(url, "findings", "--model", "models/lr", "--format", "json")) == by_source
        assert "matches 2 models" in refused(url, "findings", "--model", NAME)
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("how", ["modelsci upgrade", "next write"])
def test_a_catalogue_from_before_names_gets_them(tmp_path: Path, how: str) -> None:
    cat = catalogue.open(tmp_path / "cat", create=True)
    bundle = accuracy_bundle(0.9, (0.8, 0.95))
    member = toy_model(1).model_copy(update={"source_uri": "modelsci-rashomon://2a65dc66/4",
                                             "base_model_id": toy_model().id})
    bundle.models.append(member)
    cat.commit(bundle)
    with duckdb.connect(str(cat.db_path)) as con:  # the catalogue as schema version 2 left it
        con.execute("ALTER TABLE store.models DROP COLUMN name; ALTER TABLE store.models DROP COLUMN origin; "
                    "ALTER TABLE store.datasets DROP COLUMN name; UPDATE store.meta SET value = '2' "
                    "WHERE key = 'schema_version'")
        for table in ("models", "datasets"):
            con.execute(f"CREATE OR REPLACE VIEW {table} AS SELECT * EXCLUDE (commit_seq) FROM store.{table}")
    if how == "modelsci upgrade":
        upgrade(catalogue.open(tmp_path / "cat"))
    else:
        catalogue.open(tmp_path / "cat").commit(accuracy_bundle(0.9, (0.8, 0.95), model=toy_model(2)))
    cat = catalogue.open(tmp_path / "cat")
    rows = cat.sql("SELECT source_uri, name, origin FROM models ORDER BY source_uri").to_pylist()
    assert [(r["source_uri"], r["name"], r["origin"]) for r in rows if r["source_uri"] != "mem://toy/2"] == [
        ("mem://toy/0", "0", "submitted"), ("modelsci-rashomon://2a65dc66/4", "4", "derived")]
    assert cat.sql("SELECT name FROM datasets").to_pylist() == [{"name": "iris"}]
    assert cat.sql("SELECT value FROM store.meta WHERE key = 'schema_version'").to_pylist() == [{"value": "3"}]
