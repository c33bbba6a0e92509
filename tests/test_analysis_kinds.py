"""Every analysis documents the kinds it writes, and its headline values say what they are.

One test runs every registered analysis on a small real model of a task it applies to and
holds each finding against the analysis' declared kinds; the others check the values that
the documentation promises (Wilson intervals, an undefined ROC-AUC as null with its reason,
the descriptions printed by ``modelsci analyses --describe``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from modelsci import catalogue
from modelsci.analyses.base import FindingKind, describe, registry
from modelsci.analyses.hallucination.toy import train_denoiser
from modelsci.analyses.stats import wilson_interval
from modelsci.executors import run_queue
from modelsci.planner import submit
from tests.conftest import REPO, modelsci

FEATURES = ["mean radius", "mean texture", "mean smoothness", "mean concavity"]
EXPLAIN = {"examples": 1, "budget": 16}

# The smallest case of each analysis: (model, task, dataset, params). Four features make every
# game exact at a budget of 16; the denoiser is trained for a few steps only (its samples are
# poor, which is all the kinds need: a ground truth that holds both verdicts).
CASES: dict[str, tuple[str, str, dict | None, dict]] = {
    "evaluation.performance": ("lr4", "tabular-classification", {}, {"n_bootstrap": 100}),
    "attribution.shapley": ("lr4", "tabular-classification", {}, EXPLAIN),
    "attribution.kernel_shap": ("lr4", "tabular-classification", {}, EXPLAIN),
    "attribution.integrated_gradients": ("mlp", "tabular-classification", {}, {"examples": 1, "n_steps": 4}),
    "attribution.gradient_x_input": ("mlp", "tabular-classification", {}, {"examples": 1}),
    "attribution.occlusion": ("mlp", "tabular-classification", {}, {"examples": 1}),
    "interactions.shapley": ("lr4", "tabular-classification", {}, EXPLAIN),
    "interactions.weighted_banzhaf": ("lr4", "tabular-classification", {}, {**EXPLAIN, "p": 0.3}),
    "interactions.metagame": ("lr4", "tabular-classification", {}, EXPLAIN),
    "multiplicity.rashomon_set": ("lr4", "tabular-classification", {}, {
        "n_candidates": 4, "epsilon": 1.0, "n_bootstrap": 100, "importance_repeats": 1}),
    "multiplicity.preprocessing": ("lr4", "tabular-classification", {}, {
        "n_candidates": 3, "epsilon": 1.0, "n_bootstrap": 100, "importance_repeats": 1}),
    "multiplicity.treefarms": ("lr4", "tabular-classification", {}, {"max_features": 3, "n_bootstrap": 100}),
    "hallucination.trajectory_variance": ("toy", "unconditional-image-generation", None, {
        "n_samples": 200, "last_steps": 2}),
    "hallucination.lid": ("toy", "unconditional-image-generation", None, {
        "n_samples": 100, "draws": 1, "probes": 1, "t_star": 1}),
    "hallucination.quench": ("toy", "unconditional-image-generation", None, {
        "n_samples": 50, "last_steps": 2, "draws": 1, "probes": 1, "t_star": 1, "iterations": 1,
        "window": [0.0, 0.1]}),
    "hallucination.comparison": ("toy", "unconditional-image-generation", None, {
        "n_samples": 50, "last_steps": 2, "draws": 1, "probes": 1, "t_star": 1, "iterations": 1,
        "window": [0.0, 0.1]}),
}


def _four_feature_model(folder: Path) -> Path:
    """A scaled logistic regression on four named breast_cancer features (modelsci's train split)."""
    import skops.io as sio

    frame = load_breast_cancer(as_frame=True).frame
    train, _ = train_test_split(frame, test_size=0.25, random_state=0, stratify=frame["target"])
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(train[FEATURES], train["target"])
    folder.mkdir(parents=True)
    sio.dump(model, folder / "model.skops")
    return folder


@pytest.fixture(scope="module")
def every_analysis(tmp_path_factory: pytest.TempPathFactory) -> catalogue.Catalogue:
    """A catalogue holding one run of every registered analysis."""
    root = tmp_path_factory.mktemp("kinds")
    models = {"lr4": _four_feature_model(root / "lr4"), "mlp": REPO / "examples" / "my_mlp", "toy": root / "toy"}
    train_denoiser([[1.0], [2.0], [3.0]], 0.05, timesteps=50, steps=40, batch=256, hidden=16, folder=root / "toy")
    cat = catalogue.open(root / "cat", create=True)
    assert set(CASES) == set(registry()), "every registered analysis needs a case here"
    by_model: dict[tuple[str, str], list[dict]] = {}
    for name, (model, task, _, params) in CASES.items():
        by_model.setdefault((model, task), []).append({"name": name, "params": params})
    for (model, task), analyses in by_model.items():
        manifest = {"submitter": "Test Suite <tests@example.org>", "model": {"source": str(models[model]), "task": task},
                    "analyses": analyses}
        if task != "unconditional-image-generation":
            manifest["dataset"] = {"source": "sklearn://breast_cancer", "split": "test", "limit": 60}
        submit(cat, json.dumps(manifest))
    run_queue(cat, device="cpu")
    failed = cat.sql("SELECT analysis_id, error FROM runs WHERE status = 'failed'").to_pylist()
    assert failed == [], failed
    return cat


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_finding_of_every_analysis_is_a_documented_kind(every_analysis: catalogue.Catalogue, name: str) -> None:
    plugin = registry()[name]
    kinds: dict[str, FindingKind] = {k.kind: k for k in plugin.kinds}
    assert kinds, f"{name} documents no kinds"
    assert all(k.value and k.unit and k.interval for k in kinds.values())
    rows = every_analysis.sql(
        "SELECT f.id, f.kind, f.value, f.ci_low, f.ci_high, f.metrics FROM findings f "
        f"JOIN runs r ON r.id = f.run_id WHERE r.analysis_id = '{name}@{plugin.version}'").to_pylist()
    assert rows, f"{name} wrote no findings"
    for row in rows:
        kind = kinds.get(row["kind"])
        assert kind is not None, f"{name} writes kind {row['kind']!r}, which it does not document"
        metrics = json.loads(row["metrics"]) if isinstance(row["metrics"], str) else row["metrics"]
        if row["value"] is None:
            assert kind.null and metrics.get("undefined"), f"{name}: a null {row['kind']} without a reason"
        else:
            assert math.isfinite(row["value"]), (name, row)
        if row["ci_low"] is not None:
            assert row["ci_low"] <= row["value"] <= row["ci_high"], (name, row)
        wildcard = any(key.startswith("<") for key in kind.metrics)
        undocumented = set(metrics) - set(kind.metrics)
        assert wildcard or not undocumented, f"{name}: {row['kind']} has undocumented metrics {undocumented}"
        for artifact in every_analysis.sql(f"SELECT name, path FROM artifacts WHERE finding_id = '{row['id']}'").to_pylist():
            columns = kind.artifacts.get(artifact["name"])
            assert columns is not None, f"{name}: {row['kind']} has an undocumented artifact {artifact['name']!r}"
            stored = set(pq.read_schema(every_analysis.root / artifact["path"]).names)
            assert stored <= set(columns), f"{name}: artifact {artifact['name']} has undocumented columns {stored - set(columns)}"
    # 50 toy samples hold no hallucination: the comparison's AUROCs are null (tests/test_hallucination_claims.py
    # checks them on enough samples), the filters write their flagged rates
    if name.startswith("hallucination.") and name not in ("hallucination.quench", "hallucination.comparison"):
        # the toy's ground truth is known: the true rate, the filters' shares and their AUROC all land
        assert {"hallucination_rate", "flagged_rate", "filter_auroc"} <= {r["kind"] for r in rows}


def test_wilson_intervals_match_published_values() -> None:
    # Newcombe (1998), Statistics in Medicine 17: 857-872, Table I, method 3 (Wilson score).
    assert wilson_interval(81, 263) == pytest.approx((0.2553, 0.3662), abs=5e-5)
    assert wilson_interval(15, 148) == pytest.approx((0.0624, 0.1605), abs=5e-5)
    z2 = 1.959963984540054 ** 2
    # At the ends the closed form is n / (n + z²) and z² / (n + z²): never the bootstrap's [1, 1].
    assert wilson_interval(45, 45) == pytest.approx((45 / (45 + z2), 1.0), rel=1e-12)
    assert wilson_interval(0, 10) == pytest.approx((0.0, z2 / (10 + z2)), rel=1e-12)


def test_accuracy_of_one_at_45_rows_gets_a_wilson_interval_and_one_class_makes_roc_auc_null(tmp_path: Path) -> None:
    """On the 45 test rows of class 1 only, the model is right on every row: accuracy 1 with the
    Wilson interval, ROC-AUC null with its reason, and the other metrics land."""
    frame = load_breast_cancer(as_frame=True).frame
    train, test = train_test_split(frame, test_size=0.25, random_state=0, stratify=frame["target"])
    model = _four_feature_model(tmp_path / "lr4")
    import skops.io as sio

    estimator = sio.load(model / "model.skops", trusted=sio.get_untrusted_types(file=model / "model.skops"))
    ones = test[(test["target"] == 1) & (estimator.predict(test[FEATURES]) == 1)].head(45)
    assert len(ones) == 45
    ones.reset_index(drop=True).to_parquet(tmp_path / "ones.parquet")
    manifest = {"submitter": "Test Suite <tests@example.org>",
                "model": {"source": str(model), "task": "tabular-classification"},
                "dataset": {"source": str(tmp_path / "ones.parquet"), "columns": {"label": "target"}},
                "analyses": [{"name": "evaluation.performance", "params": {"n_bootstrap": 100}}]}
    cat = catalogue.open(tmp_path / "cat", create=True)
    submit(cat, json.dumps(manifest))
    assert not run_queue(cat, device="cpu").failed
    rows = {r["kind"]: r for r in cat.sql("SELECT kind, value, ci_low, ci_high, metrics FROM findings_current").to_pylist()}
    assert set(rows) == {"accuracy", "macro_f1", "expected_calibration_error", "roc_auc"}
    z2 = 1.959963984540054 ** 2
    assert rows["accuracy"]["value"] == 1.0
    assert rows["accuracy"]["ci_low"] == pytest.approx(45 / (45 + z2), rel=1e-9) and rows["accuracy"]["ci_high"] == 1.0
    roc = rows["roc_auc"]
    assert roc["value"] is None and roc["ci_low"] is None
    assert json.loads(roc["metrics"])["undefined"] == "ROC-AUC needs both classes; the split has only class 1"
    assert rows["expected_calibration_error"]["value"] == pytest.approx(
        1 - estimator.predict_proba(ones[FEATURES]).max(1).mean(), abs=1e-12)


@pytest.mark.parametrize("name", ["evaluation.performance", "multiplicity.rashomon_set", "hallucination.lid"])
def test_describe_prints_every_kind_with_its_value_and_unit(name: str) -> None:
    out = modelsci("analyses", "--describe", name).stdout
    plugin = registry()[name]
    assert out.startswith(f"# {name}@{plugin.version}\n") and out == describe(plugin)
    for kind in plugin.kinds:
        section = out[out.index(f"### `{kind.kind}`"):]
        assert f"- value: {kind.value}" in section and f"- unit: {kind.unit}" in section
        for key in kind.metrics:
            assert f"`{key}`" in section


def test_describe_of_an_unknown_analysis_is_one_line_with_a_close_match() -> None:
    result = modelsci("analyses", "--describe", "evaluation.perfomance", check=False)
    assert result.returncode == 1
    assert result.stderr.strip() == "error: no analysis named 'evaluation.perfomance'; did you mean evaluation.performance?"


def test_the_site_analysis_page_renders_every_declared_kind() -> None:
    from modelsci.site_build import _environment, as_text

    template = _environment().get_template("analysis.md.j2")
    for name, plugin in registry().items():
        page = template.render(site=None, head=None, pillars=(), name=name, versions=[plugin.entity().model_dump()],
                               boards=[], models=[], doc=plugin,
                               describe_command=f"modelsci analyses --describe {name}")
        for kind in plugin.kinds:
            assert f"### {as_text(kind.kind)}\n" in page and as_text(kind.value) in page, (name, kind.kind)


def test_parameters_of_one_task_leave_the_run_keys_of_others_unchanged() -> None:
    """Default parameters hash as they did before the text-generation and vision-language parameters
    existed, so resubmitting to an older catalogue plans nothing new; set, they are recorded."""
    from modelsci.analyses.attribution.shapley import ShapleyValues
    from modelsci.analyses.interactions.banzhaf import WeightedBanzhaf
    from modelsci.schemas.bundle import params_hash

    before = {
        ShapleyValues: "sha256:0b5dc9e329d93e0380877832b6a6236940c3fdb23870d285b3998c2bc8ff0951",
        WeightedBanzhaf: "sha256:2c6d4322bdd324d4f3e45b2240c17522ddec4ecc389aea1b65b2ff39b25d875b",
    }
    for plugin, digest in before.items():
        assert params_hash(plugin.Params().model_dump(mode="json")) == digest, plugin.name
    chosen = ShapleyValues.Params(players="tokens", cell=2).model_dump(mode="json")
    assert chosen["players"] == "tokens" and chosen["cell"] == 2 and "chat" not in chosen
    assert ShapleyValues.Params.model_validate(chosen) == ShapleyValues.Params(players="tokens", cell=2)
