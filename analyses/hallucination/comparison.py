"""``hallucination.comparison``: the filters and the quench set against each other on one set of samples.

One seeded draw of samples is judged by the ground truth and scored by all three filters
(trajectory variance, LID by DSM and by FLIPD). Each filter's ``filter_auroc`` is the one the
filter analyses write; ``auroc_difference`` answers whether a manifold filter matches or exceeds
the temporal one, with a paired bootstrap (the same resamples for both AUROCs, which are also
the resamples behind each ``filter_auroc`` interval).

The quench is then set against two baselines at the same sampling compute, counted in rows
that went through the denoiser (``DiffusionModel.forwards``; classifier-free guidance counts
two per sample and step):

- ``none``: the draw itself (its forwards: sampling alone);
- ``quench``: the draw (whose DSM LIDs set the gate), the DSM reference, and the same noise
  sampled again with the correction;
- ``reject_resample``: the draw, then the samples trajectory variance flags drawn again with
  fresh noise (their own conditions), those still flagged again, until the quench's forwards are
  spent (never beyond: a round draws only as many samples as the budget left pays for). Its
  threshold is the ``gate_quantile`` of the draw's scores, set without the ground truth as the
  quench's gate is;
- ``lower_guidance`` (conditional pipelines): the draw's noise sampled at a lower guidance scale,
  whose compute is its own sampling (cheaper at scale 1: one branch per step).

For conditional pipelines, ``rate_by_guidance`` samples the same noise at each guidance scale.
Scales at or below 1 all sample the conditional branch alone, so they count as 1.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

import numpy as np
import pyarrow as pa
import torch
from pydantic import Field
from sklearn.metrics import roc_auc_score

from modelsci.analyses.base import AnalysisPlugin, FindingKind, RunContext
from modelsci.analyses.hallucination.diffusion import DiffusionModel, diffusion_model, sample
from modelsci.analyses.hallucination.filters import (
    FILTER_KINDS,
    FRAMEWORKS,
    GENERATIVE,
    draw_samples,
    ground_truth_of,
    report_scores,
    report_truth,
)
from modelsci.analyses.hallucination.lid import lid_scores
from modelsci.analyses.hallucination.quench import QuenchParams, dsm_reference, quench_correction
from modelsci.analyses.hallucination.trajectory_variance import trajectory_scores
from modelsci.analyses.stats import auroc, bootstrap_ci, wilson_interval
from modelsci.schemas.entities import Pillar

__all__ = ["Comparison", "ComparisonParams", "Resampling", "reject_and_resample"]

MANIFOLD_FILTERS = ("lid_dsm", "lid_flipd")
TEMPORAL_FILTER = "trajectory_variance"
N_BOOTSTRAP = 500
_SAMPLER = "the sampler that drew the samples: pipeline, scheduler, prediction type, steps, guidance scale"
_WILSON = "Wilson score 95% interval of the proportion"


class ComparisonParams(QuenchParams):
    guidance_scales: list[Annotated[float, Field(ge=0)]] = Field(
        default=[1.0, 1.5, 2.0, 3.0, 5.0],
        description="Conditional pipelines: guidance scales at which the rate is measured on the same noise "
                    "(rate_by_guidance; the run's own guidance_scale is added); ignored for unconditional ones.")
    lower_guidance: float = Field(
        default=1.0, ge=0, description="Conditional pipelines: the lowered guidance scale of the baseline.")


@dataclass(frozen=True)
class Resampling:
    """What reject-and-resample spent and left."""

    forwards: int
    """Denoiser rows spent on redraws."""
    redrawn: int
    """Sample draws made (a sample drawn three times counts three)."""
    rounds: int
    still_flagged: int
    """Samples flagged when the budget ran out."""


def reject_and_resample(flagged: np.ndarray, budget: int, cost: int,
                        redraw: Callable[[np.ndarray], tuple[np.ndarray, int]]) -> Resampling:
    """Redraw the flagged samples, then those still flagged, while ``budget`` forwards pay for one more sample.

    ``cost`` is one sample's forwards; ``redraw(indices)`` draws those samples again and returns which of them
    are still flagged and the forwards it spent. A round draws only as many samples as the budget left pays for,
    so the forwards spent never exceed ``budget`` when ``cost`` is exact.
    """
    if cost <= 0:
        raise ValueError(f"one sample's cost in forwards must be positive, got {cost}")
    pending = np.flatnonzero(flagged)
    spent = redrawn = rounds = 0
    while pending.size and budget - spent >= cost:
        take = pending[:(budget - spent) // cost]
        still, used = redraw(take)
        spent, redrawn, rounds = spent + used, redrawn + take.size, rounds + 1
        pending = np.concatenate([pending[take.size:], take[np.asarray(still, dtype=bool)]])
    return Resampling(spent, redrawn, rounds, int(pending.size))


@dataclass
class _Draw:
    """One set of samples (latents), its judged truth and what it cost."""

    latents: np.ndarray
    truth: tuple[np.ndarray, np.ndarray]
    forwards: int

    @property
    def rate(self) -> float:
        return float(self.truth[1].mean())

    @property
    def hallucinated(self) -> int:
        return int(self.truth[1].sum())


class Comparison(AnalysisPlugin):
    name = "hallucination.comparison"
    version = "1"
    family = "hallucination"
    pillar = Pillar.verify
    description = ("Sets the hallucination filters and Intrinsic Quenching against each other on one seeded set of "
                   "samples: each filter's AUROC, whether a manifold filter (LID by DSM or FLIPD) matches or exceeds "
                   "the temporal one (trajectory variance) by a paired bootstrap of the AUROC difference, and the "
                   "hallucination rate after the quench against rejecting and re-sampling what trajectory variance "
                   "flags and (conditional pipelines) a lower guidance scale, at the same sampling compute counted "
                   "in denoiser forward rows; for conditional pipelines, the rate as a function of guidance scale.")
    Params = ComparisonParams
    tasks = GENERATIVE
    frameworks = FRAMEWORKS
    needs_dataset = False
    seed_use = ("the sampler's noise (one draw shared by every method, the quench and the lowered guidance "
                "re-using it), the redraws' fresh noise, the DSM draws, the Hutchinson probes and the bootstrap")
    kinds = (*FILTER_KINDS,
             FindingKind(
                 "auroc_difference", "AUROC of the manifold filter - AUROC of trajectory variance, both on the same "
                 "judged samples (hallucinated positive, in-support negative, neither left out)", "AUROC",
                 f"paired seeded percentile bootstrap over the judged samples, 95% ({N_BOOTSTRAP} resamples, each "
                 "scoring both filters on the same rows), widened where needed to hold the estimate itself",
                 subject="`lid_dsm - trajectory_variance` or `lid_flipd - trajectory_variance`",
                 metrics={"verdict": "`exceeds` (interval above 0), `falls_short` (below 0) or `matches` (the "
                                     "interval holds 0): how the manifold filter compares with the temporal one",
                          "manifold_auroc": "the manifold filter's AUROC", "temporal_auroc": "trajectory "
                          "variance's AUROC", "in_support": "in-support samples", "hallucinated": "hallucinated "
                          "samples", "n_bootstrap": "bootstrap resamples", "sampler": _SAMPLER,
                          "undefined": "why the value is null"},
                 null="when the ground truth holds no hallucinated or no in-support sample (metrics.undefined)"),
             FindingKind(
                 "mitigated_rate", "the true hallucination rate of the final samples of a method: `none` the draw "
                 "itself, `quench` the same noise sampled with Intrinsic Quenching, `reject_resample` the draw with "
                 "the samples trajectory variance flags drawn again with fresh noise until the quench's forwards are "
                 "spent, `lower_guidance` the draw's noise at the lowered guidance scale (conditional pipelines "
                 "only)", "fraction", _WILSON,
                 subject="the method: `none`, `quench`, `reject_resample` or `lower_guidance`",
                 metrics={"hallucinated": "hallucinated final samples", "forwards": "denoiser rows the method "
                          "spent, the shared draw included where it needs it (CFG counts two per sample and step)",
                          "forwards_vs_quench": "forwards / the quench's forwards",
                          "guidance_scale": "the guidance scale it sampled at",
                          "gate": "quench: the DSM LID gate", "gate_quantile": "quench: quantile of the draw's "
                          "LIDs that is the gate", "window": "quench: fraction of the reverse process corrected",
                          "iterations": "quench: corrections per step", "threshold": "reject_resample: trajectory "
                          "variance's threshold, the gate_quantile of the draw's scores (no ground truth used)", "flagged": "reject_resample: samples "
                          "flagged in the draw", "redrawn": "reject_resample: sample draws made",
                          "rounds": "reject_resample: rounds of redraws", "still_flagged": "reject_resample: "
                          "samples still flagged when the budget ran out", "budget": "reject_resample: forwards "
                          "it could spend on redraws", "sampler": _SAMPLER, "undefined": "why the value is null"},
                 null="when the model's config gives no ground truth (no rate is written), and for `lower_guidance` "
                      "when lower_guidance is not below the run's guidance scale (metrics.undefined)",
                 lower_is_better=True),
             FindingKind(
                 "rate_by_guidance", "the true hallucination rate at the run's own guidance_scale (the draw); the "
                 "series artifact holds the rate at every guidance scale, each sampled from the same noise",
                 "fraction", _WILSON,
                 metrics={"guidance_scale": "the run's guidance scale", "scales": "guidance scales in the series",
                          "sampler": _SAMPLER},
                 artifacts={"series": {"guidance_scale": "the guidance scale", "rate": "true hallucination rate",
                                       "ci_low": "Wilson 95% lower bound", "ci_high": "Wilson 95% upper bound",
                                       "n": "samples", "forwards": "denoiser rows spent sampling them"}},
                 lower_is_better=True))

    def run(self, ctx: RunContext) -> None:
        params: ComparisonParams = ctx.params  # type: ignore[assignment]
        model = diffusion_model(ctx.model, params, ctx.dataset)
        n, rows = params.n_samples, np.arange(params.n_samples)
        start = model.forwards
        latents, history = draw_samples(ctx, model, params, params.last_steps)
        base_forwards = model.forwards - start
        images = model.decode(latents)
        truth = report_truth(ctx, images, model)
        scores = {TEMPORAL_FILTER: trajectory_scores(history)}
        lids = lid_scores(model, latents, params, ctx.seed, rows)
        scores.update({f"lid_{k}": v for k, v in lids.items()})
        extra = {TEMPORAL_FILTER: {"last_steps": params.last_steps},
                 **{f"lid_{k}": {"t_star": params.t_star, "estimator": k, "mean_lid": float(v.mean())}
                    for k, v in lids.items()}}
        for name, values in scores.items():
            report_scores(ctx, name, values, images, truth, params, extra[name], model)
        record = model.record
        if truth is None:
            ctx.add_finding(kind="mitigated_rate", subject="none", value=None, n=n, unit="fraction",
                            statement="no ground truth is known for this model's samples, so no hallucination rates "
                                      "are compared (the filters' flagged rates are written)",
                            metrics={"undefined": "no ground truth for this model", "sampler": record})
            return
        self._differences(ctx, scores, truth, record)
        draw = _Draw(latents, truth, base_forwards)
        self._mitigations(ctx, model, params, draw, scores[TEMPORAL_FILTER])

    @staticmethod
    def _differences(ctx: RunContext, scores: dict[str, np.ndarray], truth: tuple[np.ndarray, np.ndarray],
                     record: dict) -> None:
        """``auroc_difference`` of each manifold filter over the temporal one, paired bootstrap."""
        in_support, hallucinated = truth
        judged = np.flatnonzero(in_support | hallucinated)
        positive = hallucinated[judged]
        counts = {"in_support": int(in_support.sum()), "hallucinated": int(hallucinated.sum())}
        for name in MANIFOLD_FILTERS:
            subject = f"{name} - {TEMPORAL_FILTER}"
            if not 0 < positive.sum() < len(positive):
                ctx.add_finding(kind="auroc_difference", subject=subject, value=None, n=len(judged), unit="AUROC",
                                statement=f"{subject}: no AUROC, the ground truth holds "
                                          f"{counts['hallucinated']} hallucinated and {counts['in_support']} "
                                          "in-support samples",
                                metrics={**counts, "undefined": "one class of the ground truth is empty",
                                         "sampler": record})
                continue
            manifold, temporal = scores[name][judged], scores[TEMPORAL_FILTER][judged]

            def difference(i: np.ndarray, manifold: np.ndarray = manifold, temporal: np.ndarray = temporal) -> float:
                if not 0 < positive[i].sum() < len(i):
                    return float("nan")
                return auroc(positive[i], manifold[i]) - auroc(positive[i], temporal[i])

            aurocs = float(roc_auc_score(positive, manifold)), float(roc_auc_score(positive, temporal))
            value = aurocs[0] - aurocs[1]
            # ctx.rng is seeded alike on every call: these are the resamples behind each filter_auroc interval
            low, high = bootstrap_ci(difference, len(judged), ctx.rng, N_BOOTSTRAP)
            low, high = min(low, value), max(high, value)  # a percentile interval can miss its own estimate
            verdict = "exceeds" if low > 0 else "falls_short" if high < 0 else "matches"
            words = {"exceeds": "exceeds", "falls_short": "falls short of",
                     "matches": "matches (within the interval)"}[verdict]
            ctx.add_finding(
                kind="auroc_difference", subject=subject, value=value, ci=(low, high),
                n=len(judged), unit="AUROC",
                statement=f"as a hallucination detector {name} {words} {TEMPORAL_FILTER} on this model: AUROC "
                          f"{aurocs[0]:.3f} against {aurocs[1]:.3f}, a difference of {value:+.3f} (paired bootstrap "
                          f"95% CI {low:+.3f} to {high:+.3f})",
                metrics={"verdict": verdict, "manifold_auroc": aurocs[0], "temporal_auroc": aurocs[1], **counts,
                         "n_bootstrap": N_BOOTSTRAP, "sampler": record})

    def _mitigations(self, ctx: RunContext, model: DiffusionModel, params: ComparisonParams, draw: _Draw,
                     temporal: np.ndarray) -> None:
        """``mitigated_rate`` of the draw, the quench and the baselines; ``rate_by_guidance`` where guided."""
        n, rows = params.n_samples, np.arange(params.n_samples)
        conditional = model.conditioning is not None
        scale = _effective(model.conditioning.guidance_scale) if conditional else None
        judge = _judge(model, rows)
        results: dict[str, tuple[_Draw, dict]] = {"none": (draw, {})}

        # The quench: its gate from the draw's DSM LIDs, then the draw's noise again, corrected.
        start = model.forwards
        reference = dsm_reference(model, draw.latents, params, ctx.seed, rows)
        gate = float(np.quantile(reference, params.gate_quantile))
        correction = quench_correction(model, params, gate, torch.Generator().manual_seed(ctx.seed + 2))
        quenched, _ = sample(model, n, torch.Generator().manual_seed(ctx.seed), keep_last=1,
                             batch_size=params.batch_size, correction=correction, rows=rows)
        quench = _Draw(quenched, judge(quenched), draw.forwards + model.forwards - start)
        results["quench"] = (quench, {"gate": gate, "gate_quantile": params.gate_quantile,
                                      "window": list(params.window), "iterations": params.iterations})

        # Reject and re-sample what trajectory variance flags, within the quench's forwards; flagged by
        # the same rule as the quench's gate (a quantile of the draw's own scores), not by the ground truth.
        threshold = float(np.quantile(temporal, params.gate_quantile))
        final = draw.latents.copy()
        generator = torch.Generator().manual_seed(ctx.seed + 3)
        cost = draw.forwards // n

        def redraw(take: np.ndarray) -> tuple[np.ndarray, int]:
            before = model.forwards
            latents, history = sample(model, len(take), generator, keep_last=params.last_steps,
                                      batch_size=params.batch_size, rows=take)
            final[take] = latents
            return trajectory_scores(history) > threshold, model.forwards - before

        flagged = temporal > threshold
        budget = quench.forwards - draw.forwards
        spent = reject_and_resample(flagged, budget, cost, redraw)
        results["reject_resample"] = (
            _Draw(final, judge(final), draw.forwards + spent.forwards),
            {"threshold": threshold, "flagged": int(flagged.sum()), "redrawn": spent.redrawn, "rounds": spent.rounds,
             "still_flagged": spent.still_flagged, "budget": budget})

        by_scale: dict[float, _Draw] = {float(scale): draw} if conditional else {}

        def at_scale(s: float) -> _Draw:
            if s not in by_scale:
                guided = model.with_guidance(s)
                before = guided.forwards
                latents, _ = sample(guided, n, torch.Generator().manual_seed(ctx.seed), keep_last=1,
                                    batch_size=params.batch_size, rows=rows)
                by_scale[s] = _Draw(latents, judge(latents), guided.forwards - before)
            return by_scale[s]

        lower = _effective(params.lower_guidance)
        if conditional and lower < scale:
            results["lower_guidance"] = (at_scale(lower), {})
        for method, (result, extra) in results.items():
            guidance = {} if not conditional else {"guidance_scale": lower if method == "lower_guidance" else scale}
            self._rate(ctx, method, result, quench.forwards, n, {**guidance, **extra, "sampler": model.record})
        if conditional and lower >= scale:
            ctx.add_finding(kind="mitigated_rate", subject="lower_guidance", value=None, n=n, unit="fraction",
                            statement=f"no lower-guidance baseline: the run samples at guidance {scale:g}, and "
                                      f"{lower:g} is not lower (scales at or below 1 are all unguided)",
                            metrics={"undefined": f"lower_guidance {params.lower_guidance:g} is not below the "
                                                  f"run's guidance_scale {scale:g}", "sampler": model.record})
        if conditional:
            for s in params.guidance_scales:
                at_scale(_effective(s))
            self._series(ctx, by_scale, float(scale), n, model.record)

    @staticmethod
    def _rate(ctx: RunContext, method: str, result: _Draw, quench_forwards: int, n: int, extra: dict) -> None:
        low, high = wilson_interval(result.hallucinated, n)
        relative = result.forwards / quench_forwards
        what = {"none": "without mitigation", "quench": "after Intrinsic Quenching",
                "reject_resample": "after rejecting and re-sampling what trajectory variance flags",
                "lower_guidance": f"at the lowered guidance scale {extra.get('guidance_scale')}"}[method]
        ctx.add_finding(
            kind="mitigated_rate", subject=method, value=result.rate, ci=(low, high), n=n, exact=True,
            unit="fraction",
            statement=f"{what}, {result.rate:.2%} of {n} samples are hallucinations (95% CI {low:.2%}–{high:.2%}), "
                      f"at {result.forwards:,} denoiser forward rows ({relative:.2f}x the quench's)",
            metrics={"hallucinated": result.hallucinated, "forwards": result.forwards,
                     "forwards_vs_quench": relative, **extra})

    @staticmethod
    def _series(ctx: RunContext, by_scale: dict[float, _Draw], scale: float, n: int, record: dict) -> None:
        scales = sorted(by_scale)
        intervals = [wilson_interval(by_scale[s].hallucinated, n) for s in scales]
        table = pa.table({"guidance_scale": scales, "rate": [by_scale[s].rate for s in scales],
                          "ci_low": [i[0] for i in intervals], "ci_high": [i[1] for i in intervals],
                          "n": [n] * len(scales), "forwards": [by_scale[s].forwards for s in scales]})
        own = by_scale[scale]
        low, high = wilson_interval(own.hallucinated, n)
        listed = ", ".join(f"{by_scale[s].rate:.1%} at {s:g}" for s in scales)
        ctx.add_finding(
            kind="rate_by_guidance", value=own.rate, ci=(low, high), n=n, exact=True, unit="fraction",
            statement=f"the hallucination rate by guidance scale, on the same noise: {listed} (the run's own "
                      f"scale is {scale:g})",
            metrics={"guidance_scale": scale, "scales": scales, "sampler": record},
            artifacts={"series": table})


def _effective(scale: float) -> float:
    """The guidance scale a sampler applies: at or below 1 only the conditional branch runs, as at 1."""
    return max(float(scale), 1.0)


def _judge(model: DiffusionModel, rows: np.ndarray) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """(in support, hallucinated) of latents, judged on their decoded images with each row's condition."""

    def judge(latents: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        truth = ground_truth_of(model, model.decode(latents), rows)
        if truth is None:  # the draw had a ground truth: the same model's other samples must too
            raise RuntimeError("the ground truth of the model's samples went missing")
        return truth

    return judge
