"""Predictive multiplicity: metrics with known answers, and a Rashomon set through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from modelsci import catalogue
from modelsci.analyses.multiplicity import metrics
from modelsci.catalogue.integrity import check
from tests.conftest import modelsci
from tests.models import breast_cancer_skops, write_manifest


def test_the_issue_example() -> None:
    reference = np.array([0, 0, 1, 1])
    members = np.array([[0, 1, 1, 1], [1, 1, 1, 0]])
    assert metrics.ambiguity(reference, members) == 0.75
    assert metrics.discrepancy(reference, members) == 0.75
    assert metrics.obscurity(reference, members) == 0.5


def test_disagreement_is_4_mu_1_minus_mu_for_two_classes() -> None:
    members = np.array([[1, 1, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]])  # mu = 3/4, 3/4, 0
    np.testing.assert_allclose(metrics.disagreement(members, np.array([0, 1])), [0.75, 0.75, 0.0])


def test_rashomon_capacity_bounds() -> None:
    same = np.tile(np.array([0.2, 0.5, 0.3]), (6, 4, 1))  # six identical members at four points
    np.testing.assert_allclose(metrics.rashomon_capacity(same), 1.0, atol=1e-9)
    one_hot = np.eye(3)[:, None, :].repeat(2, axis=1)  # three members, each certain of another class
    np.testing.assert_allclose(metrics.rashomon_capacity(one_hot), 3.0, atol=1e-6)
    binary = np.array([[[1.0, 0.0]], [[0.0, 1.0]], [[0.5, 0.5]]])
    np.testing.assert_allclose(metrics.rashomon_capacity(binary), 2.0, atol=1e-6)


def test_viable_prediction_range() -> None:
    scores = np.array([[[0.9, 0.1], [0.4, 0.6]], [[0.7, 0.3], [0.1, 0.9]]])
    np.testing.assert_allclose(metrics.viable_prediction_range(scores, np.array([0, 1])), [0.2, 0.3])


def _importance_by_hand(predict, x: np.ndarray, y: np.ndarray, repeats: int, seed: int) -> np.ndarray:
    """Mean accuracy drop per column, with the shuffles scikit-learn draws from ``seed``: one
    RandomState per column, seeded from the first draw, each repeat shuffling the column again."""
    column_seed = np.random.RandomState(seed).randint(np.iinfo(np.int32).max + 1)
    base = np.mean(predict(x) == y)
    out = np.zeros(x.shape[1])
    for j in range(x.shape[1]):
        generator, shuffled, order = np.random.RandomState(column_seed), x.copy(), np.arange(len(x))
        drops = []
        for _ in range(repeats):
            generator.shuffle(order)
            shuffled[:, j] = shuffled[order, j]
            drops.append(base - np.mean(predict(shuffled) == y))
        out[j] = np.mean(drops)
    return out


def test_permutation_importance_keeps_labels_when_the_test_split_lacks_a_class() -> None:
    """Iris: the test split holds classes 1 and 2 only; one member never saw class 2."""
    import torch
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    from modelsci.analyses.multiplicity.rashomon_set import _permutation_importance

    x, y = load_iris(return_X_y=True)
    classes = np.array([0, 1, 2])
    test = np.random.default_rng(0).permutation(np.flatnonzero(y > 0))[:60]
    x_test, y_test = x[test], y[test]
    reference = LogisticRegression(max_iter=1000).fit(x, y)
    partial = LogisticRegression(max_iter=1000).fit(x[y < 2], y[y < 2])  # classes_ = [0, 1]
    torch.manual_seed(0)
    module = torch.nn.Linear(4, 3)
    with torch.no_grad():
        module.weight.copy_(torch.tensor(reference.coef_, dtype=torch.float32))
        module.bias.copy_(torch.tensor(reference.intercept_, dtype=torch.float32))

    def module_predict(rows: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.as_tensor(rows, dtype=torch.float32)).argmax(1).numpy()  # column j is class j

    for model, predict in ((reference, reference.predict), (partial, partial.predict), (module, module_predict)):
        expected = _importance_by_hand(predict, x_test, y_test, 3, seed=7)
        got = _permutation_importance(model, x_test, y_test, classes, 3, 7)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    assert np.mean(reference.predict(x_test) == y_test) > 0.9  # a model worth explaining
    assert _importance_by_hand(reference.predict, x_test, y_test, 3, seed=7).max() > 0.1  # not all zero


@pytest.fixture(scope="module")
def through_the_cli(tmp_path_factory: pytest.TempPathFactory) -> catalogue.Catalogue:
    """A Rashomon set and a TreeFARMS set of one model, submitted and run by one `modelsci submit --run`."""
    tmp = tmp_path_factory.mktemp("multiplicity")
    manifest = write_manifest(tmp / "m.yaml", str(breast_cancer_skops(tmp / "lr")), analyses=[
        {"name": "multiplicity.rashomon_set", "params": {"n_candidates": 30, "n_bootstrap": 100}},
        {"name": "multiplicity.treefarms", "params": {"max_features": 6, "n_bootstrap": 100}}])
    modelsci("submit", str(manifest), "--run", catalogue_dir=tmp / "cat", timeout=300)
    return catalogue.open(tmp / "cat", create=True)


def test_a_rashomon_set_through_the_cli_is_recomputable_from_the_catalogue(through_the_cli) -> None:
    cat = through_the_cli
    info = cat.sql("SELECT value, metrics FROM findings_current WHERE kind = 'rashomon_set'").to_pylist()[0]
    size, figures = int(info["value"]), json.loads(info["metrics"])
    assert size >= 20
    members = cat.sql("SELECT f.id, f.value, f.model_id, m.base_model_id FROM findings_current f "
                      "JOIN models m ON m.id = f.model_id WHERE f.kind = 'rashomon_member'").to_pylist()
    reference = cat.sql("SELECT id FROM models WHERE base_model_id IS NULL").to_pylist()[0]["id"]
    assert len(members) >= 20 and all(m["base_model_id"] == reference for m in members)
    origins = cat.sql("SELECT origin, count(*) AS n, min(name) AS name FROM models GROUP BY origin ORDER BY origin")
    assert origins.to_pylist() == [{"origin": "derived", "n": len(members), "name": "lr Rashomon member 0"},
                                   {"origin": "submitted", "n": 1, "name": "lr"}]
    assert all(m["value"] <= figures["bound"] + 1e-12 for m in members)  # each within epsilon
    links = cat.sql("SELECT src_id FROM finding_links WHERE relation = 'derived_from'").to_pylist()
    assert {link["src_id"] for link in links} == {m["id"] for m in members}

    path = cat.sql("SELECT a.path FROM artifacts a JOIN findings_current f ON f.id = a.finding_id "
                   "WHERE f.kind = 'ambiguity' AND a.name = 'predictions' "
                   "AND f.analysis_name = 'multiplicity.rashomon_set'").to_pylist()[0]["path"]
    long = pq.read_table(cat.root / path).to_pandas()
    wide = long.pivot(index="member", columns="example", values="prediction").to_numpy()
    reference_labels = long[long.member == 0].sort_values("example")["reference"].to_numpy()
    stored = {r["kind"]: r["value"] for r in cat.sql(
        "SELECT kind, value FROM findings_current WHERE kind IN ('ambiguity', 'discrepancy', 'obscurity') "
        "AND analysis_name = 'multiplicity.rashomon_set'").to_pylist()}
    assert stored["ambiguity"] == pytest.approx(metrics.ambiguity(reference_labels, wide))
    assert stored["discrepancy"] == pytest.approx(metrics.discrepancy(reference_labels, wide))
    assert stored["obscurity"] == pytest.approx(metrics.obscurity(reference_labels, wide))
    assert check(cat).ok


def test_treefarms_gives_an_exact_set_of_sparse_trees(through_the_cli) -> None:
    cat = through_the_cli
    rows = {r["kind"]: r for r in cat.sql("SELECT kind, value, exact FROM findings_current "
                                          "WHERE analysis_name = 'multiplicity.treefarms'").to_pylist()}
    assert rows["treefarms_set"]["value"] >= 2 and rows["treefarms_set"]["exact"] is True
    path = cat.sql("SELECT a.path FROM artifacts a JOIN findings_current f ON f.id = a.finding_id "
                   "WHERE f.kind = 'ambiguity' AND a.name = 'predictions' "
                   "AND f.analysis_name = 'multiplicity.treefarms'").to_pylist()[0]["path"]
    long = pq.read_table(cat.root / path).to_pandas()
    wide = long.pivot(index="member", columns="example", values="prediction").to_numpy()
    reference = long[long.member == 0].sort_values("example")["reference"].to_numpy()
    assert rows["ambiguity"]["value"] == pytest.approx(metrics.ambiguity(reference, wide))


def test_feature_filters_that_keep_the_same_features_say_so(tmp_path: Path) -> None:
    """On breast_cancer both filters keep the same features at alpha 0.05 (recomputed here with
    scipy), so the Wilcoxon setting repeats the correlation setting's data and numbers, and says so."""
    from scipy import stats
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    from modelsci.executors import run_queue
    from modelsci.planner import submit

    data = load_breast_cancer()
    x, _, y, _ = train_test_split(data.data, data.target, test_size=0.25, random_state=0, stratify=data.target)
    by_correlation = [n for j, n in enumerate(data.feature_names) if stats.pearsonr(x[:, j], y).pvalue < 0.05]
    by_ranks = [n for j, n in enumerate(data.feature_names) if stats.ranksums(x[y == 0, j], x[y != 0, j]).pvalue < 0.05]
    assert by_correlation == by_ranks and 0 < len(by_ranks) < 30
    manifest = write_manifest(tmp_path / "m.yaml", str(breast_cancer_skops(tmp_path / "lr")), analyses=[
        {"name": "multiplicity.preprocessing", "params": {
            "n_candidates": 4, "epsilon": 1.0, "n_bootstrap": 100, "importance_repeats": 1,
            "settings": ["filter_correlation", "filter_wilcoxon"]}}])
    cat = catalogue.open(tmp_path / "cat", create=True)
    submit(cat, manifest.read_text())
    assert not run_queue(cat, device="cpu").failed
    rows = {r["subject"]: r for r in cat.sql(
        "SELECT subject, value, ci_low, ci_high, metrics FROM findings_current WHERE kind = 'discrepancy'").to_pylist()}
    figures = {subject: json.loads(r["metrics"]) for subject, r in rows.items()}
    assert figures["setting:filter_correlation"]["kept_features"] == by_correlation
    assert figures["setting:filter_correlation"]["same_data_as"] is None
    assert figures["setting:filter_wilcoxon"]["same_data_as"] == "filter_correlation"
    assert figures["setting:none"]["features"] == 30
    same = [(r["value"], r["ci_low"], r["ci_high"]) for s, r in rows.items() if s != "setting:none"]
    assert same[0] == same[1]
