"""Game-theoretic values on games with known answers, the evaluator, and Captum's integrated gradients."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from modelsci.analyses.attribution.gradients import captum_attributions
from modelsci.analyses.games.evaluator import GameEvaluator
from modelsci.analyses.games.indices import (
    INDICES,
    _meta_sampled,
    all_coalitions,
    meta_attributions,
    shapley_interactions,
    weighted_banzhaf,
)

PAIRWISE = ("k-SII", "STII", "FSII", "SII", "FBII")


def unanimity(*members: int):  # noqa: ANN201 - a game
    def game(c: np.ndarray) -> np.ndarray:
        return np.all(np.asarray(c)[:, list(members)], axis=1).astype(float)
    return game


def total(*games_and_weights):  # noqa: ANN201 - a game
    def game(c: np.ndarray) -> np.ndarray:
        return sum(w * g(c) for g, w in games_and_weights)
    return game


@pytest.mark.parametrize("t", [1, 2, 3, 4])
def test_unanimity_game_shapley_and_banzhaf(t: int) -> None:
    n = 5
    game = unanimity(*range(t))
    sv = shapley_interactions(game, n, "SV", 1, 10_000).singletons(n)
    bv = shapley_interactions(game, n, "BV", 1, 10_000).singletons(n)
    np.testing.assert_allclose(sv, [1 / t] * t + [0] * (n - t), atol=1e-6)
    np.testing.assert_allclose(bv, [2 ** (1 - t)] * t + [0] * (n - t), atol=1e-6)


def test_the_issue_example_for_every_index() -> None:
    game = total((unanimity(0, 1), 1.0), (unanimity(2), 2.0))
    sv = shapley_interactions(game, 3, "SV", 1, 100)
    np.testing.assert_allclose(sv.singletons(3), [0.5, 0.5, 2.0], atol=1e-6)
    for index in PAIRWISE:
        iv = shapley_interactions(game, 3, index, 2, 100)
        assert iv.exact
        assert iv.values[(0, 1)] == pytest.approx(1.0, abs=1e-6), index
        assert iv.values.get((0, 2), 0.0) == pytest.approx(0.0, abs=1e-6), index
    for p in (0.2, 0.5, 0.7):
        wb = weighted_banzhaf(game, 3, p, 100)
        assert wb.values[(0, 1)] == pytest.approx(1.0, abs=1e-6)
        assert wb.values[(2,)] == pytest.approx(2.0, abs=1e-6)


def test_additive_game_gives_the_weights_and_no_interactions() -> None:
    weights = np.array([0.3, -1.2, 2.0, 0.0, 0.7])

    def game(c: np.ndarray) -> np.ndarray:
        return np.asarray(c, float) @ weights + 4.0

    for index in INDICES:
        iv = shapley_interactions(game, 5, index, 2, 10_000)
        np.testing.assert_allclose(iv.singletons(5), weights, atol=1e-6, err_msg=index)
        assert all(abs(v) < 1e-6 for k, v in iv.values.items() if len(k) == 2), index
        assert iv.exact
    wb = weighted_banzhaf(game, 5, 0.3, 10_000)
    np.testing.assert_allclose(wb.singletons(5), weights, atol=1e-6)
    assert all(abs(v) < 1e-6 for k, v in wb.values.items() if len(k) == 2)


def test_sums_of_unanimity_games_add_up() -> None:
    game = total((unanimity(0, 1, 2), 3.0), (unanimity(1, 3), -1.0), (unanimity(4), 0.5))
    sv = shapley_interactions(game, 5, "SV", 1, 10_000).singletons(5)
    np.testing.assert_allclose(sv, [1.0, 1.0 - 0.5, 1.0, -0.5, 0.5], atol=1e-6)


def random_game(n: int, seed: int):  # noqa: ANN201 - a game with interactions of every order
    rng = np.random.default_rng(seed)
    table = rng.normal(size=2 ** n)

    def game(c: np.ndarray) -> np.ndarray:
        idx = (np.asarray(c, int) << np.arange(n)).sum(1)
        return table[idx]
    return game


def test_weighted_banzhaf_at_one_half_is_shapiqs_fbii() -> None:
    game = random_game(6, seed=3)
    ours = weighted_banzhaf(game, 6, 0.5, 10_000)
    theirs = shapley_interactions(game, 6, "FBII", 2, 10_000)
    for key in itertools.chain([(i,) for i in range(6)], itertools.combinations(range(6), 2)):
        assert ours.values[key] == pytest.approx(theirs.values.get(key, 0.0), abs=1e-6), key


def test_weighted_banzhaf_sampled_in_chunks_recovers_an_order_two_game() -> None:
    # 12 players: 4,096 coalitions do not fit a budget of 1,500, so coalitions are drawn from the
    # kernel and X^T W X is accumulated 256 rows at a time; an order-2 game is fitted exactly.
    rng = np.random.default_rng(0)
    singles, pairs = rng.normal(size=12), {(1, 4): 1.5, (0, 11): -2.0, (3, 7): 0.25}
    game = total(*[(unanimity(i), s) for i, s in enumerate(singles)],
                 *[(unanimity(*k), v) for k, v in pairs.items()])
    sampled = weighted_banzhaf(game, 12, 0.3, 1_500, seed=0, chunk=256)
    assert not sampled.exact and sampled.budget == 1_500
    np.testing.assert_allclose(sampled.singletons(12), singles, atol=1e-6)
    for key, value in sampled.of_order(2).items():
        assert value == pytest.approx(pairs.get(key, 0.0), abs=1e-6), key


def test_meta_attribution_rows_sum_to_shapley_values() -> None:
    game = random_game(5, seed=7)
    meta, exact, used = meta_attributions(game, 5, 10_000)
    sv = shapley_interactions(game, 5, "SV", 1, 10_000).singletons(5)
    assert exact and used == 32
    np.testing.assert_allclose(meta.sum(1), sv, atol=1e-9)
    sampled, exact_s, _ = _meta_sampled(game, 5, 60_000, np.random.default_rng(0))
    assert not exact_s and np.abs(sampled - meta).max() < 0.05


def test_meta_attributions_of_a_unanimity_game() -> None:
    # u_{0,1}: phi_0 = phi_1 = 1/2; each is shaped half by itself and half by the other.
    meta, _, _ = meta_attributions(unanimity(0, 1), 3, 100)
    np.testing.assert_allclose(meta, [[0.25, 0.25, 0], [0.25, 0.25, 0], [0, 0, 0]], atol=1e-12)


class CountingMasker:
    def __init__(self, n: int) -> None:
        self.n_players, self.names, self.forward_passes = n, [str(i) for i in range(n)], 0
        self.weights = np.arange(1.0, n + 1)

    def values(self, coalitions: np.ndarray) -> np.ndarray:
        self.forward_passes += len(coalitions)
        return coalitions @ self.weights


def test_evaluator_evaluates_each_coalition_once_in_batches() -> None:
    game = GameEvaluator(CountingMasker(4), batch_size=3)
    everything = all_coalitions(4)
    np.testing.assert_allclose(game(everything), everything @ np.arange(1.0, 5))
    assert game.model_evaluations == 16
    game(everything[::-1])
    game(np.vstack([everything, everything]))
    assert game.model_evaluations == 16 and game.requested == 64


def test_evaluator_refuses_nan_outputs() -> None:
    masker = CountingMasker(2)
    masker.values = lambda c: np.full(len(c), np.nan)  # type: ignore[method-assign]
    with pytest.raises(ValueError, match="NaN or inf"):
        GameEvaluator(masker)(np.ones((1, 2), bool))


def test_integrated_gradients_completeness_on_an_mlp() -> None:
    from modelsci.ingest.architectures import MLP

    torch.manual_seed(0)
    mlp = MLP(6, [32, 32], 1).double()
    x, baseline = np.random.default_rng(0).normal(size=(2, 6))
    phi = captum_attributions(mlp, x, baseline, "integrated_gradients", None, n_steps=64)
    with torch.no_grad():
        gap = mlp(torch.tensor(x)[None]) - mlp(torch.tensor(baseline)[None])
    assert abs(phi.sum() - gap.item()) < 1e-3


def test_integrated_gradients_closed_form_on_a_quadratic() -> None:
    a = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)
    w = torch.tensor([0.2, 1.0, -1.0, 0.0], dtype=torch.float64)

    class Quadratic(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones(1, dtype=torch.float64))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.scale * ((a * x ** 2).sum(1) + x @ w)

    x = np.array([1.0, 2.0, -1.0, 0.5])
    b = np.array([0.5, -1.0, 0.0, 0.5])
    phi = captum_attributions(Quadratic(), x, b, "integrated_gradients", None, n_steps=16)
    expected = a.numpy() * (x ** 2 - b ** 2) + w.numpy() * (x - b)
    np.testing.assert_allclose(phi, expected, atol=1e-9)
