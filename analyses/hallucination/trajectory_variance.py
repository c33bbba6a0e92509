"""``hallucination.trajectory_variance``: the variance of x̂₀ over a sample's last reverse steps."""

from __future__ import annotations

import numpy as np
from pydantic import Field

from modelsci.analyses.base import AnalysisPlugin, RunContext
from modelsci.analyses.hallucination.diffusion import diffusion_model
from modelsci.analyses.hallucination.filters import (
    FILTER_KINDS,
    FRAMEWORKS,
    GENERATIVE,
    FilterParams,
    draw_samples,
    report_scores,
    report_truth,
)
from modelsci.schemas.entities import Pillar

__all__ = ["TrajectoryParams", "TrajectoryVariance", "trajectory_scores"]


class TrajectoryParams(FilterParams):
    last_steps: int = Field(default=10, ge=2, description="K: reverse steps whose x̂₀ variance is the score.")


class TrajectoryVariance(AnalysisPlugin):
    name = "hallucination.trajectory_variance"
    version = "3"  # 3: the scheduler's clip_sample and spacing honoured; 2: the true rate
    family = "hallucination"
    pillar = Pillar.verify
    description = ("Scores each generated sample by the variance of its predicted clean sample x̂₀ over the "
                   "last K reverse steps of its own trajectory, averaged over dimensions; high variance flags "
                   "samples between the modes of the data (structural hallucinations).")
    Params = TrajectoryParams
    tasks = GENERATIVE
    frameworks = FRAMEWORKS
    needs_dataset = False
    seed_use = "the sampler's noise"
    kinds = FILTER_KINDS

    def run(self, ctx: RunContext) -> None:
        params: TrajectoryParams = ctx.params  # type: ignore[assignment]
        model = diffusion_model(ctx.model, params, ctx.dataset)
        samples, history = draw_samples(ctx, model, params, params.last_steps)
        scores = trajectory_scores(history)
        images = model.decode(samples)
        truth = report_truth(ctx, images, model)
        report_scores(ctx, "trajectory_variance", scores, images, truth, params, {"last_steps": params.last_steps},
                      model)


def trajectory_scores(history: np.ndarray) -> np.ndarray:
    """Per sample: the variance of x̂₀ over its last K steps (history (n, K, ...)), averaged over dimensions."""
    return history.reshape(len(history), history.shape[1], -1).var(axis=1).mean(axis=1)
