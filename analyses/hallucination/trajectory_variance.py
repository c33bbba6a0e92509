"""``hallucination.trajectory_variance``: the variance of x̂₀ over a sample's last reverse steps."""

from __future__ import annotations

from pydantic import Field

from modelsci.analyses.base import AnalysisPlugin, RunContext
from modelsci.analyses.hallucination.diffusion import diffusion_model
from modelsci.analyses.hallucination.filters import FRAMEWORKS, GENERATIVE, FilterParams, draw_samples, report_scores
from modelsci.schemas.entities import Pillar

__all__ = ["TrajectoryParams", "TrajectoryVariance"]


class TrajectoryParams(FilterParams):
    last_steps: int = Field(default=10, ge=2, description="K: reverse steps whose x̂₀ variance is the score.")


class TrajectoryVariance(AnalysisPlugin):
    name = "hallucination.trajectory_variance"
    version = "1"
    family = "hallucination"
    pillar = Pillar.verify
    description = ("Scores each generated sample by the variance of its predicted clean sample x̂₀ over the "
                   "last K reverse steps of its own trajectory, averaged over dimensions; high variance flags "
                   "samples between the modes of the data (structural hallucinations).")
    Params = TrajectoryParams
    tasks = GENERATIVE
    frameworks = FRAMEWORKS
    needs_dataset = False

    def run(self, ctx: RunContext) -> None:
        params: TrajectoryParams = ctx.params  # type: ignore[assignment]
        model = diffusion_model(ctx.model)
        samples, history = draw_samples(ctx, model, params, params.last_steps)
        scores = history.reshape(len(history), params.last_steps, -1).var(axis=1).mean(axis=1)
        report_scores(ctx, "trajectory_variance", scores, samples, model, params, {"last_steps": params.last_steps})
