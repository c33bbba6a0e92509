"""``hallucination.quench``: sample again with an LID-gated Tweedie correction, and the rate before and after.

The correction (Intrinsic Quenching) is built by :func:`quench_correction`, so that
``hallucination.comparison`` applies the very same steps when it sets the quench against its baselines.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from pydantic import Field

from modelsci.analyses.base import AnalysisPlugin, FindingKind, RunContext
from modelsci.analyses.hallucination.diffusion import DiffusionModel, diffusion_model, sample
from modelsci.analyses.hallucination.filters import FRAMEWORKS, GENERATIVE, draw_samples, ground_truth_of
from modelsci.analyses.hallucination.lid import LidParams, lid_dsm
from modelsci.analyses.hallucination.trajectory_variance import TrajectoryParams
from modelsci.schemas.entities import Pillar

__all__ = ["Correction", "Quench", "QuenchParams", "dsm_reference", "quench_correction"]

Correction = Callable[[torch.Tensor, int, "np.ndarray | None"], torch.Tensor]


class QuenchParams(LidParams, TrajectoryParams):
    window: tuple[float, float] = Field(default=(0.0, 0.001), description="Fraction of the reverse process (0 = its end) in which to correct.")
    gate_quantile: float = Field(default=0.95, gt=0, lt=1, description="Correct samples whose LID exceeds this quantile of reference LIDs.")
    iterations: int = Field(default=10, ge=1, description="Corrections per step in the window (LID is re-estimated before each).")


def dsm_reference(model: DiffusionModel, samples: np.ndarray, params: LidParams, seed: int,
                  rows: np.ndarray | None = None) -> np.ndarray:
    """DSM LID of reference samples, whose ``gate_quantile`` is the quench's gate (DSM only: FLIPD is not read)."""
    generator = torch.Generator().manual_seed(seed + 1)
    rows = np.arange(len(samples)) if rows is None else np.asarray(rows)
    x = torch.as_tensor(samples, dtype=torch.float64)
    return np.concatenate([lid_dsm(model, x[s:s + params.batch_size], params.t_star, params.draws, generator,
                                   rows=rows[s:s + params.batch_size])
                           for s in range(0, len(x), params.batch_size)])


def _window(model: DiffusionModel, window: tuple[float, float]) -> tuple[int, int]:
    """The timesteps [low, high) corrected; the sampler's last timestep is always inside, so a window at the end of
    a strided schedule (DDIM's last step may be t = 1 or later) still corrects."""
    T = model.schedule.timesteps
    timesteps = getattr(model, "timesteps", None)  # the sampler's own timesteps, where the model says them
    last = int(np.min(timesteps)) if timesteps is not None and len(timesteps) else 0
    return int(window[0] * T), max(int(window[1] * T), last + 1)


def quench_correction(model: DiffusionModel, params: QuenchParams, gate: float,
                      generator: torch.Generator) -> Correction:
    """The correction ``(x_t, t, rows) -> x_t``: inside the window, samples whose DSM LID exceeds ``gate`` take
    Tweedie steps towards the data manifold, re-gated before each of ``iterations``."""
    low, high = _window(model, params.window)
    abar = float(model.schedule.alphas_cumprod[params.t_star])
    alpha, sigma = float(np.sqrt(abar)), float(np.sqrt(1 - abar))

    def correction(x: torch.Tensor, t: int, rows: np.ndarray | None = None) -> torch.Tensor:
        if not low <= t < high:
            return x
        for _ in range(params.iterations):
            lid = torch.as_tensor(lid_dsm(model, x.cpu(), params.t_star, params.draws, generator, rows=rows),
                                  device=x.device)
            gated = (lid > gate).reshape(-1, *[1] * (x.dim() - 1))
            if not gated.any():
                break
            # Tweedie's step to E[x0 | x_t* = x]: towards the data's manifold, where LID is low.
            denoised = (x - sigma * model.eps(x, params.t_star, rows=rows)) / alpha
            x = torch.where(gated, denoised, x)
        return x

    return correction


def quenched_samples(ctx: RunContext, model: DiffusionModel, params: QuenchParams,
                     gate: float) -> np.ndarray:
    """The run's samples drawn again from the same noise, with the quench's correction."""
    correction = quench_correction(model, params, gate, torch.Generator().manual_seed(ctx.seed + 2))
    after, _ = sample(model, params.n_samples, torch.Generator().manual_seed(ctx.seed), keep_last=1,
                      batch_size=params.batch_size, correction=correction, progress=ctx.progress,
                      rows=np.arange(params.n_samples))
    return after


class Quench(AnalysisPlugin):
    name = "hallucination.quench"
    version = "2"  # 2: conditional pipelines and strided schedulers; the gate's reference is DSM alone
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
                 "LIDs that is the gate", "iterations": "corrections per step", "measured_by": "which rate",
                 "sampler": "the sampler that drew the samples: pipeline, scheduler, prediction type, steps, "
                            "guidance scale"}),)

    def run(self, ctx: RunContext) -> None:
        params: QuenchParams = ctx.params  # type: ignore[assignment]
        model = diffusion_model(ctx.model, params, ctx.dataset)
        rows = np.arange(params.n_samples)
        before, _ = draw_samples(ctx, model, params, params.last_steps)
        reference = dsm_reference(model, before, params, ctx.seed, rows)
        gate = float(np.quantile(reference, params.gate_quantile))
        after = quenched_samples(ctx, model, params, gate)
        rate = {}
        truth = {}
        for label, samples in (("before", before), ("after", after)):
            truth[label] = ground_truth_of(model, model.decode(samples), rows)
            if truth[label] is not None:
                rate[label] = float(truth[label][1].mean())
            else:
                lids = reference if label == "before" else dsm_reference(model, samples, params, ctx.seed, rows)
                rate[label] = float((lids > gate).mean())
        how = "true hallucination rate" if truth["before"] is not None else f"share with LID above {gate:.4g}"
        ctx.add_finding(
            kind="hallucination_rate_change", value=rate["after"] - rate["before"], n=params.n_samples,
            unit="fraction",
            statement=f"quench (LID-gated Tweedie correction at the end of sampling) changes the {how} "
                      f"from {rate['before']:.2%} to {rate['after']:.2%}",
            metrics={"before": rate["before"], "after": rate["after"], "gate": gate, "window": list(params.window),
                     "gate_quantile": params.gate_quantile, "iterations": params.iterations, "measured_by": how,
                     "sampler": model.record},
        )
