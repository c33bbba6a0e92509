"""``attribution.shapley`` and ``attribution.kernel_shap``: Shapley values through the game evaluator.

Shapley values are exact (over all 2^n coalitions) when 2^n fits the budget and estimated by
shapiq's KernelSHAP otherwise; ``attribution.kernel_shap`` always uses KernelSHAP at the
budget, as a reference point for the sampled regime.
"""

from __future__ import annotations

import numpy as np

from modelsci.analyses.attribution.report import ATTRIBUTION_KINDS, ExampleAttribution, add_attribution_findings
from modelsci.analyses.base import AnalysisPlugin, RunContext
from modelsci.analyses.games.indices import _approximator, shapley_interactions
from modelsci.analyses.games.inputs import EXPLAINABLE_TASKS, ExplainParams, games_for
from modelsci.schemas.entities import Pillar

__all__ = ["KernelShap", "ShapleyValues"]


class ShapleyValues(AnalysisPlugin):
    name = "attribution.shapley"
    version = "1"
    family = "attribution"
    pillar = Pillar.explore
    description = ("Shapley values of each input feature (tabular columns, tokens, image patches) for "
                   "the explained output; exact when 2^players fits the budget, else KernelSHAP.")
    Params = ExplainParams
    tasks = EXPLAINABLE_TASKS
    sampled = False
    seed_use = ("KernelSHAP's coalitions when 2^players exceeds the budget, the marginal baseline's background "
                "rows, the r2 coalitions and the bootstrap; exact values with another baseline do not change")
    kinds = ATTRIBUTION_KINDS

    def run(self, ctx: RunContext) -> None:
        params: ExplainParams = ctx.params  # type: ignore[assignment]
        results, games = [], {}
        rng = ctx.rng
        for done, (example, game) in enumerate(games_for(ctx.model, ctx.dataset, params, rng)):
            n = game.n_players
            if self.sampled:
                budget = min(params.budget, 2 ** n)
                values = _approximator("SV", n, 1, ctx.seed).approximate(budget=budget, game=game)
                interactions = {tuple(sorted(k)): float(v) for k, v in values.dict_values.items()}
                exact = False
            else:
                iv = shapley_interactions(game, n, "SV", 1, params.budget, ctx.seed)
                interactions, budget, exact = iv.values, iv.budget, iv.exact
            phi = np.array([interactions.get((i,), 0.0) for i in range(n)])
            results.append(ExampleAttribution.of(example, game, phi, rng, budget=budget, exact=exact))
            games[example] = game
            ctx.progress(done + 1, params.examples)
        add_attribution_findings(ctx, "KernelSHAP" if self.sampled else "Shapley values", results, games)


class KernelShap(ShapleyValues):
    name = "attribution.kernel_shap"
    description = "KernelSHAP estimates of Shapley values at the budget (shapiq), through the game evaluator."
    sampled = True
    seed_use = "KernelSHAP's coalitions, the marginal baseline's background rows, the r2 coalitions and the bootstrap"
