"""Explanations through real models and the whole submission path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from modelsci import catalogue
from modelsci.analyses.games.evaluator import GameEvaluator
from modelsci.analyses.games.indices import all_coalitions, meta_attributions, shapley_interactions
from modelsci.analyses.games.maskers import PairEncoderMasker
from modelsci.ingest.loading import load_model
from modelsci.ingest.models import resolve_model
from modelsci.schemas.manifest import ModelSpec
from tests.conftest import modelsci
from tests.models import minilm_folder, write_manifest


@pytest.fixture(scope="module")
def minilm():  # noqa: ANN201 - a LoadedModel
    return load_model(resolve_model(ModelSpec(source=str(minilm_folder()), task="sentence-similarity")), "cpu")


def test_minilm_pair_exact_shapley_is_efficient_and_v_full_is_the_cosine(minilm) -> None:  # noqa: ANN001
    a, b = "A man plays guitar.", "Someone plays music."
    masker = PairEncoderMasker(minilm, a, b)
    assert masker.n_players <= 10
    game = GameEvaluator(masker)
    expected = minilm.model.similarity(minilm.model.encode([a]), minilm.model.encode([b])).item()
    assert game.value_full == pytest.approx(expected, abs=1e-5)
    sv = shapley_interactions(game, masker.n_players, "SV", 1, 2 ** masker.n_players)
    assert sv.exact
    phi = sv.singletons(masker.n_players)
    assert phi.sum() == pytest.approx(game.value_full - game.value_empty, abs=1e-4)
    # Every coalition is a pair of side coalitions: 2^n values from 2^a + 2^b forward passes.
    assert game.model_evaluations == 2 ** masker.n_a + 2 ** (masker.n_players - masker.n_a)
    meta, exact, _ = meta_attributions(game, masker.n_players, 2 ** masker.n_players)
    assert exact
    np.testing.assert_allclose(meta.sum(1), phi, atol=1e-9)
    assert game.model_evaluations == 2 ** masker.n_a + 2 ** (masker.n_players - masker.n_a)  # all cached


def test_pair_values_are_the_product_of_side_embeddings(minilm) -> None:  # noqa: ANN001
    masker = PairEncoderMasker(minilm, "Kids play football.", "Children play soccer.")
    side_a, side_b = all_coalitions(masker.n_a), all_coalitions(masker.n_players - masker.n_a)
    matrix = masker.pair_values(side_a, side_b)
    row = np.concatenate([side_a[3], side_b[5]])[None]
    assert matrix[3, 5] == pytest.approx(masker.values(row)[0], abs=1e-9)


def polynomial_pipeline(folder: Path) -> dict[str, object]:
    """f(x) = 1 + 2 x0 - x1 + 0.5 x2 + 3 x0 x1 - 2 x1 x3 on binary x, as a skops pipeline."""
    import skops.io as sio
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import PolynomialFeatures

    x = all_coalitions(4).astype(float)
    y = 1 + 2 * x[:, 0] - x[:, 1] + 0.5 * x[:, 2] + 3 * x[:, 0] * x[:, 1] - 2 * x[:, 1] * x[:, 3]
    model = make_pipeline(PolynomialFeatures(2, interaction_only=True, include_bias=False), LinearRegression())
    model.fit(x, y)
    folder.mkdir(parents=True)
    sio.dump(model, folder / "model.skops")
    return {"singles": [2, -1, 0.5, 0], "pairs": {(0, 1): 3.0, (1, 3): -2.0}}


def test_closed_form_values_through_the_cli(tmp_path: Path) -> None:
    truth = polynomial_pipeline(tmp_path / "poly")
    (tmp_path / "rows.csv").write_text("x0,x1,x2,x3,target\n1,1,1,1,3.5\n1,0,1,1,3.5\n")
    manifest = write_manifest(
        tmp_path / "m.yaml", str(tmp_path / "poly"), task="tabular-regression",
        dataset={"source": str(tmp_path / "rows.csv")},
        analyses=[{"name": "attribution.shapley", "params": {"examples": 1, "baseline": "zeros"}},
                  {"name": "interactions.shapley", "params": {"examples": 1, "baseline": "zeros", "index": "k-SII"}},
                  {"name": "interactions.weighted_banzhaf", "params": {"examples": 1, "baseline": "zeros", "p": 0.3}}])
    modelsci("submit", str(manifest), "--run", catalogue_dir=tmp_path / "cat")
    cat = catalogue.open(tmp_path / "cat", create=True)

    def artifact(analysis: str, name: str) -> list[dict]:
        path = cat.sql(f"SELECT a.path FROM artifacts a JOIN findings_current f ON f.id = a.finding_id "
                       f"WHERE f.analysis_name = '{analysis}' AND a.name = '{name}'").to_pylist()[0]["path"]
        return pq.read_table(cat.root / path).to_pylist()

    # Shapley: each pair's interaction is split evenly between its two players.
    phi = [r["value"] for r in sorted(artifact("attribution.shapley", "attributions"), key=lambda r: r["feature"])]
    np.testing.assert_allclose(phi, [2 + 1.5, -1 + 1.5 - 1, 0.5, -1], atol=1e-9)
    for analysis in ("interactions.shapley", "interactions.weighted_banzhaf"):
        rows = artifact(analysis, "interactions")
        values = {tuple(r["players"]): r["value"] for r in rows}
        for i, s in enumerate(truth["singles"]):
            assert values.get((i,), 0.0) == pytest.approx(s, abs=1e-9), (analysis, i)
        for pair, v in truth["pairs"].items():
            assert values[pair] == pytest.approx(v, abs=1e-9), (analysis, pair)
        assert all(r["names"] == [f"x{p}" for p in r["players"]] for r in rows)
    metrics = json.loads(cat.sql("SELECT metrics FROM findings_current WHERE kind = 'interactions' "
                                 "AND analysis_name = 'interactions.shapley'").to_pylist()[0]["metrics"])
    assert metrics["value_full"] == pytest.approx(3.5) and metrics["value_empty"] == pytest.approx(1.0)
    assert metrics["exact"] is True and metrics["budget"] == 16 and metrics["r2"] == pytest.approx(1.0)


def test_integrated_gradients_on_a_text_classifier_is_complete(tmp_path: Path) -> None:
    import torch

    from modelsci.analyses.attribution.gradients import text_attributions
    from modelsci.analyses.games.maskers import TextClassifierMasker
    from tests.models import tiny_bert_classifier

    folder = tiny_bert_classifier(tmp_path / "bert")
    model = load_model(resolve_model(ModelSpec(source=str(folder), task="text-classification")), "cpu")
    masker = TextClassifierMasker(model, "a very good movie", mode="mask")
    phi = text_attributions(masker, "integrated_gradients", 64, "mask")
    assert len(phi) == masker.n_players == 4
    ids = masker.encoding["input_ids"]
    baseline = ids.clone()
    baseline[0, masker.positions] = model.tokenizer.mask_token_id
    with torch.no_grad():
        def prob(x: torch.Tensor) -> float:
            logits = model.model(input_ids=x, attention_mask=masker.encoding["attention_mask"]).logits
            return torch.softmax(logits, -1)[0, masker.target].item()
        gap = prob(ids) - prob(baseline)
    assert abs(phi.sum() - gap) < 1e-3


def test_captum_attributions_on_a_text_classifier_through_the_cli(tmp_path: Path) -> None:
    from tests.models import tiny_bert_classifier

    folder = tiny_bert_classifier(tmp_path / "bert")
    (tmp_path / "reviews.csv").write_text("text,label\na very good movie,1\nnot a good movie,0\nbad movie,0\n")
    manifest = write_manifest(tmp_path / "m.yaml", str(folder), task="text-classification",
                              dataset={"source": str(tmp_path / "reviews.csv")},
                              analyses=[{"name": n, "params": {"examples": 2, "text_mode": "mask"}} for n in (
                                  "attribution.integrated_gradients", "attribution.gradient_x_input", "attribution.occlusion")])
    modelsci("submit", str(manifest), "--run", catalogue_dir=tmp_path / "cat")
    cat = catalogue.open(tmp_path / "cat", create=True)
    rows = cat.sql("SELECT analysis_name, count(*) AS n FROM findings_current WHERE kind = 'attribution' "
                   "GROUP BY ALL ORDER BY ALL").to_pylist()
    assert [(r["analysis_name"], r["n"]) for r in rows] == [
        ("attribution.gradient_x_input", 2), ("attribution.integrated_gradients", 2), ("attribution.occlusion", 2)]
