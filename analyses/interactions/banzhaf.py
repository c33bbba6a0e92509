"""``interactions.weighted_banzhaf``: faithful weighted Banzhaf interactions of order 2, weight p.

The weighted least-squares fit (kernel p^|S| (1-p)^(n-|S|)) of the game by an order-2 additive
model, exact over all coalitions when they fit the budget, else on coalitions drawn from the
kernel. For a sentence pair, coalitions are drawn as a product of the two sides' coalitions,
so k x k coalitions cost 2k forward passes.
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import Field

from modelsci.analyses.base import AnalysisPlugin, RunContext
from modelsci.analyses.games.cross_modal import CrossModalMasker, cross_modal_sampler
from modelsci.analyses.games.indices import weighted_banzhaf
from modelsci.analyses.games.inputs import EXPLAINABLE_TASKS, ExplainParams, games_for
from modelsci.analyses.games.maskers import PairEncoderMasker
from modelsci.analyses.interactions.report import INTERACTION_KINDS, add_interaction_findings, example_interactions
from modelsci.schemas.entities import Pillar

__all__ = ["WeightedBanzhaf", "product_sampler"]


class BanzhafParams(ExplainParams):
    p: float = Field(default=0.5, gt=0, lt=1, description="Weight: each player is present with probability p.")


def product_sampler(n_a: int, n_b: int, p: float):  # noqa: ANN201 - a sampler closure
    """Draw m coalitions as (part of) the product of ceil(sqrt(m)) coalitions of each side."""
    def sample(rng: np.random.Generator, m: int) -> np.ndarray:
        k = math.ceil(math.sqrt(m))
        a = rng.random((k, n_a)) < p
        b = rng.random((k, n_b)) < p
        pairs = np.concatenate([np.repeat(a, k, axis=0), np.tile(b, (k, 1))], axis=1)
        return pairs[rng.permutation(len(pairs))[:m]]
    return sample


class WeightedBanzhaf(AnalysisPlugin):
    name = "interactions.weighted_banzhaf"
    version = "1"
    family = "interactions"
    pillar = Pillar.explore
    description = ("Faithful weighted Banzhaf interactions of order 2 with weight p in (0, 1), by weighted "
                   "least squares; product sampling for sentence pairs.")
    Params = BanzhafParams
    tasks = EXPLAINABLE_TASKS
    seed_use = ("the coalitions drawn from the kernel when 2^players exceeds the budget, the marginal baseline's background rows and the "
                "r2 coalitions; exact values with another baseline do not change")
    kinds = INTERACTION_KINDS

    def run(self, ctx: RunContext) -> None:
        params: BanzhafParams = ctx.params  # type: ignore[assignment]
        rng = ctx.rng
        results = []
        for done, (example, game) in enumerate(games_for(ctx.model, ctx.dataset, params, rng)):
            masker = game.masker
            sample = (product_sampler(masker.n_a, masker.n_players - masker.n_a, params.p)
                      if isinstance(masker, PairEncoderMasker) else None)
            if isinstance(masker, CrossModalMasker):  # sides drawn and encoded once, all their pairs used
                sample = cross_modal_sampler(masker, params.p, params.budget)
            iv = weighted_banzhaf(game, game.n_players, params.p, params.budget, ctx.seed, sample=sample)
            results.append(example_interactions(example, game, iv, rng))
            ctx.progress(done + 1, params.examples)
        add_interaction_findings(ctx, f"weighted Banzhaf (p={params.p})", results)
