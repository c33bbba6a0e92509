"""``hallucination.quench``: sample again with an LID-gated Tweedie correction, and the rate before and after."""

from __future__ import annotations

import numpy as np
import torch
from pydantic import Field

from modelsci.analyses.base import AnalysisPlugin, FindingKind, RunContext
from modelsci.analyses.hallucination.diffusion import diffusion_model
from modelsci.analyses.hallucination.filters import FRAMEWORKS, GENERATIVE, draw_samples, ground_truth_of
from modelsci.analyses.hallucination.lid import LidParams, lid_dsm, lid_scores
from modelsci.analyses.hallucination.trajectory_variance import TrajectoryParams
from modelsci.schemas.entities import Pillar

__all__ = ["Quench", "QuenchParams"]


class QuenchParams(LidParams, TrajectoryParams):
    window: tuple[float, float] = Field(default=(0.0, 0.001), description="Fraction of the reverse process (0 = its end) in which to correct.")
    gate_quantile: float = Field(default=0.95, gt=0, lt=1, description="Correct samples whose LID exceeds this quantile of reference LIDs.")
    iterations: int = Field(default=10, ge=1, description="Corrections per step in the window (LID is re-estimated before each).")


class Quench(AnalysisPlugin):
    name = "hallucination.quench"
    version = "1"
    family = "hallucination"
    pillar = Pillar.steer
    description = ("Samples again with an LID-lowering correction applied inside a window at the end of the "
                   "reverse process: samples whose DSM LID exceeds a quantile of reference LIDs take Tweedie "
                   "steps towards the data manifold (x <- (x - σ ε̂(x, t*)) / α), re-gated each time; reports "
                   "the hallucination rate before and after.")
    Params = QuenchParams
    tasks = GENERATIVE
    frameworks = FRAMEWORKS
    needs_dataset = False
    seed_use = "the sampler's noise (the same for the runs before and after the correction) and the DSM draws"
    kinds = (FindingKind(
        "hallucination_rate_change", "rate after the correction - rate before, over two sample runs from the same "
        "noise; the rate is the true hallucination rate where the model's config gives the ground truth, else the "
        "share of samples whose DSM LID exceeds the gate (metrics.measured_by says which)", "fraction",
        metrics={"before": "rate without the correction", "after": "rate with it", "gate": "the LID gate",
                 "window": "fraction of the reverse process corrected", "gate_quantile": "quantile of reference "
                 "LIDs that is the gate", "iterations": "corrections per step", "measured_by": "which rate"}),)

    def run(self, ctx: RunContext) -> None:
        params: QuenchParams = ctx.params  # type: ignore[assignment]
        model = diffusion_model(ctx.model)
        before, history = draw_samples(ctx, model, params, params.last_steps)
        reference_lid = lid_scores(model, before, params, ctx.seed)["dsm"]
        gate = float(np.quantile(reference_lid, params.gate_quantile))
        T = model.schedule.timesteps
        low, high = int(params.window[0] * T), max(int(params.window[1] * T), 1)
        generator = torch.Generator().manual_seed(ctx.seed + 2)

        alpha, sigma = (float(np.sqrt(v)) for v in (model.schedule.alphas_cumprod[params.t_star],
                                                     1 - model.schedule.alphas_cumprod[params.t_star]))

        def correction(x: torch.Tensor, t: int) -> torch.Tensor:
            if not low <= t < high:
                return x
            for _ in range(params.iterations):
                lid = torch.as_tensor(lid_dsm(model, x.cpu(), params.t_star, params.draws, generator), device=x.device)
                gated = (lid > gate).reshape(-1, *[1] * (x.dim() - 1))
                if not gated.any():
                    break
                # Tweedie's step to E[x0 | x_t* = x]: towards the data's manifold, where LID is low.
                denoised = (x - sigma * model.eps(x, params.t_star)) / alpha
                x = torch.where(gated, denoised, x)
            return x

        after, _ = draw_samples(ctx, model, params, 1, correction)
        rate = {}
        for label, samples in (("before", before), ("after", after)):
            truth = ground_truth_of(model, samples)
            if truth is not None:
                rate[label] = float(truth[1].mean())
            else:
                lids = lid_scores(model, samples, params, ctx.seed)["dsm"]
                rate[label] = float((lids > gate).mean())
        how = "true hallucination rate" if ground_truth_of(model, before) is not None else f"share with LID above {gate:.4g}"
        ctx.add_finding(
            kind="hallucination_rate_change", value=rate["after"] - rate["before"], n=params.n_samples,
            unit="fraction",
            statement=f"quench (LID-gated Tweedie correction at the end of sampling) changes the {how} "
                      f"from {rate['before']:.2%} to {rate['after']:.2%}",
            metrics={"before": rate["before"], "after": rate["after"], "gate": gate, "window": list(params.window),
                     "gate_quantile": params.gate_quantile, "iterations": params.iterations, "measured_by": how},
        )
