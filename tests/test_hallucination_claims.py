"""The papers' claims measured: filter AUROCs and their paired differences, the quench against its baselines.

The comparison runs through a manifest on the committed 1D toy denoiser (unconditional: ground
truth by distance to its three modes), and every headline is recomputed here from the stored
artifacts or from counts the sampler fixes (forwards per sample = the schedule's timesteps).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score

from modelsci import catalogue
from modelsci.analyses.hallucination.comparison import reject_and_resample
from modelsci.analyses.stats import wilson_interval
from modelsci.executors import run_queue
from modelsci.planner import submit

TOY = Path(__file__).parents[1] / "examples" / "demo" / "toy_mixture_1d"  # the demo's toy denoiser, shipped
TOY_N = 1500
TOY_T = 1000  # the committed toy's schedule: every sample costs 1,000 denoiser rows


def _submit(root: Path, source: Path, task: str, params: dict) -> catalogue.Catalogue:
    cat = catalogue.open(root / "cat", create=True)
    manifest = {"submitter": "Test Suite <tests@example.org>", "model": {"source": str(source), "task": task},
                "analyses": [{"name": "hallucination.comparison", "params": params}]}
    submit(cat, json.dumps(manifest))
    run_queue(cat, device="cpu")
    failed = cat.sql("SELECT error FROM runs WHERE status = 'failed'").to_pylist()
    assert failed == [], failed
    return cat


def _findings(cat: catalogue.Catalogue, kind: str) -> dict[str, dict]:
    rows = cat.sql("SELECT id, subject, value, ci_low, ci_high, n, seed, metrics FROM findings_current "
                   f"WHERE kind = '{kind}' ORDER BY subject").to_pylist()
    for row in rows:
        row["metrics"] = json.loads(row["metrics"]) if isinstance(row["metrics"], str) else row["metrics"]
    return {row["subject"]: row for row in rows}


def _artifact(cat: catalogue.Catalogue, finding_id: str, name: str):  # noqa: ANN202 - a pandas frame
    path = cat.sql(f"SELECT path FROM artifacts WHERE finding_id = '{finding_id}' AND name = '{name}'").to_pylist()
    return pq.read_table(cat.root / path[0]["path"]).to_pandas()


def _auc(positive: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney statistic: (rank sum of positives - n1(n1+1)/2) / (n1 n0), ties halved."""
    ranks = rankdata(scores)
    n1 = positive.sum()
    return float((ranks[positive].sum() - n1 * (n1 + 1) / 2) / (n1 * (len(positive) - n1)))


@pytest.fixture(scope="session")
def toy_comparison(tmp_path_factory: pytest.TempPathFactory) -> catalogue.Catalogue:
    """One comparison run on the committed 1D toy denoiser (seed 0 of the run)."""
    root = tmp_path_factory.mktemp("claims-toy")
    shutil.copytree(TOY, root / "toy")
    return _submit(root, root / "toy", "unconditional-image-generation",
                   {"n_samples": TOY_N, "last_steps": 10, "draws": 2, "probes": 2, "iterations": 2})


def test_reject_and_resample_spends_the_budget_it_is_given_and_no_more() -> None:
    """Sample 0 stays flagged however often it is drawn; 2 and 3 are fixed by one redraw (10 forwards each)."""
    drawn: list[list[int]] = []

    def redraw(take: np.ndarray) -> tuple[np.ndarray, int]:
        drawn.append(take.tolist())
        return take == 0, 10 * len(take)

    flagged = np.array([True, False, True, True])
    spent = reject_and_resample(flagged, 35, 10, redraw)  # 3 redraws fit; 5 left pays for none
    assert (spent.forwards, spent.redrawn, spent.rounds, spent.still_flagged) == (30, 3, 1, 1)
    assert drawn == [[0, 2, 3]]
    drawn.clear()
    spent = reject_and_resample(flagged, 50, 10, redraw)  # then sample 0 alone, twice
    assert (spent.forwards, spent.redrawn, spent.rounds, spent.still_flagged) == (50, 5, 3, 1)
    assert drawn == [[0, 2, 3], [0], [0]]
    drawn.clear()
    spent = reject_and_resample(flagged, 25, 10, redraw)  # a round draws only what the budget pays for
    assert (spent.forwards, spent.redrawn, spent.rounds, spent.still_flagged) == (20, 2, 1, 2)
    assert drawn == [[0, 2]]
    assert reject_and_resample(np.zeros(4, bool), 100, 10, redraw).forwards == 0
    with pytest.raises(ValueError, match="positive"):
        reject_and_resample(flagged, 100, 0, redraw)


def test_filter_aurocs_and_their_paired_differences_recompute_from_the_scores(
        toy_comparison: catalogue.Catalogue) -> None:
    cat = toy_comparison
    rate = _findings(cat, "hallucination_rate")[""]
    assert rate["value"] > 0 and rate["n"] == TOY_N
    aurocs = _findings(cat, "filter_auroc")
    assert sorted(aurocs) == ["lid_dsm", "lid_flipd", "trajectory_variance"]
    flagged = _findings(cat, "flagged_rate")
    judged_scores, positive = {}, None
    for name, finding in aurocs.items():
        scores = _artifact(cat, flagged[name]["id"], "scores")
        judged = scores[scores["in_support"] | scores["hallucinated"]]
        judged_scores[name] = judged["score"].to_numpy()
        positive = judged["hallucinated"].to_numpy() if positive is None else positive
        assert (judged["hallucinated"].to_numpy() == positive).all()  # one draw, judged once, for every filter
        assert finding["value"] == pytest.approx(roc_auc_score(positive, judged_scores[name]), abs=1e-12)
        assert finding["ci_low"] <= finding["value"] <= finding["ci_high"]
        assert finding["metrics"]["hallucinated"] == rate["metrics"]["hallucinated"] == positive.sum()

    # The paired bootstrap, redone here: the run's seeded resamples of the judged samples, both AUROCs on each.
    differences = _findings(cat, "auroc_difference")
    assert sorted(differences) == ["lid_dsm - trajectory_variance", "lid_flipd - trajectory_variance"]
    for subject, finding in differences.items():
        manifold = subject.split(" - ")[0]
        assert finding["value"] == pytest.approx(aurocs[manifold]["value"] - aurocs["trajectory_variance"]["value"],
                                                 abs=1e-12)
        rng = np.random.default_rng(finding["seed"])
        n = len(positive)
        resampled = []
        for _ in range(500):
            i = rng.integers(0, n, n)
            if 0 < positive[i].sum() < n:
                resampled.append(_auc(positive[i], judged_scores[manifold][i])
                                 - _auc(positive[i], judged_scores["trajectory_variance"][i]))
        low, high = np.quantile(resampled, [0.025, 0.975])
        assert finding["ci_low"] == pytest.approx(min(low, finding["value"]), abs=1e-12)
        assert finding["ci_high"] == pytest.approx(max(high, finding["value"]), abs=1e-12)
        expected = "exceeds" if finding["ci_low"] > 0 else "falls_short" if finding["ci_high"] < 0 else "matches"
        assert finding["metrics"]["verdict"] == expected
    # The question the comparison exists for, answered in SQL.
    answer = cat.sql("SELECT subject, metrics->>'verdict' AS verdict FROM findings_current "
                     "WHERE kind = 'auroc_difference' ORDER BY subject").to_pylist()
    assert [a["verdict"] for a in answer] == [differences[a["subject"]]["metrics"]["verdict"] for a in answer]


def test_the_quench_and_reject_resample_at_the_same_compute_on_the_toy(toy_comparison: catalogue.Catalogue) -> None:
    cat = toy_comparison
    rates = _findings(cat, "mitigated_rate")
    assert sorted(rates) == ["none", "quench", "reject_resample"]  # unconditional: no guidance to lower
    truth = _findings(cat, "hallucination_rate")[""]
    none, quench, resample = rates["none"], rates["quench"], rates["reject_resample"]
    assert none["value"] == truth["value"]
    assert none["metrics"]["forwards"] == TOY_N * TOY_T
    # the quench pays for its DSM reference (2 draws a sample) and a second corrected run of the sampler
    assert quench["metrics"]["forwards"] >= 2 * TOY_N * TOY_T + 2 * TOY_N
    # reject-resample: whole samples redrawn within the quench's compute, never beyond it
    spent = resample["metrics"]["forwards"] - none["metrics"]["forwards"]
    assert spent == resample["metrics"]["redrawn"] * TOY_T
    assert 0 < spent <= resample["metrics"]["budget"] == quench["metrics"]["forwards"] - none["metrics"]["forwards"]
    # it stops when nothing flagged is left, or when what is left of the budget buys no sample
    assert resample["metrics"]["still_flagged"] == 0 or quench["metrics"]["forwards"] - resample["metrics"]["forwards"] < TOY_T
    assert resample["metrics"]["forwards_vs_quench"] == resample["metrics"]["forwards"] / quench["metrics"]["forwards"]
    flagged = _artifact(cat, _findings(cat, "flagged_rate")["trajectory_variance"]["id"], "scores")
    # flagged without the ground truth, as the quench's gate: above the gate_quantile of the draw's own scores
    threshold = np.quantile(flagged["score"], 0.95)
    assert resample["metrics"]["threshold"] == threshold
    assert resample["metrics"]["flagged"] == (flagged["score"] > threshold).sum() > 0
    for finding in rates.values():
        k = finding["metrics"]["hallucinated"]
        assert finding["value"] == k / TOY_N
        assert (finding["ci_low"], finding["ci_high"]) == pytest.approx(wilson_interval(k, TOY_N), abs=1e-12)
        assert finding["metrics"]["sampler"]["scheduler"] == "DDPM"
    assert resample["value"] < none["value"]  # redrawing what the filter flags removes hallucinations


def test_the_model_page_plots_aurocs_and_mitigated_rates_with_their_intervals(
        toy_comparison: catalogue.Catalogue) -> None:
    from modelsci.site_build import Site, _model_plots

    site = Site(toy_comparison, 10_000)
    model = next(iter(site.models.values()))
    shown = [p for p in _model_plots(site, model, list(site.findings.values()))
             if p["analysis"] == "hallucination.comparison"]
    titles = [p["title"] for p in shown]
    aurocs = next(p["html"] for p in shown if p["title"].startswith("How well each filter"))
    rates = next(p["html"] for p in shown if p["title"].startswith("The true hallucination rate"))
    assert all(f">{name}</text>" in aurocs for name in ("lid_dsm", "lid_flipd", "trajectory_variance")), titles
    assert all(f">{name}</text>" in rates for name in ("none", "quench", "reject_resample"))
    assert aurocs.count('class="whisker"') == 3 and rates.count('class="whisker"') == 3
    # at a glance: whether each manifold filter matches or exceeds the temporal one
    from modelsci.site_build import _summary_card

    glance = {(s["kind"], s["subject"]) for s in _summary_card(site, model, [])["headlines"]}
    assert {("auroc_difference", "lid_dsm - trajectory_variance"),
            ("auroc_difference", "lid_flipd - trajectory_variance"), ("hallucination_rate", "")} <= glance


SHAPES = Path(__file__).parent.parent / "examples" / "demo" / "shapes_text_16"
SHAPES_N, SHAPES_STEPS, SHAPES_SCALE = 48, 20, 3.0
SHAPES_PARAMS = {"n_samples": SHAPES_N, "num_inference_steps": SHAPES_STEPS, "guidance_scale": SHAPES_SCALE,
                 "guidance_scales": [1.0, 5.0], "lower_guidance": 1.0, "last_steps": 5, "draws": 2, "probes": 2,
                 "iterations": 2, "window": [0.0, 0.1]}


@pytest.fixture(scope="session")
def shapes_comparison(tmp_path_factory: pytest.TempPathFactory) -> catalogue.Catalogue:
    """One comparison run on the demo's text-conditional 16x16 shapes pipeline (committed weights), guided."""
    root = tmp_path_factory.mktemp("claims-shapes")
    return _submit(root, SHAPES, "text-to-image", SHAPES_PARAMS)


def test_on_the_shapes_pipeline_the_claims_are_measured_with_guidance(shapes_comparison: catalogue.Catalogue) -> None:
    cat = shapes_comparison
    rate = _findings(cat, "hallucination_rate")[""]
    assert rate["value"] > 0
    aurocs = _findings(cat, "filter_auroc")
    assert sorted(aurocs) == ["lid_dsm", "lid_flipd", "trajectory_variance"]
    for subject, finding in _findings(cat, "auroc_difference").items():
        manifold = aurocs[subject.split(" - ")[0]]["value"]
        assert finding["value"] == pytest.approx(manifold - aurocs["trajectory_variance"]["value"], abs=1e-12)
        assert finding["ci_low"] <= finding["value"] <= finding["ci_high"]
        verdict = finding["metrics"]["verdict"]
        assert verdict == ("exceeds" if finding["ci_low"] > 0 else "falls_short" if finding["ci_high"] < 0
                           else "matches")
        assert (manifold > aurocs["trajectory_variance"]["value"]) == (finding["value"] > 0)

    # Guided sampling evaluates both branches: 2 rows per sample and step; guidance 1 evaluates one.
    rates = _findings(cat, "mitigated_rate")
    assert sorted(rates) == ["lower_guidance", "none", "quench", "reject_resample"]
    assert rates["none"]["metrics"]["forwards"] == 2 * SHAPES_N * SHAPES_STEPS
    assert rates["lower_guidance"]["metrics"]["forwards"] == SHAPES_N * SHAPES_STEPS
    assert rates["reject_resample"]["metrics"]["forwards"] <= rates["quench"]["metrics"]["forwards"]
    spent = rates["reject_resample"]["metrics"]["forwards"] - rates["none"]["metrics"]["forwards"]
    assert spent == 2 * SHAPES_STEPS * rates["reject_resample"]["metrics"]["redrawn"]
    assert rates["none"]["value"] == rate["value"]
    for method, finding in rates.items():
        assert finding["metrics"]["guidance_scale"] == (1.0 if method == "lower_guidance" else SHAPES_SCALE)
        assert finding["metrics"]["sampler"]["pipeline"] == "StableDiffusionPipeline"
        assert finding["metrics"]["sampler"]["guidance_scale"] == SHAPES_SCALE

    # The rate by guidance scale, on the same noise: the run's own scale is the draw, scale 1 the lowered baseline.
    by_guidance = _findings(cat, "rate_by_guidance")[""]
    series = _artifact(cat, by_guidance["id"], "series")
    assert series["guidance_scale"].tolist() == [1.0, SHAPES_SCALE, 5.0]
    assert series["n"].tolist() == [SHAPES_N] * 3
    assert series["forwards"].tolist() == [SHAPES_N * SHAPES_STEPS, 2 * SHAPES_N * SHAPES_STEPS,
                                           2 * SHAPES_N * SHAPES_STEPS]
    assert series["rate"][0] == rates["lower_guidance"]["value"]
    assert series["rate"][1] == rate["value"] == by_guidance["value"]
    for row in series.itertuples():
        k = round(row.rate * SHAPES_N)
        assert row.rate == k / SHAPES_N
        assert (row.ci_low, row.ci_high) == pytest.approx(wilson_interval(k, SHAPES_N), abs=1e-12)

    from modelsci.site_build import Site, _model_plots

    site = Site(cat, 10_000)
    shown = _model_plots(site, next(iter(site.models.values())), list(site.findings.values()))
    curve = [p["html"] for p in shown if "rate_by_guidance" in p["title"]]
    assert len(curve) == 1 and "hallucination rate by guidance scale" in curve[0] and "<svg" in curve[0]
