"""What the hallucination filters share: sampling, thresholds, ground truth and the findings of a score.

Each filter samples the model (DDPM, float64 schedule) and scores every sample. Where the
model's config names what its training data looks like (the modes of modelsci's toy
denoisers, or the shapes setting), each sample is judged in support, hallucinated, or neither,
and ``hallucination_rate`` is the true share of hallucinated samples. The filter's own verdict
is ``flagged_rate``: the share of samples scoring above its threshold, which keeps 95% of
in-support samples where the ground truth is known (so it is near 5% of them by construction)
and is median + k x MAD of the scores otherwise. ``filter_auroc`` says how well the score
separates hallucinated from in-support samples. Rates get Wilson intervals, AUROC a seeded
bootstrap over the judged samples.
"""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
import pyarrow as pa
import torch
from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

from modelsci.analyses.base import FindingKind, RunContext
from modelsci.analyses.hallucination.diffusion import DiffusionModel, sample
from modelsci.analyses.hallucination.shapes import shapes_truth
from modelsci.analyses.hallucination.toy import ground_truth
from modelsci.analyses.stats import auroc, bootstrap_ci, wilson_interval

__all__ = ["FILTER_KINDS", "FRAMEWORKS", "GENERATIVE", "FilterParams", "draw_samples", "filter_threshold",
           "ground_truth_of", "report_scores", "report_truth"]

GENERATIVE = frozenset({"unconditional-image-generation", "text-to-image"})
FRAMEWORKS = frozenset({"torch", "diffusers"})


_WILSON = "Wilson score 95% interval of the proportion"
_TRUTH = ("toy denoisers: in support within 3 std of a mode, hallucinated farther than 4 std from every mode "
          "and inside the modes' bounding box; shapes setting: one shape in support, more than one hallucinated; "
          "conditioned shapes: one shape of the prompted kind in support, any other count or the wrong kind "
          "hallucinated")
_JUDGED = {"in_support": "1 when the sample is in support (ground truth)",
           "hallucinated": "1 when it is hallucinated (ground truth)"}
_SAMPLE_COLUMNS = {"sample": "sample index", "x0": "first coordinate of the sample (pixel 0 for images)",
                   "x1": "second coordinate (absent for 1D samples)",
                   "condition": "conditional pipelines: the prompt (or class id) the sample was drawn under"}
_SAMPLER = ("what sampled: pipeline, denoiser, scheduler, prediction_type, timestep_spacing, steps, guidance_scale, "
            "eta, latent, conditioning")

FILTER_KINDS = (
    FindingKind("hallucination_rate", "share of the generated samples that are hallucinated by the ground truth "
                f"({_TRUTH}); written only where the model's config makes the ground truth known",
                "fraction", _WILSON,
                metrics={"hallucinated": "hallucinated samples", "in_support": "in-support samples",
                         "neither": "samples judged neither", "judged_by": "the rule", "ci_method": "Wilson",
                         "sampler": _SAMPLER},
                artifacts={"samples": {**_SAMPLE_COLUMNS, **_JUDGED}}, lower_is_better=True),
    FindingKind("flagged_rate", "share of the generated samples whose score is above the filter's threshold "
                "(the filter's estimate of the hallucination rate)", "fraction", _WILSON,
                subject="the filter: `trajectory_variance`, `lid_dsm` or `lid_flipd`",
                metrics={"threshold": "the score threshold", "rule": "how it was set (keeps retention of "
                         "in-support samples with ground truth, else median + k x MAD)",
                         "flagged_rate": "the value", "ci_method": "Wilson",
                         "true_rate": "the true hallucination rate (with ground truth)",
                         "removed_at_retention": "share of hallucinated samples flagged (with ground truth)",
                         "last_steps": "trajectory variance: K", "t_star": "LID: the timestep looked at",
                         "estimator": "LID: dsm or flipd", "mean_lid": "LID: the mean score", "sampler": _SAMPLER},
                artifacts={"scores": {"sample": "sample index", "score": "the filter's score",
                                      "flagged": "score above the threshold", "x0": "first coordinate",
                                      "x1": "second coordinate (if any)", "condition": _SAMPLE_COLUMNS["condition"],
                                      **_JUDGED}}),
    FindingKind("filter_auroc", "ROC AUC of the score separating hallucinated (positive) from in-support samples; "
                "samples judged neither are left out. Written only with ground truth holding both", "AUROC",
                "seeded percentile bootstrap over the judged samples, 95%",
                subject="the filter, as for flagged_rate",
                metrics={"threshold": "the score threshold", "removed_at_retention": "share of hallucinated samples "
                         "above it", "in_support": "in-support samples", "hallucinated": "hallucinated samples",
                         "n_bootstrap": "bootstrap resamples", "sampler": _SAMPLER}),
)


class FilterParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n_samples: int = Field(default=2000, ge=2, description="Samples drawn and scored.")
    batch_size: int = Field(default=4096, ge=1, description="Samples per reverse-diffusion batch.")
    retention: float = Field(default=0.95, gt=0, lt=1, description="With ground truth: share of in-support samples the threshold keeps.")
    mad_k: float = Field(default=5.0, gt=0, description="Without ground truth: threshold = median + k x MAD.")
    prompts: list[Annotated[str, Field(min_length=1)]] | None = Field(default=None, min_length=1, description="Text-to-image: prompts the samples cycle over (sample i gets prompt i mod P); default: the dataset's text column, else the prompts the model's note lists.")
    class_labels: list[Annotated[int, Field(ge=0)]] | None = Field(default=None, min_length=1, description="Class-conditional (DiT): class ids the samples cycle over; default: the dataset's label column, else the model's note.")
    guidance_scale: float = Field(default=1.0, ge=0, description="Conditional pipelines: classifier-free guidance scale; at 1 or below only the conditional branch runs (one forward per step).")
    num_inference_steps: int | None = Field(default=None, ge=1, description="Reverse steps, spaced as the scheduler says; default every training timestep for DDPM, 50 for DDIM.")
    eta: float = Field(default=0.0, ge=0, description="DDIM: the noise of each step (0: deterministic).")

    @model_serializer(mode="wrap")
    def _recorded(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Recorded only when set, so that the params hash of a run on an unconditional model stays what it was.
        dumped = handler(self)
        for name in ("prompts", "class_labels", "guidance_scale", "num_inference_steps", "eta"):
            if name in dumped and dumped[name] == type(self).model_fields[name].default:
                del dumped[name]
        return dumped


def filter_threshold(scores: np.ndarray, truth: tuple[np.ndarray, np.ndarray] | None, params: FilterParams) -> tuple[float, str]:
    if truth is not None and truth[0].any():
        return float(np.quantile(scores[truth[0]], params.retention)), f"keeps {params.retention:.0%} of in-support samples"
    median = float(np.median(scores))
    mad = float(np.median(np.abs(scores - median))) or float(np.std(scores)) or 1e-12
    return median + params.mad_k * mad, f"median + {params.mad_k} x MAD"


def ground_truth_of(model: DiffusionModel, images: np.ndarray,
                    rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """(in support, hallucinated) of decoded samples, where the model's note makes it known; ``rows``:
    the samples' indices, which say the condition each was drawn under."""
    if model.data.get("kind") == "shapes":
        kinds = model.data.get("conditions")
        labels = model.conditions_of(np.arange(len(images)) if rows is None else rows)
        if kinds and labels is not None:
            unknown = sorted(set(labels) - set(kinds))
            if unknown:  # judged by another rule, the rate would mean something else than its name
                raise ValueError(f"the model's note judges the conditions {sorted(kinds)}, not {unknown}: sample "
                                 "under those, or the hallucination rate has no ground truth")
            return shapes_truth(images, [kinds[label] for label in labels])
        return shapes_truth(images)
    if not model.data.get("modes"):
        return None
    return ground_truth(images, np.asarray(model.data["modes"]), float(model.data["std"]))


def _conditions(model: DiffusionModel, n: int) -> dict[str, list[str]]:
    labels = model.conditions_of(np.arange(n))
    return {} if labels is None else {"condition": labels}


def _sample_columns(samples: np.ndarray) -> dict[str, np.ndarray]:
    flat = samples.reshape(len(samples), -1)
    return {f"x{d}": flat[:, d] for d in range(min(flat.shape[1], 2))}


def report_truth(ctx: RunContext, samples: np.ndarray, model: DiffusionModel) -> tuple[np.ndarray, np.ndarray] | None:
    """The true hallucination rate of the (decoded) samples, where the ground truth is known; returns the truth."""
    truth = ground_truth_of(model, samples)
    if truth is None:
        return None
    in_support, hallucinated = truth
    n, k = len(samples), int(hallucinated.sum())
    low, high = wilson_interval(k, n)
    judged_by = "counting shapes" if model.data.get("kind") == "shapes" else "distance to the known modes"
    ctx.add_finding(
        kind="hallucination_rate", value=k / n, ci=(low, high), n=n, exact=True, unit="fraction",
        statement=f"{k / n:.2%} of {n} samples of the model are hallucinations (judged by {judged_by}; "
                  f"95% CI {low:.2%}–{high:.2%})",
        metrics={"hallucinated": k, "in_support": int(in_support.sum()), "neither": int((~in_support & ~hallucinated).sum()),
                 "judged_by": judged_by, "ci_method": "Wilson score interval", "sampler": model.record},
        artifacts={"samples": pa.table({"sample": np.arange(n), **_sample_columns(samples), **_conditions(model, n),
                                        "in_support": in_support, "hallucinated": hallucinated})})
    return truth


def report_scores(ctx: RunContext, name: str, scores: np.ndarray, samples: np.ndarray,
                  truth: tuple[np.ndarray, np.ndarray] | None, params: FilterParams, extra: dict | None = None,
                  model: DiffusionModel | None = None) -> dict:
    """The ``flagged_rate`` (and with ground truth ``filter_auroc``) of one filter's scores; returns the figures."""
    threshold, rule = filter_threshold(scores, truth, params)
    flagged = scores > threshold
    n = len(scores)
    ci = wilson_interval(int(flagged.sum()), n)
    sampler = {"sampler": model.record} if model is not None else {}
    figures: dict = {"threshold": threshold, "rule": rule, "flagged_rate": float(flagged.mean()),
                     "ci_method": "Wilson score interval", **(extra or {}), **sampler}
    columns = {"sample": np.arange(n), "score": scores, "flagged": flagged, **_sample_columns(samples),
               **(_conditions(model, n) if model is not None else {})}
    statement = f"{name}: {flagged.mean():.2%} of {n} samples score above the threshold {threshold:.4g} ({rule})"
    value = None
    if truth is not None:
        in_support, hallucinated = truth
        columns["in_support"], columns["hallucinated"] = in_support, hallucinated
        figures["true_rate"] = float(hallucinated.mean())
        if hallucinated.any() and in_support.any():
            judged = np.flatnonzero(in_support | hallucinated)
            positive, judged_scores = hallucinated[judged], scores[judged]
            value = auroc(positive, judged_scores)
            figures["removed_at_retention"] = float(flagged[hallucinated].mean())
            statement += (f"; the true hallucination rate is {figures['true_rate']:.2%}, and "
                          f"{figures['removed_at_retention']:.0%} of hallucinations are flagged")

            def resampled_auroc(i: np.ndarray) -> float:
                return auroc(positive[i], judged_scores[i])

            auroc_ci = bootstrap_ci(resampled_auroc, len(judged), ctx.rng, 500)
    ctx.add_finding(kind="flagged_rate", subject=name, value=float(flagged.mean()), ci=ci, n=n, unit="fraction",
                    statement=statement, metrics=figures, artifacts={"scores": pa.table(columns)})
    if value is not None:
        ctx.add_finding(kind="filter_auroc", subject=name, value=value, ci=auroc_ci, n=len(judged), unit="AUROC",
                        statement=f"{name} separates hallucinated from in-support samples with AUROC {value:.3f} "
                                  f"(95% CI {auroc_ci[0]:.3f}–{auroc_ci[1]:.3f})",
                        metrics={"threshold": threshold, "removed_at_retention": figures["removed_at_retention"],
                                 "in_support": int(truth[0].sum()), "hallucinated": int(truth[1].sum()),
                                 "n_bootstrap": 500, **sampler})
    return {**figures, "auroc": value} if value is not None else figures  # a copy: the finding keeps its own


def draw_samples(ctx: RunContext, model: DiffusionModel, params: FilterParams, keep_last: int,
                 correction=None) -> tuple[np.ndarray, np.ndarray]:  # noqa: ANN001
    """(samples, x̂₀ history) seeded by the run; the run records what sampled them."""
    if keep_last > len(model.timesteps):
        raise ValueError(f"last_steps {keep_last} is more than the {len(model.timesteps)} reverse steps sampled")
    ctx.run.environment["sampler"] = model.record
    generator = torch.Generator().manual_seed(ctx.seed)
    return sample(model, params.n_samples, generator, keep_last=keep_last, batch_size=params.batch_size,
                  correction=correction, progress=ctx.progress)
