"""``evaluation.performance``: accuracy, macro-F1, ROC-AUC and calibration of classifiers,
MSE and R² of regressors, Spearman and Pearson correlation of a sentence-similarity model's
cosine similarities with gold scores.

Values are computed on every labelled row, so they do not depend on the seed. Accuracy, a
proportion, gets the Wilson score interval; the others a seeded percentile bootstrap (the seed
draws only the resamples). A metric undefined on the data (ROC-AUC when the split holds one
class, a correlation of constant scores) is recorded with a null value and the reason in
``metrics.undefined``, and the run's other metrics still land.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field
from scipy import stats
from sklearn import metrics

from modelsci.analyses.base import AnalysisPlugin, FindingKind, RunContext
from modelsci.analyses.evaluation.language_model import LM_KINDS, language_model_performance
from modelsci.analyses.evaluation.zero_shot import ZERO_SHOT_KINDS, zero_shot_performance
from modelsci.analyses.stats import bootstrap_ci, wilson_interval
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
_BOOTSTRAP = "seeded percentile bootstrap over rows, 95% (resamples where the metric is undefined are dropped)"
_CI_METRICS = {"ci_method": "how the interval was made", "n_bootstrap": "bootstrap resamples (bootstrap intervals only)"}
_NULL = "when the metric is undefined on these rows; `metrics.undefined` says why"
_PREDICTIONS = {"example": "row index in the dataset", "label": "true label (as text)",
                "prediction": "predicted class (as text)", "confidence": "probability of the predicted class"}


def _kind(kind: str, value: str, unit: str, interval: str = _BOOTSTRAP, null: str = "",
          artifacts: dict[str, dict[str, str]] | None = None, lower_is_better: bool = False) -> FindingKind:
    metrics = {**_CI_METRICS, **({"undefined": "why the value is null (only then)"} if null else {})}
    return FindingKind(kind, value, unit, interval, metrics=metrics, artifacts=artifacts or {}, null=null,
                       lower_is_better=lower_is_better)


KINDS = (
    _kind("accuracy", "share of labelled rows whose predicted class (argmax of the probabilities) is the label",
          "fraction", "Wilson score 95% interval of the proportion", artifacts={"predictions": _PREDICTIONS}),
    _kind("macro_f1", "F1 averaged over the model's classes with equal weight (a class never predicted scores 0)",
          "fraction"),
    _kind("expected_calibration_error", "sum over equal-width confidence bins of |accuracy - mean confidence| "
          "x the bin's share of rows (confidence: probability of the predicted class)", "fraction",
          artifacts={"calibration": {"bin": "bin index", "low": "lower edge", "high": "upper edge",
                                     "confidence": "mean confidence in the bin", "accuracy": "accuracy in the bin",
                                     "rows": "rows in the bin"}}, lower_is_better=True),
    _kind("roc_auc", "area under the ROC curve of the second class' probability (binary classifiers only)",
          "fraction", null=_NULL + " (ROC-AUC needs both classes)"),
    _kind("mse", "mean squared error of the regressor's predictions", "squared units of the label",
          artifacts={"predictions": {"example": "row index", "label": "true value", "prediction": "predicted value"}}, lower_is_better=True),
    _kind("r2", "coefficient of determination R² of the predictions (1 - SSE / SST)", "coefficient", null=_NULL),
    _kind("spearman", "Spearman rank correlation of the cosine similarities of the pairs with the gold scores",
          "correlation", null=_NULL,
          artifacts={"predictions": {"example": "row index", "label": "gold score",
                                     "cosine_similarity": "cosine similarity of the pair's embeddings"}}),
    _kind("pearson", "Pearson correlation of the cosine similarities of the pairs with the gold scores",
          "correlation", null=_NULL),
)


def _undefined(kind: str, y: np.ndarray) -> str:
    """Why ``kind`` has no value on labels ``y``."""
    if kind == "roc_auc":
        present = ", ".join(map(str, np.unique(y).tolist()))
        return f"ROC-AUC needs both classes; the split has only class {present}"
    if kind in ("spearman", "pearson") and np.ptp(y) == 0:
        return f"a {kind.title()} correlation needs varying gold scores; every score is {y[0]}"
    return f"{kind} is undefined on these {len(y)} rows"


class Performance(AnalysisPlugin):
    name = "evaluation.performance"
    version = "2"  # 2: Wilson interval for accuracy; an undefined metric is null with its reason
    family = "evaluation"
    pillar = Pillar.verify
    description = ("Accuracy, macro-F1, ROC-AUC (binary) and expected calibration error of a "
                   "classifier, MSE and R² of a regressor, or Spearman and Pearson correlation of a "
                   "sentence-similarity model, on the dataset's labelled rows, or perplexity, mean token "
                   "log-likelihood and exact match of a causal language model, each with a 95% interval "
                   "(Wilson for accuracy and exact match, a seeded percentile bootstrap for the others).")
    seed_dependent = False
    seed_use = "values are computed on every row; the seed only draws the bootstrap resamples of the intervals"
    kinds = KINDS + LM_KINDS + ZERO_SHOT_KINDS
    Params = PerformanceParams
    tasks = frozenset({"tabular-classification", "tabular-regression", "text-classification",
                       "image-classification", "sentence-similarity", "text-generation",
                       "zero-shot-image-classification"})

    def run(self, ctx: RunContext) -> None:
        params: PerformanceParams = ctx.params  # type: ignore[assignment]
        if ctx.model.task == "text-generation":
            return language_model_performance(ctx, params.n_bootstrap, params.batch_size)
        if ctx.model.task == "zero-shot-image-classification":
            return zero_shot_performance(self, ctx, params)
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
        self._findings(ctx, params, scores, y, artifacts, proportions={"accuracy": correct})

    def _regressor(self, ctx: RunContext, params: PerformanceParams, y: np.ndarray, predicted: np.ndarray) -> None:
        scores: dict[str, Callable[[np.ndarray], float]] = {
            "mse": lambda i: metrics.mean_squared_error(y[i], predicted[i]),
            "r2": lambda i: metrics.r2_score(y[i], predicted[i]),
        }
        artifacts = {"mse": {"predictions": pa.table({
            "example": np.arange(len(y)), "label": y, "prediction": predicted})}}
        self._findings(ctx, params, scores, y, artifacts)

    def _similarity(self, ctx: RunContext, params: PerformanceParams, y: np.ndarray, cosine: np.ndarray) -> None:
        scores: dict[str, Callable[[np.ndarray], float]] = {
            "spearman": lambda i: float(stats.spearmanr(y[i], cosine[i]).statistic),
            "pearson": lambda i: float(stats.pearsonr(y[i], cosine[i]).statistic) if np.ptp(y[i]) > 0 else float("nan"),
        }
        artifacts = {"spearman": {"predictions": pa.table({
            "example": np.arange(len(y)), "label": y, "cosine_similarity": cosine})}}
        self._findings(ctx, params, scores, y, artifacts)

    def _findings(self, ctx: RunContext, params: PerformanceParams,
                  scores: dict[str, Callable[[np.ndarray], float]], y: np.ndarray,
                  artifacts: dict[str, dict[str, pa.Table]], proportions: dict[str, np.ndarray] | None = None) -> None:
        """One finding per metric; ``proportions`` maps a metric to its 0/1 outcomes (Wilson interval)."""
        n = len(y)
        everyone = np.arange(n)
        rng = ctx.rng
        model, data = ctx.model.handle.instance, ctx.dataset.entity
        for done, (kind, score) in enumerate(scores.items()):
            value: float | None = float(score(everyone))
            if kind in (proportions or {}):
                ci: tuple[float, float] | None = wilson_interval(int(proportions[kind].sum()), n)
                info: dict[str, object] = {"ci_method": "Wilson score interval"}
            else:
                low, high = bootstrap_ci(score, n, rng, params.n_bootstrap)
                ci = (low, high) if np.isfinite(low) else None
                info = {"n_bootstrap": params.n_bootstrap, "ci_method": "percentile bootstrap"}
            subject = f"{kind.replace('_', ' ')} of {model.source_uri} on {data.source_uri} ({data.split or 'all'})"
            if np.isfinite(value):
                ci_text = f" (95% CI {ci[0]:.3f}–{ci[1]:.3f})" if ci else ""
                statement = f"{subject} is {value:.4f}{ci_text}, n={n}"
            else:
                reason = _undefined(kind, y)
                value, ci, info = None, None, {**info, "undefined": reason}
                statement = f"{subject} is undefined: {reason}"
            ctx.add_finding(kind=kind, value=value, ci=ci, n=n, exact=True, unit=_UNITS.get(kind, "fraction"),
                            statement=statement, metrics=info, artifacts=artifacts.get(kind))
            ctx.progress(done + 1, len(scores))
