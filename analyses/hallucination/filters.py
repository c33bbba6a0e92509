"""What the hallucination filters share: sampling, thresholds, ground truth and the findings of a score.

Each filter samples the model (DDPM, float64 schedule) and scores every sample; a finding
reports the estimated hallucination rate (share of samples above the threshold), the
scores' distribution (artifact ``scores``) and the threshold. Where the model's config names
the modes of its training data (modelsci's toy denoisers), the ground truth is known: the
threshold keeps 95% of in-support samples, and AUROC and the share of hallucinations removed
are reported. Otherwise the threshold is median + k x MAD of the scores (k = ``mad_k``).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch
from pydantic import BaseModel, ConfigDict, Field
from sklearn.metrics import roc_auc_score

from modelsci.analyses.base import RunContext
from modelsci.analyses.hallucination.diffusion import DiffusionModel, sample
from modelsci.analyses.hallucination.shapes import shapes_truth
from modelsci.analyses.hallucination.toy import ground_truth
from modelsci.analyses.stats import bootstrap_ci

__all__ = ["FRAMEWORKS", "GENERATIVE", "FilterParams", "draw_samples", "ground_truth_of", "filter_threshold",
           "report_scores"]

GENERATIVE = frozenset({"unconditional-image-generation"})
FRAMEWORKS = frozenset({"torch", "diffusers"})


class FilterParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n_samples: int = Field(default=2000, ge=2, description="Samples drawn and scored.")
    batch_size: int = Field(default=4096, ge=1, description="Samples per reverse-diffusion batch.")
    retention: float = Field(default=0.95, gt=0, lt=1, description="With ground truth: share of in-support samples the threshold keeps.")
    mad_k: float = Field(default=5.0, gt=0, description="Without ground truth: threshold = median + k x MAD.")


def filter_threshold(scores: np.ndarray, truth: tuple[np.ndarray, np.ndarray] | None, params: FilterParams) -> tuple[float, str]:
    if truth is not None and truth[0].any():
        return float(np.quantile(scores[truth[0]], params.retention)), f"keeps {params.retention:.0%} of in-support samples"
    median = float(np.median(scores))
    mad = float(np.median(np.abs(scores - median))) or float(np.std(scores)) or 1e-12
    return median + params.mad_k * mad, f"median + {params.mad_k} x MAD"


def ground_truth_of(model: DiffusionModel, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    if model.data.get("kind") == "shapes":
        return shapes_truth(samples)
    if not model.data.get("modes"):
        return None
    return ground_truth(samples, np.asarray(model.data["modes"]), float(model.data["std"]))


def report_scores(ctx: RunContext, name: str, scores: np.ndarray, samples: np.ndarray, model: DiffusionModel,
            params: FilterParams, extra: dict | None = None) -> dict:
    """Findings of one filter's scores; returns the figures for callers that compare."""
    truth = ground_truth_of(model, samples)
    threshold, rule = filter_threshold(scores, truth, params)
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


def draw_samples(ctx: RunContext, model: DiffusionModel, params: FilterParams, keep_last: int,
             correction=None) -> tuple[np.ndarray, np.ndarray]:  # noqa: ANN001
    generator = torch.Generator().manual_seed(ctx.seed)
    return sample(model, params.n_samples, generator, keep_last=keep_last, batch_size=params.batch_size,
                  correction=correction, progress=ctx.progress)
