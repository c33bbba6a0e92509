"""``evaluation.performance``: accuracy, macro-F1, ROC-AUC and calibration of classifiers,
MSE and R² of regressors, Spearman and Pearson correlation of a sentence-similarity model's
cosine similarities with gold scores; each with a seeded bootstrap 95% CI."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field
from scipy import stats
from sklearn import metrics

from modelsci.analyses.base import AnalysisPlugin, RunContext
from modelsci.analyses.stats import bootstrap_ci
from modelsci.schemas.entities import Pillar

__all__ = ["Performance", "expected_calibration_error"]


class PerformanceParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n_bootstrap: int = Field(default=1000, ge=100, description="Bootstrap resamples for the 95% CIs.")
    ece_bins: int = Field(default=15, ge=2, description="Equal-width confidence bins of the calibration error.")
    batch_size: int = Field(default=256, ge=1, description="Rows per forward pass.")


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int) -> float:
    """Sum over equal-width confidence bins of |accuracy - mean confidence| x share of rows."""
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    total = 0.0
    for b in np.unique(which):
        members = which == b
        total += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(total)


def _calibration_table(confidence: np.ndarray, correct: np.ndarray, bins: int) -> pa.Table:
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    rows = [(int(b), b / bins, (b + 1) / bins, float(confidence[which == b].mean()),
             float(correct[which == b].mean()), int((which == b).sum())) for b in np.unique(which)]
    names = ["bin", "low", "high", "confidence", "accuracy", "rows"]
    return pa.table(dict(zip(names, map(list, zip(*rows)))))


_UNITS = {"mse": "squared units of the label", "r2": "coefficient", "spearman": "correlation",
          "pearson": "correlation"}


class Performance(AnalysisPlugin):
    name = "evaluation.performance"
    version = "1"
    family = "evaluation"
    pillar = Pillar.verify
    description = ("Accuracy, macro-F1, ROC-AUC (binary) and expected calibration error of a "
                   "classifier, or MSE and R² of a regressor, on the dataset's labelled rows, "
                   "each with a seeded percentile-bootstrap 95% CI.")
    Params = PerformanceParams
    tasks = frozenset({"tabular-classification", "tabular-regression", "text-classification",
                       "image-classification", "sentence-similarity"})

    def run(self, ctx: RunContext) -> None:
        params: PerformanceParams = ctx.params  # type: ignore[assignment]
        y = ctx.dataset.labels()
        output = ctx.model.predict(ctx.dataset, batch_size=params.batch_size)
        if ctx.model.is_classifier:
            self._classifier(ctx, params, y, output)
        elif ctx.model.task == "sentence-similarity":
            self._similarity(ctx, params, y.astype(np.float64), output)
        else:
            self._regressor(ctx, params, y.astype(np.float64), output)

    def _classifier(self, ctx: RunContext, params: PerformanceParams, y: np.ndarray, proba: np.ndarray) -> None:
        classes = np.asarray(getattr(ctx.model.model, "classes_", np.arange(proba.shape[1])))
        predicted = classes[proba.argmax(1)]
        confidence = proba.max(1)
        correct = (predicted == y).astype(np.float64)
        scores: dict[str, Callable[[np.ndarray], float]] = {
            "accuracy": lambda i: metrics.accuracy_score(y[i], predicted[i]),
            "macro_f1": lambda i: metrics.f1_score(y[i], predicted[i], average="macro", labels=classes,
                                                   zero_division=0),
            "expected_calibration_error": lambda i: expected_calibration_error(confidence[i], correct[i],
                                                                                params.ece_bins),
        }
        if len(classes) == 2:
            positive = y == classes[1]
            scores["roc_auc"] = lambda i: (metrics.roc_auc_score(positive[i], proba[i, 1])
                                           if positive[i].any() and not positive[i].all() else float("nan"))
        artifacts = {
            "accuracy": {"predictions": pa.table({
                "example": np.arange(len(y)), "label": pa.array(y.tolist()).cast(pa.string()),
                "prediction": pa.array(predicted.tolist()).cast(pa.string()), "confidence": confidence})},
            "expected_calibration_error": {"calibration": _calibration_table(confidence, correct, params.ece_bins)},
        }
        self._findings(ctx, params, scores, len(y), artifacts)

    def _regressor(self, ctx: RunContext, params: PerformanceParams, y: np.ndarray, predicted: np.ndarray) -> None:
        scores: dict[str, Callable[[np.ndarray], float]] = {
            "mse": lambda i: metrics.mean_squared_error(y[i], predicted[i]),
            "r2": lambda i: metrics.r2_score(y[i], predicted[i]),
        }
        artifacts = {"mse": {"predictions": pa.table({
            "example": np.arange(len(y)), "label": y, "prediction": predicted})}}
        self._findings(ctx, params, scores, len(y), artifacts)

    def _similarity(self, ctx: RunContext, params: PerformanceParams, y: np.ndarray, cosine: np.ndarray) -> None:
        scores: dict[str, Callable[[np.ndarray], float]] = {
            "spearman": lambda i: float(stats.spearmanr(y[i], cosine[i]).statistic),
            "pearson": lambda i: float(stats.pearsonr(y[i], cosine[i]).statistic) if np.ptp(y[i]) > 0 else float("nan"),
        }
        artifacts = {"spearman": {"predictions": pa.table({
            "example": np.arange(len(y)), "label": y, "cosine_similarity": cosine})}}
        self._findings(ctx, params, scores, len(y), artifacts)

    def _findings(self, ctx: RunContext, params: PerformanceParams,
                  scores: dict[str, Callable[[np.ndarray], float]], n: int,
                  artifacts: dict[str, dict[str, pa.Table]]) -> None:
        everyone = np.arange(n)
        rng = ctx.rng
        model, data = ctx.model.handle.instance, ctx.dataset.entity
        for done, (kind, score) in enumerate(scores.items()):
            value = float(score(everyone))
            low, high = bootstrap_ci(score, n, rng, params.n_bootstrap)
            ci = (low, high) if np.isfinite(low) else None
            ci_text = f" (95% CI {low:.3f}–{high:.3f})" if ci else ""
            ctx.add_finding(
                kind=kind, value=value, ci=ci, n=n, exact=True,
                unit=_UNITS.get(kind, "fraction"),
                statement=(f"{kind.replace('_', ' ')} of {model.source_uri} on {data.source_uri} "
                           f"({data.split or 'all'}) is {value:.4f}{ci_text}, n={n}"),
                metrics={"n_bootstrap": params.n_bootstrap, "ci_method": "percentile bootstrap"},
                artifacts=artifacts.get(kind),
            )
            ctx.progress(done + 1, len(scores))
