"""`modelsci publish`, a published catalogue read over HTTP with range requests, Croissant and the dataset card."""

from __future__ import annotations

import http.client
import json
import math
import threading
from collections.abc import Iterator
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from modelsci import catalogue
from modelsci.http_serve import make_server
from modelsci.publish import FINDINGS_ROW_GROUP, publish
from modelsci.schemas import ResultBundle
from tests.bundles import rerun
from tests.conftest import accuracy_bundle, modelsci, toy_analysis, toy_dataset, toy_model, toy_run

N_MODELS, FINDINGS_PER_RUN = 16, 500
N_FINDINGS = 2 * N_MODELS * FINDINGS_PER_RUN + 2  # and an accuracy finding in two versions


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    """A catalogue of 16 models x 2 seeds x 500 findings (one with an artifact per run), landed one
    commit per seed with the models' findings interleaved, then a finding in two versions; published
    and served by the range handler on a free local port."""
    tmp = tmp_path_factory.mktemp("publish")
    cat = catalogue.open(tmp / "cat", create=True)
    rng = np.random.default_rng(0)
    analysis = toy_analysis()
    models = [toy_model(m) for m in range(N_MODELS)]
    with cat.writing():
        for seed in (0, 1):
            runs = [toy_run(model, analysis, seed=seed, run_id=f"run-{m}-{seed}") for m, model in enumerate(models)]
            bundle = ResultBundle(models=models, datasets=[toy_dataset()], analyses=[analysis], runs=runs)
            for i in range(FINDINGS_PER_RUN):
                for run in runs:
                    value = round(float(rng.random()), 6)
                    # draws that do not compress: the findings file passes 2 MiB, below which DuckDB reads
                    # a remote file whole rather than by its row groups
                    draws = [round(float(x), 9) for x in rng.random(6)]
                    artifacts = {"attributions": pa.table({"example": [0, 1, 2], "value": draws[:3]})} if i == 0 else None
                    bundle.add_finding(run, kind="importance", subject=f"feature {i}", value=value,
                                       statement=f"feature {i} has importance {value}", ci=(value - 0.1, value + 0.1),
                                       n=38, unit="fraction", metrics={"draws": draws}, artifacts=artifacts)
            cat.commit(bundle, message=f"seed {seed}")
        cat.commit(accuracy_bundle(0.8, (0.7, 0.9), model=models[0]), message="an accuracy")
        cat.commit(rerun(0.9, (0.85, 0.95), 1, model=models[0]), message="the accuracy again: a new version")
    out = tmp / "public"
    report = publish(cat, out)
    server = make_server(out)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield {"cat": cat, "out": out, "report": report, "server": server,
               "url": f"http://127.0.0.1:{server.server_address[1]}/", "tmp": tmp}
    finally:
        server.shutdown()
        server.server_close()


def _get(url: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    host, port = url.removeprefix("http://").rstrip("/").split(":")
    con = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        con.request("GET", path, headers=headers or {})
        response = con.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        con.close()


def _close(a: pa.Table, b: pa.Table) -> bool:
    """Equal tables, floats to 1e-12 relative (DuckDB's parallel sums may differ in the last bits)."""
    if a.schema != b.schema or a.num_rows != b.num_rows:
        return False
    for x, y in zip(a.to_pylist(), b.to_pylist(), strict=True):
        for key in x:
            if isinstance(x[key], float) and isinstance(y[key], float):
                if not math.isclose(x[key], y[key], rel_tol=1e-12, abs_tol=1e-15):
                    return False
            elif x[key] != y[key]:
                return False
    return True


def test_the_range_handler_answers_byte_ranges_and_serves_only_files_under_its_root(published) -> None:
    url, out = published["url"], published["out"]
    data = (out / "data" / "tables" / "models.parquet").read_bytes()
    size = len(data)
    status, headers, body = _get(url, "/data/tables/models.parquet", {"Range": "bytes=100-149"})
    assert (status, headers["Content-Range"], body) == (206, f"bytes 100-149/{size}", data[100:150])
    status, headers, body = _get(url, "/data/tables/models.parquet", {"Range": "bytes=-8"})
    assert (status, headers["Content-Range"], body) == (206, f"bytes {size - 8}-{size - 1}/{size}", data[-8:])
    status, headers, body = _get(url, "/data/tables/models.parquet", {"Range": f"bytes={size - 3}-"})
    assert (status, body) == (206, data[-3:])
    status, headers, _ = _get(url, "/data/tables/models.parquet", {"Range": f"bytes={size}-"})
    assert (status, headers["Content-Range"]) == (416, f"bytes */{size}")
    status, headers, body = _get(url, "/data/tables/models.parquet")
    assert (status, headers["Accept-Ranges"], body) == (200, "bytes", data)
    # nothing outside the root: not through .., not through a link, and no folder listings
    (published["tmp"] / "secret.txt").write_text("not published")
    (out / "data" / "leak.txt").symlink_to(published["tmp"] / "secret.txt")
    assert _get(url, "/data/leak.txt")[0] == 404
    assert _get(url, "/../secret.txt")[0] == 404
    assert _get(url, "/data/tables/")[0] == 404
    assert _get(url, "/")[0] == 200  # the site's index.html


def test_publish_writes_the_site_the_export_sorted_by_model_croissant_and_a_card(published) -> None:
    out: Path = published["out"]
    cat: catalogue.Catalogue = published["cat"]
    assert (out / "index.html").is_file() and (out / "croissant.json").is_file()
    manifest = json.loads((out / "data" / "manifest.json").read_text())
    findings = pq.ParquetFile(out / "data" / "tables" / "findings.parquet")
    models = findings.read(columns=["model_id"]).column("model_id").to_pylist()
    assert models == sorted(models) and len(models) == cat.sql("SELECT count(*) n FROM findings").to_pylist()[0]["n"]
    sizes = [findings.metadata.row_group(i).num_rows for i in range(findings.num_row_groups)]
    assert max(sizes) == FINDINGS_ROW_GROUP and sum(sizes) == len(models)
    # the manifest matches the rewritten file: the folder is still an export `modelsci import` takes
    import hashlib

    entry = manifest["tables"]["findings"]
    assert hashlib.sha256((out / "data" / entry["path"]).read_bytes()).hexdigest() == entry["sha256"]
    card = (out / "README.md").read_text()
    front = card.split("---\n")[1]
    for name in manifest["tables"]:
        assert f"- config_name: {name}\n  data_files: data/tables/{name}.parquet" in front


def test_a_published_catalogue_answers_over_http_as_the_local_one(published) -> None:
    cat: catalogue.Catalogue = published["cat"]
    remote = catalogue.open(published["url"])  # the site's root: the catalogue is found in data/
    assert isinstance(remote, catalogue.RemoteCatalogue) and remote.base == published["url"] + "data/"
    queries = [
        "SELECT count(*) AS n FROM findings",
        "SELECT status, count(*) AS n FROM findings GROUP BY status ORDER BY status",
        "SELECT * FROM findings_summary ORDER BY replication_key",
        "SELECT * FROM findings_current WHERE subject = 'feature 7' ORDER BY id",
        "SELECT m.id, count(*) AS n FROM models m JOIN findings f ON f.model_id = m.id GROUP BY m.id ORDER BY m.id",
        "SELECT * FROM commits ORDER BY seq",
    ]
    for query in queries:
        assert _close(cat.sql(query), remote.sql(query)), query
    assert remote.sql(queries[0]).to_pylist() == [{"n": N_FINDINGS}]
    assert remote.sql(queries[1]).to_pylist() == [{"status": "current", "n": N_FINDINGS - 1},
                                                  {"status": "superseded", "n": 1}]
    # as the catalogue stood before the last commit: nothing superseded yet
    assert remote.sql(queries[1], as_of="3").to_pylist() == [{"status": "current", "n": N_FINDINGS - 1}]
    assert remote.sql(queries[1], as_of="4").to_pylist() == remote.sql(queries[1]).to_pylist()
    assert _close(cat.sql(queries[2], as_of="1"), remote.sql(queries[2], as_of="1"))
    # an artifact by the path the artifacts table gives, resolved against the catalogue's URL
    path = cat.sql("SELECT path FROM artifacts ORDER BY path LIMIT 1").to_pylist()[0]["path"]
    assert remote.sql(f"SELECT * FROM '{path}'").equals(cat.sql(f"SELECT * FROM '{path}'"))
    assert remote.sql(f"SELECT * FROM '{path}'").num_rows == 3
    model_id = cat.sql("SELECT id FROM models ORDER BY id LIMIT 1").to_pylist()[0]["id"]
    assert _close(remote.findings(model=model_id[:14]), cat.findings(model=model_id[:14]))
    assert remote.show(model_id[:16]) == cat.show(model_id[:16])


def test_a_query_on_one_model_reads_a_small_part_of_the_findings_file(published) -> None:
    cat: catalogue.Catalogue = published["cat"]
    server = published["server"]
    remote = catalogue.open(published["url"])
    path = "/data/tables/findings.parquet"
    size = (published["out"] / "data" / "tables" / "findings.parquet").stat().st_size
    assert size > 2 * 2**20  # DuckDB reads a remote file under 2 MiB whole
    model_id = cat.sql(f"SELECT id FROM models WHERE id <> '{toy_model(0).id}' ORDER BY id LIMIT 1 OFFSET 5"
                       ).to_pylist()[0]["id"]
    query = f"SELECT * FROM findings WHERE model_id = '{model_id}' ORDER BY id"
    server.sent.clear()
    one = remote.sql(query)
    assert one.equals(cat.sql(query)) and one.num_rows == 2 * FINDINGS_PER_RUN
    assert 0 < server.sent[path] < size / 4, (server.sent[path], size)
    server.sent.clear()  # the counter sees a full read as one: all of the file
    assert remote.sql("SELECT * FROM findings").num_rows == N_FINDINGS
    assert server.sent[path] >= size * 0.9


def test_a_published_catalogue_is_read_only_and_its_sql_reaches_nothing_else(published, tmp_path) -> None:
    url = published["url"]
    remote = catalogue.open(url)
    with pytest.raises(catalogue.ReadOnlyCatalogueError, match="read-only over HTTP"):
        remote.commit(rerun(0.5, None, 2))
    with pytest.raises(catalogue.ReadOnlyCatalogueError):
        catalogue.open(url, create=True)
    with pytest.raises(catalogue.ReadOnlySQLError, match="only SELECT"):
        remote.sql("CREATE TABLE t AS SELECT 1")
    (tmp_path / "local.csv").write_text("a\n1\n")
    with pytest.raises(duckdb.Error, match="disabled by configuration"):
        remote.sql(f"SELECT * FROM read_csv('{tmp_path / 'local.csv'}')")
    with pytest.raises(duckdb.Error, match="disabled by configuration"):
        remote.sql(f"SELECT * FROM read_parquet('{url}data/../data/tables/findings.parquet')")
    with pytest.raises(catalogue.RemoteCatalogueError, match="holds no published modelsci catalogue"):
        catalogue.open(url + "models/")


def test_the_cli_reads_a_published_catalogue_and_refuses_to_write_it(published) -> None:
    url = published["url"]
    result = modelsci("--catalogue", url, "sql", "SELECT count(*) AS n FROM findings_current", "--format", "json")
    assert json.loads(result.stdout) == [{"n": N_FINDINGS - 1}]
    nested = modelsci("--catalogue", url, "sql", "SELECT metrics FROM findings WHERE metrics->>'draws' IS NOT NULL "
                      "LIMIT 1", "--format", "json")
    assert isinstance(json.loads(nested.stdout)[0]["metrics"]["draws"], list)  # JSON as JSON, not a string
    refused = modelsci("--catalogue", url, "status", check=False)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "needs a local catalogue folder" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1


def test_croissant_json_validates_and_describes_every_table_and_column(published) -> None:
    mlcroissant = pytest.importorskip("mlcroissant")
    out: Path = published["out"]
    dataset = mlcroissant.Dataset(jsonld=out / "croissant.json")  # raises on an invalid description
    metadata = json.loads((out / "croissant.json").read_text())
    manifest = json.loads((out / "data" / "manifest.json").read_text())
    assert [r["name"] for r in metadata["recordSet"]] == list(manifest["tables"])
    for record_set in metadata["recordSet"]:
        columns = pq.read_schema(out / "data" / "tables" / f"{record_set['name']}.parquet").names
        assert [f["name"] for f in record_set["field"]] == columns
        assert all(f["description"] for f in record_set["field"])
    findings = next(r for r in metadata["recordSet"] if r["name"] == "findings")
    types = {f["name"]: f["dataType"] for f in findings["field"]}
    assert (types["value"], types["seed"], types["exact"], types["metrics"]) == \
        ("sc:Float", "sc:Integer", "sc:Boolean", "sc:Text")
    records = list(dataset.records("findings"))
    assert len(records) == manifest["tables"]["findings"]["rows"]
    first = pq.read_table(out / "data" / "tables" / "findings.parquet").slice(0, 1).to_pylist()[0]
    assert records[0]["findings/id"].decode() == first["id"] and records[0]["findings/value"] == first["value"]


def test_the_dataset_card_lets_datasets_load_a_table(published, tmp_path) -> None:
    datasets = pytest.importorskip("datasets")
    loaded = datasets.load_dataset(str(published["out"]), "findings", cache_dir=str(tmp_path / "hf"))
    cat: catalogue.Catalogue = published["cat"]
    ids = cat.sql("SELECT id FROM findings").column("id").to_pylist()
    assert sorted(loaded["train"]["id"]) == sorted(ids)
    models = datasets.load_dataset(str(published["out"]), "models", cache_dir=str(tmp_path / "hf"))
    assert models["train"].num_rows == N_MODELS


def test_an_artifact_view_answers_alike_in_python_the_cli_and_over_http(published) -> None:
    cat: catalogue.Catalogue = published["cat"]
    remote = catalogue.open(published["url"])
    query = ("SELECT model_id, seed, count(*) AS n_rows, count(DISTINCT finding_id) AS n_findings, sum(value) AS total "
             "FROM artifact_attributions GROUP BY model_id, seed ORDER BY model_id, seed")
    local = cat.sql(query)
    # recomputed from the artifacts table and each file, apart from the view
    expected: dict[tuple[str, int], list[float]] = {}
    for row in cat.sql("SELECT a.path, f.model_id, f.seed FROM artifacts a JOIN findings f ON f.id = a.finding_id "
                       "WHERE a.name = 'attributions'").to_pylist():
        values = pq.read_table(cat.root / row["path"]).column("value").to_pylist()
        expected.setdefault((row["model_id"], row["seed"]), []).extend(values)
    assert len(expected) == 2 * N_MODELS
    assert [(r["model_id"], r["seed"], r["n_rows"], r["n_findings"]) for r in local.to_pylist()] == [
        (m, s, 3, 1) for (m, s) in sorted(expected)]
    for r in local.to_pylist():
        assert math.isclose(r["total"], sum(expected[(r["model_id"], r["seed"])]), rel_tol=1e-12)
    assert _close(remote.sql(query), local)
    cli = modelsci("sql", query, "--format", "json", catalogue_dir=cat.root).stdout
    assert [(r["model_id"], r["seed"], r["n_rows"]) for r in json.loads(cli)] == [
        (r["model_id"], r["seed"], r["n_rows"]) for r in local.to_pylist()]
    columns = cat.sql("SELECT * FROM artifact_attributions LIMIT 0").column_names
    assert columns == ["finding_id", "model_id", "dataset_id", "analysis_name", "kind", "seed", "status",
                       "example", "value"]
    # as of the first commit, only seed 0's artifacts had landed
    first = "SELECT DISTINCT seed FROM artifact_attributions ORDER BY seed"
    assert cat.sql(first, as_of="1").to_pylist() == remote.sql(first, as_of="1").to_pylist() == [{"seed": 0}]


def test_artifact_view_columns_need_no_quoting(tmp_path: Path) -> None:
    cat = catalogue.open(tmp_path / "cat", create=True)
    analysis, model = toy_analysis(), toy_model(0)
    run = toy_run(model, analysis)
    bundle = ResultBundle(models=[model], datasets=[toy_dataset()], analyses=[analysis], runs=[run])
    table = pa.table({"order": [1, 2], "model_id": ["a", "b"], "Odd name!": [0.5, 1.5], "filename": ["x", "y"]})
    bundle.add_finding(run, kind="interaction", value=1.0, statement="one", artifacts={"Pair interactions": table})
    cat.commit(bundle)
    result = cat.sql("SELECT * FROM artifact_pair_interactions ORDER BY pair_interaction_order")
    assert result.column_names[7:] == ["pair_interaction_order", "pair_interaction_model_id", "odd_name",
                                       "filename"]
    assert result.column("pair_interaction_model_id").to_pylist() == ["a", "b"]
    assert result.column("model_id").to_pylist() == [model.id, model.id]
    assert result.column("odd_name").to_pylist() == [0.5, 1.5] and result.column("filename").to_pylist() == ["x", "y"]
    with pytest.raises(duckdb.CatalogException, match="artifact_missing"):
        cat.sql("SELECT * FROM artifact_missing")
