"""`modelsci compare`, the findings_lineage view, as_of by seq number, JSON output and unknown model prefixes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from modelsci import catalogue
from modelsci.catalogue import UnknownCommitError, UnknownIdError
from modelsci.compare import compare_commits, compare_models
from modelsci.executors import run_queue
from modelsci.planner import submit
from modelsci.schemas import ModelInstance, ResultBundle
from tests.conftest import modelsci, toy_analysis, toy_dataset, toy_model, toy_run


def _logistic_regression(folder: Path, c: float) -> Path:
    """A scaled logistic regression with regularisation ``c`` on modelsci's train split of breast_cancer."""
    import skops.io as sio

    frame = load_breast_cancer(as_frame=True).frame
    train, _ = train_test_split(frame, test_size=0.25, random_state=0, stratify=frame["target"])
    model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=1000))
    model.fit(train.drop(columns="target").to_numpy(), train["target"].to_numpy())
    folder.mkdir(parents=True)
    sio.dump(model, folder / "model.skops")
    return folder


class Two:
    """A catalogue holding evaluation.performance of two logistic regressions, committed one after the other."""

    def __init__(self, root: Path) -> None:
        self.cat = catalogue.open(root / "cat", create=True)
        self.ids: list[str] = []
        self.seqs: list[int] = []  # the last commit after each model's run
        for name, c in (("strong", 1.0), ("weak", 0.001)):
            manifest = {"submitter": "Test Suite <tests@example.org>",
                        "model": {"source": str(_logistic_regression(root / name, c)), "task": "tabular-classification"},
                        "dataset": {"source": "sklearn://breast_cancer", "split": "test"},
                        "analyses": [{"name": "evaluation.performance", "params": {"n_bootstrap": 200}}]}
            self.ids.append(submit(self.cat, json.dumps(manifest)).model.id)
            assert not run_queue(self.cat, device="cpu").failed
            self.seqs.append(self.cat.sql("SELECT max(seq) AS s FROM commits").column("s")[0].as_py())


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> Two:
    return Two(tmp_path_factory.mktemp("compare"))


_KEY = ("dataset_id", "analysis_name", "params_hash", "kind", "subject")


def _summary(cat: catalogue.Catalogue, model_id: str, as_of: int | None = None) -> dict[tuple, dict]:
    rows = cat.sql(f"SELECT * FROM findings_summary WHERE model_id = '{model_id}'", as_of=as_of).to_pylist()
    return {tuple(r[k] for k in _KEY): r for r in rows}


def _overlap(a: dict, b: dict) -> bool:
    return a["ci_low"] <= b["ci_high"] and b["ci_low"] <= a["ci_high"]


def test_a_model_compared_with_itself_overlaps_everywhere(two: Two) -> None:
    a = two.ids[0]
    rows = compare_models(two.cat, a[:14], a).to_pylist()
    summary = _summary(two.cat, a)
    assert len(summary) >= 4  # accuracy and the other metrics of evaluation.performance
    assert {tuple(r[k] for k in _KEY) for r in rows} == set(summary)
    assert all(r["overlap"] is True and r["difference"] == 0 and r["mean_a"] == r["mean_b"] for r in rows), rows


def test_two_models_show_their_differences(two: Two) -> None:
    a, b = two.ids
    rows = {tuple(r[k] for k in _KEY): r for r in compare_models(two.cat, a[:12], b[:12]).to_pylist()}
    sa, sb = _summary(two.cat, a), _summary(two.cat, b)
    assert set(rows) == set(sa) | set(sb)
    shared = set(sa) & set(sb)
    assert shared and any(sa[k]["mean"] != sb[k]["mean"] for k in shared)  # C=0.001 predicts differently
    for key in shared:
        row = rows[key]
        assert (row["mean_a"], row["ci_low_a"], row["ci_high_a"]) == (sa[key]["mean"], sa[key]["ci_low"],
                                                                      sa[key]["ci_high"])
        assert (row["mean_b"], row["ci_low_b"], row["ci_high_b"]) == (sb[key]["mean"], sb[key]["ci_low"],
                                                                      sb[key]["ci_high"])
        assert row["difference"] == sb[key]["mean"] - sa[key]["mean"]
        assert row["overlap"] is _overlap(sa[key], sb[key])
    accuracy = next(k for k in shared if k[3] == "accuracy")
    assert rows[accuracy]["difference"] < 0  # the strongly regularised model is the worse one


def test_the_cli_compares_with_every_format(two: Two, tmp_path: Path) -> None:
    a, b = two.ids
    root = two.cat.root
    rows = json.loads(modelsci("compare", a[7:19], b[7:19], "--format", "json", catalogue_dir=root).stdout)
    expected = compare_models(two.cat, a, b).to_pylist()
    assert rows == expected
    modelsci("compare", a[7:19], b[7:19], "--format", "parquet", "--out", str(tmp_path / "c.parquet"),
             catalogue_dir=root)
    import pyarrow.parquet as pq

    assert pq.read_table(tmp_path / "c.parquet").to_pylist() == expected


def test_comparing_commits_lists_what_the_later_one_added(two: Two) -> None:
    a, b = two.ids
    rows = compare_commits(two.cat, two.seqs[0], str(two.seqs[1])).to_pylist()
    of_a = [r for r in rows if r["model_id"] == a]
    of_b = [r for r in rows if r["model_id"] == b]
    assert len(of_a) == len(_summary(two.cat, a)) and len(of_b) == len(_summary(two.cat, b))
    assert all(r["overlap"] and r["difference"] == 0 for r in of_a)  # nothing about a changed
    assert all(r["mean_a"] is None and r["overlap"] is None and r["mean_b"] is not None for r in of_b)
    cli = json.loads(modelsci("compare", "--commits", str(two.seqs[0]), str(two.seqs[1]), "--format", "json",
                              catalogue_dir=two.cat.root).stdout)
    assert cli == rows


def test_as_of_takes_a_seq_number(two: Two) -> None:
    query = "SELECT count(*) AS n FROM findings_summary"
    first = two.cat.sql(query, as_of=two.seqs[0]).column("n")[0].as_py()
    assert first == len(_summary(two.cat, two.ids[0]))
    assert two.cat.sql(query, as_of=str(two.seqs[0])).column("n")[0].as_py() == first
    assert two.cat.sql(query, as_of=two.seqs[1]).column("n")[0].as_py() > first
    with pytest.raises(UnknownCommitError, match="no commit '999'"):
        two.cat.sql(query, as_of=999)


def test_json_columns_come_out_as_json(two: Two) -> None:
    root = two.cat.root
    query = ("SELECT f.id, f.metrics, r.params FROM findings f JOIN runs r ON r.id = f.run_id "
             "WHERE f.kind = 'accuracy' ORDER BY f.id")
    rows = json.loads(modelsci("sql", query, "--format", "json", catalogue_dir=root).stdout)
    stored = two.cat.sql(query).to_pylist()
    assert [r["metrics"] for r in rows] == [json.loads(s["metrics"]) for s in stored]
    assert all(isinstance(r["metrics"], dict) and r["params"]["n_bootstrap"] == 200 for r in rows), rows
    shown = json.loads(modelsci("show", rows[0]["id"][7:25], catalogue_dir=root).stdout)
    assert shown["row"]["metrics"] == rows[0]["metrics"]


def test_unknown_or_ambiguous_model_prefixes_say_so(two: Two) -> None:
    root = two.cat.root
    missing = "f" * 12 if not any(i.startswith("sha256:" + "f" * 12) for i in two.ids) else "0" * 12
    for args in (["findings", "--model", missing], ["compare", missing, two.ids[0][7:19]]):
        result = modelsci(*args, catalogue_dir=root, check=False)
        assert result.returncode == 1, result
        assert result.stderr.strip() == f"error: no model named '{missing}' or with an id starting with it in the " \
                                        "catalogue (`modelsci sql \"SELECT name, id FROM models\"` lists them)"
    with pytest.raises(UnknownIdError, match="ambiguous: 2 models match"):
        compare_models(two.cat, "sha256:", two.ids[0])
    assert two.cat.findings(model=two.ids[0][:12]).num_rows == len(_summary(two.cat, two.ids[0]))


def _accuracy(model: ModelInstance, value: float, run: str) -> ResultBundle:
    """One accuracy finding of ``model`` from its own run."""
    analysis = toy_analysis()
    run_row = toy_run(model, analysis, run_id=run)
    bundle = ResultBundle(models=[model], datasets=[toy_dataset()], analyses=[analysis], runs=[run_row])
    bundle.add_finding(run_row, kind="accuracy", subject="", statement=f"accuracy is {value}", value=value,
                       ci=(value - 0.1, value + 0.1), n=38, unit="fraction")
    return bundle


def test_findings_lineage_walks_base_models_both_ways(cat: catalogue.Catalogue) -> None:
    base = toy_model(0)
    child = toy_model(1).model_copy(update={"base_model_id": base.id})
    grandchild = toy_model(2).model_copy(update={"base_model_id": child.id})
    stranger = toy_model(3)
    for model, value in ((base, 0.9), (child, 0.8), (grandchild, 0.7), (stranger, 0.6)):
        cat.commit(_accuracy(model, value, f"run-{value}"))
    names = {base.id: "base", child.id: "child", grandchild.id: "grandchild", stranger.id: "stranger"}

    def lineage(as_of: int | None = None) -> set[tuple]:
        rows = cat.sql("SELECT model_id, relation, distance, relative_id, value FROM findings_lineage",
                       as_of=as_of).to_pylist()
        return {(names[r["model_id"]], r["relation"], r["distance"], names[r["relative_id"]], r["value"])
                for r in rows}

    assert lineage() == {
        ("base", "self", 0, "base", 0.9), ("base", "descendant", 1, "child", 0.8),
        ("base", "descendant", 2, "grandchild", 0.7),
        ("child", "self", 0, "child", 0.8), ("child", "ancestor", 1, "base", 0.9),
        ("child", "descendant", 1, "grandchild", 0.7),
        ("grandchild", "self", 0, "grandchild", 0.7), ("grandchild", "ancestor", 1, "child", 0.8),
        ("grandchild", "ancestor", 2, "base", 0.9),
        ("stranger", "self", 0, "stranger", 0.6),
    }
    assert lineage(as_of=2) == {
        ("base", "self", 0, "base", 0.9), ("base", "descendant", 1, "child", 0.8),
        ("child", "self", 0, "child", 0.8), ("child", "ancestor", 1, "base", 0.9),
    }
    # only current findings: a new version of the base's accuracy replaces the old one in every lineage
    cat.commit(_accuracy(base, 0.95, "run-again"))
    assert ("grandchild", "ancestor", 2, "base", 0.95) in lineage()
    assert ("grandchild", "ancestor", 2, "base", 0.9) not in lineage()
    columns = cat.sql("SELECT * FROM findings_lineage LIMIT 0").column_names
    current = cat.sql("SELECT * FROM findings_current LIMIT 0").column_names
    assert columns == ["model_id", "relation", "distance", "relative_id"] + [c for c in current if c != "model_id"]


def test_findings_lineage_and_compare_answer_on_a_published_catalogue(cat: catalogue.Catalogue, tmp_path: Path) -> None:
    import threading

    from modelsci.catalogue.transfer import export
    from modelsci.http_serve import make_server

    base = toy_model(0)
    child = toy_model(1).model_copy(update={"base_model_id": base.id})
    for model, value in ((base, 0.9), (child, 0.8), (base, 0.85)):
        cat.commit(_accuracy(model, value, f"run-{value}"))
    export(cat, tmp_path / "published")
    query = "SELECT model_id, relation, distance, relative_id, value FROM findings_lineage ORDER BY ALL"
    with make_server(tmp_path / "published", "127.0.0.1", 0) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            remote = catalogue.open(f"http://127.0.0.1:{server.server_address[1]}/")
            for as_of in (None, 2):
                assert remote.sql(query, as_of=as_of).to_pylist() == cat.sql(query, as_of=as_of).to_pylist()
            assert remote.sql(query).num_rows == 4
            assert compare_commits(remote, 2, 3).to_pylist() == compare_commits(cat, 2, 3).to_pylist()
            assert compare_models(remote, base.id, child.id).to_pylist() == compare_models(cat, base.id, child.id).to_pylist()
        finally:
            server.shutdown()
