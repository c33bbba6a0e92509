"""``hallucination.trajectory_variance``, ``hallucination.lid`` and ``hallucination.quench``.

Each filter samples the model (DDPM, float64 schedule) and scores every sample; a finding
reports the estimated hallucination rate (share of samples above the threshold), the
scores' distribution (artifact ``scores``) and the threshold. Where the model's config names
the modes of its training data (modelsci's toy denoisers), the ground truth is known: the
threshold keeps 95% of in-support samples, and AUROC and the share of hallucinations removed
are reported. Otherwise the threshold is median + k x MAD of the scores (k = ``mad_k``).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pyarrow as pa
import torch
from pydantic import BaseModel, ConfigDict, Field
from sklearn.metrics import roc_auc_score

from analyses.base import AnalysisPlugin, RunContext
from analyses.hallucination.diffusion import DiffusionModel, diffusion_model, sample
from analyses.hallucination.lid import lid_dsm, lid_flipd
from analyses.hallucination.shapes import shapes_truth
from analyses.hallucination.toy import ground_truth
from analyses.stats import bootstrap_ci
from schemas.entities import Pillar

__all__ = ["LocalIntrinsicDimension", "Quench", "TrajectoryVariance"]

GENERATIVE = frozenset({"unconditional-image-generation"})
FRAMEWORKS = frozenset({"torch", "diffusers"})


class FilterParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n_samples: int = Field(default=2000, ge=2, description="Samples drawn and scored.")
    batch_size: int = Field(default=4096, ge=1, description="Samples per reverse-diffusion batch.")
    retention: float = Field(default=0.95, gt=0, lt=1, description="With ground truth: share of in-support samples the threshold keeps.")
    mad_k: float = Field(default=5.0, gt=0, description="Without ground truth: threshold = median + k x MAD.")


class TrajectoryParams(FilterParams):
    last_steps: int = Field(default=10, ge=2, description="K: reverse steps whose x̂₀ variance is the score.")


class LidParams(FilterParams):
    t_star: int = Field(default=2, ge=0, description="Small timestep at which the estimators look.")
    draws: int = Field(default=8, ge=1, description="DSM: noise draws per sample.")
    probes: int = Field(default=8, ge=1, description="FLIPD: Hutchinson probes per sample.")
    estimator: Literal["dsm", "flipd"] = Field(default="dsm", description="Which estimator's score is filtered (both are reported).")


class QuenchParams(LidParams, TrajectoryParams):
    window: tuple[float, float] = Field(default=(0.0, 0.001), description="Fraction of the reverse process (0 = its end) in which to correct.")
    gate_quantile: float = Field(default=0.95, gt=0, lt=1, description="Correct samples whose LID exceeds this quantile of reference LIDs.")
    iterations: int = Field(default=10, ge=1, description="Corrections per step in the window (LID is re-estimated before each).")


def _threshold(scores: np.ndarray, truth: tuple[np.ndarray, np.ndarray] | None, params: FilterParams) -> tuple[float, str]:
    if truth is not None and truth[0].any():
        return float(np.quantile(scores[truth[0]], params.retention)), f"keeps {params.retention:.0%} of in-support samples"
    median = float(np.median(scores))
    mad = float(np.median(np.abs(scores - median))) or float(np.std(scores)) or 1e-12
    return median + params.mad_k * mad, f"median + {params.mad_k} x MAD"


def _truth(model: DiffusionModel, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    if model.data.get("kind") == "shapes":
        return shapes_truth(samples)
    if not model.data.get("modes"):
        return None
    return ground_truth(samples, np.asarray(model.data["modes"]), float(model.data["std"]))


def _report(ctx: RunContext, name: str, scores: np.ndarray, samples: np.ndarray, model: DiffusionModel,
            params: FilterParams, extra: dict | None = None) -> dict:
    """Findings of one filter's scores; returns the figures for callers that compare."""
    truth = _truth(model, samples)
    threshold, rule = _threshold(scores, truth, params)
    flagged = scores > threshold
    rng = ctx.rng
    ci = bootstrap_ci(lambda i: float(flagged[i].mean()), len(scores), rng, 500)
    figures: dict = {"threshold": threshold, "rule": rule, "flagged_rate": float(flagged.mean()), **(extra or {})}
    columns = {"sample": np.arange(len(scores)), "score": scores, "flagged": flagged}
    flat = samples.reshape(len(samples), -1)
    for d in range(min(flat.shape[1], 2)):
        columns[f"x{d}"] = flat[:, d]
    if truth is not None:
        in_support, hallucinated = truth
        columns["in_support"], columns["hallucinated"] = in_support, hallucinated
        judged = in_support | hallucinated
        figures["true_rate"] = float(hallucinated.mean())
        if hallucinated.any() and in_support.any():
            figures["auroc"] = float(roc_auc_score(hallucinated[judged], scores[judged]))
            figures["removed_at_retention"] = float(flagged[hallucinated].mean())
    statement = (f"{name}: {flagged.mean():.2%} of {len(scores)} samples score above the threshold "
                 f"{threshold:.4g} ({rule})")
    if "auroc" in figures:
        statement += (f"; true hallucination rate {figures['true_rate']:.2%}, AUROC {figures['auroc']:.3f}, "
                      f"{figures['removed_at_retention']:.0%} of hallucinations removed")
    ctx.add_finding(kind="hallucination_rate", subject=name, value=float(flagged.mean()), ci=ci, n=len(scores),
                    unit="fraction", statement=statement, metrics=figures,
                    artifacts={"scores": pa.table(columns)})
    if "auroc" in figures:
        ctx.add_finding(kind="filter_auroc", subject=name, value=figures["auroc"], n=int((truth[0] | truth[1]).sum()),
                        unit="AUROC", statement=f"{name} separates hallucinated from in-support samples with "
                                                f"AUROC {figures['auroc']:.3f}", metrics=figures)
    return figures


def _samples(ctx: RunContext, model: DiffusionModel, params: FilterParams, keep_last: int,
             correction=None) -> tuple[np.ndarray, np.ndarray]:  # noqa: ANN001
    generator = torch.Generator().manual_seed(ctx.seed)
    return sample(model, params.n_samples, generator, keep_last=keep_last, batch_size=params.batch_size,
                  correction=correction, progress=ctx.progress)


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
        samples, history = _samples(ctx, model, params, params.last_steps)
        scores = history.reshape(len(history), params.last_steps, -1).var(axis=1).mean(axis=1)
        _report(ctx, "trajectory_variance", scores, samples, model, params, {"last_steps": params.last_steps})


def lid_scores(model: DiffusionModel, samples: np.ndarray, params: LidParams, seed: int) -> dict[str, np.ndarray]:
    generator = torch.Generator().manual_seed(seed + 1)
    x = torch.as_tensor(samples, dtype=torch.float64)
    out = {"dsm": [], "flipd": []}
    for start in range(0, len(x), params.batch_size):
        batch = x[start:start + params.batch_size]
        out["dsm"].append(lid_dsm(model, batch, params.t_star, params.draws, generator))
        out["flipd"].append(lid_flipd(model, batch, params.t_star, params.probes, generator))
    return {k: np.concatenate(v) for k, v in out.items()}


class LocalIntrinsicDimension(AnalysisPlugin):
    name = "hallucination.lid"
    version = "1"
    family = "hallucination"
    pillar = Pillar.verify
    description = ("Estimates the local intrinsic dimension of the model-induced manifold at each sample, by "
                   "denoising score matching (mean ||ε - ε̂||² over noise draws at a small t*) and by FLIPD "
                   "(D - σ tr ∂ε̂/∂x + ||ε̂||², Hutchinson trace); high values flag instability.")
    Params = LidParams
    tasks = GENERATIVE
    frameworks = FRAMEWORKS
    needs_dataset = False

    def run(self, ctx: RunContext) -> None:
        params: LidParams = ctx.params  # type: ignore[assignment]
        model = diffusion_model(ctx.model)
        samples, _ = _samples(ctx, model, params, 1)
        scores = lid_scores(model, samples, params, ctx.seed)
        for estimator, values in scores.items():
            _report(ctx, f"lid_{estimator}", values, samples, model, params,
                    {"t_star": params.t_star, "estimator": estimator, "mean_lid": float(values.mean())})


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

    def run(self, ctx: RunContext) -> None:
        params: QuenchParams = ctx.params  # type: ignore[assignment]
        model = diffusion_model(ctx.model)
        before, history = _samples(ctx, model, params, params.last_steps)
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

        after, _ = _samples(ctx, model, params, 1, correction)
        rate = {}
        for label, samples in (("before", before), ("after", after)):
            truth = _truth(model, samples)
            if truth is not None:
                rate[label] = float(truth[1].mean())
            else:
                lids = lid_scores(model, samples, params, ctx.seed)["dsm"]
                rate[label] = float((lids > gate).mean())
        how = "true hallucination rate" if _truth(model, before) is not None else f"share with LID above {gate:.4g}"
        ctx.add_finding(
            kind="hallucination_rate_change", value=rate["after"] - rate["before"], n=params.n_samples,
            unit="fraction",
            statement=f"quench (LID-gated Tweedie correction at the end of sampling) changes the {how} "
                      f"from {rate['before']:.2%} to {rate['after']:.2%}",
            metrics={"before": rate["before"], "after": rate["after"], "gate": gate, "window": list(params.window),
                     "gate_quantile": params.gate_quantile, "iterations": params.iterations, "measured_by": how},
        )
