"""Inputs by name, training data in the manifest, and everything knowable checked at submit."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from sklearn.datasets import load_breast_cancer, load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from modelsci import catalogue
from modelsci.analyses.base import registry
from modelsci.executors import run_queue
from modelsci.executors.execution import failed_bundle
from modelsci.ingest.architectures import MLP, save_torch_model
from modelsci.ingest.datasets import resolve_dataset
from modelsci.ingest.loading import load_model
from modelsci.ingest.models import model_inputs, resolve_model
from modelsci.planner import submit
from modelsci.schemas.manifest import DatasetSpec, ManifestError, ModelSpec
from tests.conftest import modelsci
from tests.models import breast_cancer_skops, installed_plugin

TASK = "tabular-classification"


def _frames(name: str = "breast_cancer") -> tuple[pd.DataFrame, pd.DataFrame]:
    """The seeded train/test split modelsci makes of a bundled scikit-learn dataset."""
    frame = {"breast_cancer": load_breast_cancer, "iris": load_iris}[name](as_frame=True).frame
    return train_test_split(frame, test_size=0.25, random_state=0, stratify=frame["target"])


def _named_pipeline(folder: Path, train: pd.DataFrame) -> Path:
    """A scaled logistic regression fitted on a DataFrame, so it knows its feature names."""
    import skops.io as sio

    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    model.fit(train.drop(columns="target"), train["target"])
    folder.mkdir(parents=True, exist_ok=True)
    sio.dump(model, folder / "model.skops")
    return folder


def _manifest(model: Path, dataset: dict, analyses: list[dict] | None = None) -> str:
    return json.dumps({"submitter": "Test Suite <tests@example.org>", "model": {"source": str(model), "task": TASK},
                       "dataset": dataset,
                       "analyses": analyses or [{"name": "evaluation.performance", "params": {"n_bootstrap": 100}}]})


def _refused(cat: catalogue.Catalogue, text: str) -> list[str]:
    """The problems a submission is refused with; nothing may have been registered or queued."""
    with pytest.raises(ManifestError) as caught:
        submit(cat, text)
    for table in ("models", "datasets", "store.queue"):
        assert cat.sql(f"SELECT count(*) AS n FROM {table}").to_pylist() == [{"n": 0}], table
    return caught.value.problems


def test_reordered_columns_give_exactly_the_accuracy_of_the_ordered_data(tmp_path: Path) -> None:
    train, test = _frames()
    model = _named_pipeline(tmp_path / "lr", train)
    ordered = test.reset_index(drop=True)
    permuted = ordered[list(reversed(ordered.columns))].assign(note="not a feature")
    ordered.to_csv(tmp_path / "ordered.csv", index=False)
    permuted.to_csv(tmp_path / "permuted.csv", index=False)
    estimator = load_model(resolve_model(ModelSpec(source=str(model), task=TASK))).model
    expected = accuracy_score(ordered["target"], estimator.predict(ordered.drop(columns="target")))
    # Fed by position, the permuted file is another matter entirely: the test can tell them apart.
    by_position = permuted.drop(columns=["target", "note"]).to_numpy()
    assert accuracy_score(permuted["target"], estimator.predict(pd.DataFrame(
        by_position, columns=estimator.feature_names_in_))) < expected - 0.2

    found = {}
    for name in ("ordered", "permuted"):
        cat = catalogue.open(tmp_path / f"cat-{name}", create=True)
        submission = submit(cat, _manifest(model, {"source": str(tmp_path / f"{name}.csv")}))
        assert submission.dataset is not None
        assert submission.dataset.feature_names == list(estimator.feature_names_in_)
        assert not run_queue(cat, device="cpu").failed
        value = cat.sql("SELECT value FROM findings_current WHERE kind = 'accuracy'").to_pylist()[0]["value"]
        found[name] = (value, submission.dataset.id)
    assert found["ordered"][0] == found["permuted"][0] == expected
    assert found["ordered"][1] == found["permuted"][1]  # the model reads the same columns, so one dataset


def test_a_missing_column_is_a_submit_error_naming_it(cat: catalogue.Catalogue, tmp_path: Path) -> None:
    train, test = _frames()
    model = _named_pipeline(tmp_path / "lr", train)
    test.drop(columns=["mean radius", "worst area"]).to_csv(tmp_path / "rows.csv", index=False)
    problems = _refused(cat, _manifest(model, {"source": str(tmp_path / "rows.csv")}))
    assert len(problems) == 1
    assert problems[0].startswith("dataset.columns.features: no column 'mean radius', 'worst area' in the data, which the model "
                                  "reads (its feature_names_in_)"), problems


def test_a_features_list_makes_another_dataset_than_all_features() -> None:
    every = resolve_dataset(DatasetSpec(source="sklearn://iris"), TASK)
    two = resolve_dataset(DatasetSpec(source="sklearn://iris", columns={"features": ["petal width (cm)",
                                                                                   "sepal length (cm)"]}), TASK)
    assert len(every.feature_names) == 4 and two.feature_names == ["petal width (cm)", "sepal length (cm)"]
    assert two.id != every.id
    assert two.features().tolist() == every.table.select(two.feature_names).to_pandas().to_numpy().tolist()
    # the recorded spec reads the same rows again from the catalogue alone
    again = resolve_dataset(DatasetSpec.model_validate(two.entity.features["spec"]), TASK)
    assert again.id == two.id and two.entity.features["spec"]["columns"]["label"] == "target"


def _mlp(folder: Path, in_features: int, features: list[str] | None = None) -> Path:
    torch.manual_seed(0)
    args = {"in_features": in_features, "hidden": [8], "out_features": 3}
    return save_torch_model(MLP(**args), "mlp", args, folder, extra={"features": features} if features else None)


def test_a_4_feature_model_given_2_features_is_refused_and_not_registered(cat: catalogue.Catalogue,
                                                                          tmp_path: Path) -> None:
    model = _mlp(tmp_path / "mlp", 4)
    problems = _refused(cat, _manifest(model, {"source": "sklearn://iris",
                                               "columns": {"features": ["sepal length (cm)", "petal length (cm)"]}}))
    assert problems == ["dataset.columns.features: the model reads 4 feature(s) (its first layer), the data gives 2 "
                        "(sepal length (cm), petal length (cm))"]
    # a scikit-learn model says how many it reads too: 30 features of breast_cancer, given iris' 4
    problems = _refused(cat, _manifest(breast_cancer_skops(tmp_path / "lr"), {"source": "sklearn://iris"}))
    assert problems[0].startswith("dataset.columns.features: the model reads 30 feature(s) (its n_features_in_), "
                                  "the data gives 4")


def test_a_torch_model_reads_the_columns_its_modelsci_json_names_in_that_order(tmp_path: Path) -> None:
    names = ["petal width (cm)", "sepal length (cm)", "petal length (cm)", "sepal width (cm)"]
    handle = resolve_model(ModelSpec(source=str(_mlp(tmp_path / "mlp", 4, names)), task=TASK))
    inputs = model_inputs(handle)
    assert inputs.names == names and inputs.count == 4
    _, test = _frames("iris")
    test[list(reversed(test.columns))].to_csv(tmp_path / "rows.csv", index=False)
    data = resolve_dataset(DatasetSpec(source=str(tmp_path / "rows.csv")), TASK, inputs)
    assert data.feature_names == names
    loaded = load_model(handle)
    with torch.no_grad():
        expected = torch.softmax(loaded.model(torch.tensor(test[names].to_numpy(), dtype=torch.float32)), 1)
    assert np.array_equal(loaded.predict(data), expected.double().numpy())
    # a manifest naming other features than the model's is refused, naming both
    with pytest.raises(ValueError, match=r"dataset.columns.features: the model reads the columns .*features in "
                                         r"modelsci.json\), not \['sepal length \(cm\)'\]"):
        resolve_dataset(DatasetSpec(source=str(tmp_path / "rows.csv"), columns={"features": ["sepal length (cm)"]}),
                        TASK, inputs)


@pytest.mark.parametrize(("config", "expected"), [
    ({"architecture": "transformer_xl", "args": {}}, "unknown architecture 'transformer_xl'"),
    ({"architecture": "mlp", "args": {"in_features": 5, "hidden": [8], "out_features": 3}},
     "the architecture's net.0.weight has shape [8, 5], the weights' [8, 4]"),
])
def test_an_architecture_that_is_not_the_weights_is_refused_at_submit(cat: catalogue.Catalogue, tmp_path: Path,
                                                                      config: dict, expected: str) -> None:
    model = _mlp(tmp_path / "mlp", 4)
    (model / "modelsci.json").write_text(json.dumps(config))
    problems = _refused(cat, _manifest(model, {"source": "sklearn://iris"}))
    assert len(problems) == 1 and expected in problems[0] and problems[0].startswith("model.source"), problems


def test_a_rashomon_set_on_the_contributors_own_parquet_train_and_test_files(cat: catalogue.Catalogue,
                                                                             tmp_path: Path) -> None:
    train, test = _frames("iris")
    model = _named_pipeline(tmp_path / "lr", train)
    # The contributor's own files: another column order than the model's, the label named otherwise.
    for name, frame in (("train", train), ("test", test)):
        frame = frame.rename(columns={"target": "species"})
        pq.write_table(pa.Table.from_pandas(frame[list(reversed(frame.columns))], preserve_index=False),
                       tmp_path / f"{name}.parquet")
    rashomon = [{"name": "multiplicity.rashomon_set", "params": {"n_candidates": 6, "epsilon": 0.5, "n_bootstrap": 100,
                                                                 "importance_repeats": 1}}]
    dataset = {"source": str(tmp_path / "test.parquet"), "columns": {"label": "species"}}
    problems = _refused(cat, _manifest(model, dataset, rashomon))
    assert problems == ["analyses[0].name: multiplicity.rashomon_set retrains the model, so it needs the data the "
                        "model was trained on: add it to the manifest as `dataset.train: {source: train.parquet}` "
                        "(same forms as `dataset`; sklearn:// datasets use their seeded train split)"]

    problems = _refused(cat, _manifest(model, {**dataset, "train": {"source": str(tmp_path / "nowhere.parquet")}},
                                       rashomon))
    assert problems == [f"dataset.train.source: {tmp_path / 'nowhere.parquet'} does not exist"]
    submission = submit(cat, _manifest(model, {**dataset, "train": {"source": str(tmp_path / "train.parquet")}},
                                       rashomon))
    assert submission.train is not None and submission.train.entity.rows == len(train)
    assert submission.train.feature_names == list(train.columns[:-1])
    summary = run_queue(cat, device="cpu")
    assert summary.failed == [] and len(summary.succeeded) == 1
    run = cat.sql("SELECT dataset_id, train_dataset_id FROM runs").to_pylist()[0]
    assert run == {"dataset_id": submission.dataset.id, "train_dataset_id": submission.train.id}
    registered = cat.sql("SELECT id, rows FROM datasets ORDER BY rows").to_pylist()
    assert registered == [{"id": submission.dataset.id, "rows": len(test)},
                          {"id": submission.train.id, "rows": len(train)}]
    assert cat.sql("SELECT count(*) AS n FROM findings_current WHERE kind = 'ambiguity'").to_pylist() == [{"n": 1}]


def test_several_seeds_of_an_analysis_that_ignores_the_seed_are_refused(cat: catalogue.Catalogue, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    model = breast_cancer_skops(tmp_path / "lr")
    analyses = [{"name": "evaluation.performance", "params": {"n_bootstrap": 100}, "seeds": [0, 1, 1]}]
    monkeypatch.setattr(registry()["evaluation.performance"], "seed_dependent", False)
    problems = _refused(cat, _manifest(model, {"source": "sklearn://breast_cancer"}, analyses))
    assert problems == ["analyses[0].seeds: evaluation.performance's values do not depend on the seed, so its seeds "
                        "[0, 1] could not fail to replicate each other; give one seed"]
    # one seed (given twice) is fine, and so are several of an analysis whose values depend on it
    assert len(submit(cat, _manifest(model, {"source": "sklearn://breast_cancer"},
                                     [{**analyses[0], "seeds": [3, 3]}])).queued) == 1
    monkeypatch.setattr(registry()["evaluation.performance"], "seed_dependent", True)
    assert len(submit(cat, _manifest(model, {"source": "sklearn://breast_cancer"}, analyses)).queued) == 2


FAILING = '''
from modelsci.analyses.base import AnalysisPlugin
from modelsci.schemas.entities import Pillar


class Failing(AnalysisPlugin):
    name = "testing.failing"
    version = "1"
    family = "testing"
    pillar = Pillar.verify
    description = "Always raises."

    def run(self, ctx):
        raise RuntimeError("the same inputs fail the same way")
'''


@pytest.fixture
def failing_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """An analysis that always raises, installed through an entry point, here and for the command line."""
    from modelsci.analyses import base

    env = installed_plugin(tmp_path / "site", "failing_plugin", FAILING, "testing.failing", "Failing")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    base._entry_points.cache_clear()
    base.registry.cache_clear()
    yield env
    base._entry_points.cache_clear()
    base.registry.cache_clear()


def test_a_run_that_failed_for_good_is_queued_again_only_with_retry_failed(
        cat: catalogue.Catalogue, tmp_path: Path, failing_plugin: dict[str, str]) -> None:
    text = _manifest(breast_cancer_skops(tmp_path / "lr"), {"source": "sklearn://breast_cancer"},
                     [{"name": "testing.failing"}])
    first = submit(cat, text)
    assert len(run_queue(cat, device="cpu").failed) == 1
    again = submit(cat, text)
    assert again.queued == [] and again.already_planned == [] and again.failed_before == first.queued
    (tmp_path / "m.json").write_text(text)
    said = modelsci("submit", str(tmp_path / "m.json"), catalogue_dir=cat.root, env=failing_plugin).stdout
    assert "queued  " not in said and "1 run(s) failed before; --retry-failed queues them again" in said
    retried = submit(cat, text, retry_failed=True)
    assert len(retried.queued) == 1 and retried.failed_before == []
    assert cat.sql("SELECT attempt, status FROM store.queue ORDER BY attempt").to_pylist() == [
        {"attempt": 0, "status": "failed"}, {"attempt": 1, "status": "queued"}]
    failure = cat.sql("SELECT json_extract_string(environment, '$.failure') AS f FROM runs").to_pylist()
    assert failure == [{"f": "run"}]


def test_a_run_whose_worker_died_is_queued_again_on_resubmission(cat: catalogue.Catalogue, tmp_path: Path) -> None:
    text = _manifest(breast_cancer_skops(tmp_path / "lr"), {"source": "sklearn://breast_cancer"})
    first = submit(cat, text)
    queued = cat.claim("test-worker")
    assert queued is not None and [queued.run_id] == first.queued
    cat.commit(failed_bundle(queued, "cpu", RuntimeError("the worker process died")), author="test", message="died")
    assert cat.sql("SELECT status FROM store.queue").to_pylist() == [{"status": "failed"}]
    again = submit(cat, text)
    assert again.failed_before == [] and len(again.queued) == 1 and again.queued != first.queued
