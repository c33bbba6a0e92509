"""``hallucination.lid``: the local intrinsic dimension at each sample, by DSM and by FLIPD."""

from __future__ import annotations

from modelsci.analyses.base import AnalysisPlugin, RunContext
from modelsci.analyses.hallucination.diffusion import diffusion_model
from modelsci.analyses.hallucination.filters import (
    FILTER_KINDS,
    FRAMEWORKS,
    GENERATIVE,
    draw_samples,
    report_scores,
    report_truth,
)
from modelsci.analyses.hallucination.lid import LidParams, lid_scores
from modelsci.schemas.entities import Pillar

__all__ = ["LocalIntrinsicDimension"]


class LocalIntrinsicDimension(AnalysisPlugin):
    name = "hallucination.lid"
    version = "3"  # 3: the scheduler's clip_sample and spacing honoured; 2: the true rate
    family = "hallucination"
    pillar = Pillar.verify
    description = ("Estimates the local intrinsic dimension of the model-induced manifold at each sample, by "
                   "denoising score matching (mean ||ε - ε̂||² over noise draws at a small t*) and by FLIPD "
                   "(D - σ tr ∂ε̂/∂x + ||ε̂||², Hutchinson trace); high values flag instability.")
    Params = LidParams
    tasks = GENERATIVE
    frameworks = FRAMEWORKS
    needs_dataset = False
    seed_use = "the sampler's noise, the DSM noise draws and the Hutchinson probes"
    kinds = FILTER_KINDS

    def run(self, ctx: RunContext) -> None:
        params: LidParams = ctx.params  # type: ignore[assignment]
        model = diffusion_model(ctx.model, params, ctx.dataset)
        samples, _ = draw_samples(ctx, model, params, 1)
        scores = lid_scores(model, samples, params, ctx.seed)
        images = model.decode(samples)
        truth = report_truth(ctx, images, model)
        for estimator, values in scores.items():
            report_scores(ctx, f"lid_{estimator}", values, images, truth, params,
                          {"t_star": params.t_star, "estimator": estimator, "mean_lid": float(values.mean())}, model)
