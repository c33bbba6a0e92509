"""``interactions.shapley``: Shapley interaction indices (k-SII, STII, FSII, SII, FBII) up to order 3.

Exact through shapiq's ExactComputer when 2^players fits the budget, else shapiq's
approximator for the index; every coalition goes through the game evaluator.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from modelsci.analyses.base import AnalysisPlugin, RunContext
from modelsci.analyses.games.indices import shapley_interactions
from modelsci.analyses.games.inputs import EXPLAINABLE_TASKS, ExplainParams, games_for
from modelsci.analyses.interactions.report import INTERACTION_KINDS, add_interaction_findings, example_interactions
from modelsci.schemas.entities import Pillar

__all__ = ["ShapleyInteractions"]


class InteractionParams(ExplainParams):
    index: Literal["k-SII", "STII", "FSII", "SII", "FBII"] = Field(default="k-SII", description="Interaction index.")
    order: int = Field(default=2, ge=1, le=3, description="Highest interaction order.")


class ShapleyInteractions(AnalysisPlugin):
    name = "interactions.shapley"
    version = "1"
    family = "interactions"
    pillar = Pillar.explore
    description = ("Shapley interactions between input features (k-SII, STII, FSII, SII or FBII, order "
                   "up to 3), exact when 2^players fits the budget, else shapiq's approximators.")
    Params = InteractionParams
    tasks = EXPLAINABLE_TASKS
    seed_use = ("shapiq's approximator when 2^players exceeds the budget, the marginal baseline's background rows and the "
                "r2 coalitions; exact values with another baseline do not change")
    kinds = INTERACTION_KINDS

    def run(self, ctx: RunContext) -> None:
        params: InteractionParams = ctx.params  # type: ignore[assignment]
        rng = ctx.rng
        results = []
        for done, (example, game) in enumerate(games_for(ctx.model, ctx.dataset, params, rng)):
            iv = shapley_interactions(game, game.n_players, params.index, params.order, params.budget, ctx.seed)
            results.append(example_interactions(example, game, iv, rng))
            ctx.progress(done + 1, params.examples)
        add_interaction_findings(ctx, f"{params.index} (order {params.order})", results)
