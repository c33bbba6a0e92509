"""``multiplicity.preprocessing``: how much the data's preparation changes the Rashomon set's multiplicity."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field
from scipy import stats

from modelsci.analyses.base import AnalysisPlugin, RunContext
from modelsci.analyses.multiplicity.metrics import multiplicity_metrics
from modelsci.analyses.multiplicity.rashomon import RashomonParams, class_scores, rashomon_members, splits
from modelsci.schemas.entities import Pillar

__all__ = ["Preprocessing", "PreprocessingParams"]


class PreprocessingParams(RashomonParams):
    settings: list[Literal["random_over", "random_under", "smote", "filter_correlation", "filter_wilcoxon"]] = Field(
        default=["random_over", "random_under", "smote", "filter_correlation", "filter_wilcoxon"],
        description="Data preparations compared with the untouched data.")
    alpha: float = Field(default=0.05, gt=0, lt=1, description="Feature filters keep features with p < alpha.")


class Preprocessing(AnalysisPlugin):
    name = "multiplicity.preprocessing"
    version = "2"  # scores aligned to the known classes (a member may lack one)
    family = "multiplicity"
    pillar = Pillar.verify
    description = ("Repeats the Rashomon-set study after class balancing (random over/under-sampling, "
                   "SMOTE) and feature filtering (p < alpha under a correlation or a Wilcoxon rank-sum test) "
                   "and reports each setting's multiplicity against the untouched data.")
    Params = PreprocessingParams
    tasks = frozenset({"tabular-classification"})
    needs_training_data = True
    frameworks = frozenset({"sklearn"})

    def run(self, ctx: RunContext) -> None:
        params: PreprocessingParams = ctx.params  # type: ignore[assignment]
        x_train, y_train, x_test, y_test, classes = splits(ctx)
        from sklearn.base import clone

        results = {}
        settings = ["none", *params.settings]
        for done, setting in enumerate(settings):
            xs, ys, columns = _prepare(setting, x_train, y_train, params.alpha, ctx.seed)
            reference = clone(ctx.model.model).fit(xs, ys)
            members, info = rashomon_members(ctx, params, xs, ys, reference, x_test[:, columns], y_test, classes)
            if len(members) < 2:
                results[setting] = None
                continue
            member_scores = np.stack([class_scores(c.model, x_test[:, columns], classes) for c in members])
            values, _, predictions = multiplicity_metrics(class_scores(reference, x_test[:, columns], classes), member_scores,
                                                          y_test, classes, ctx.rng, params.n_bootstrap)
            results[setting] = (values, info, len(columns), predictions)
            ctx.progress(done + 1, len(settings))
        baseline = results.get("none")
        data = ctx.dataset.entity.source_uri
        for setting, result in results.items():
            if result is None:
                continue
            values, info, n_features, predictions = result
            for name in ("ambiguity", "discrepancy", "obscurity"):
                value, ci = values[name]
                before = baseline[0][name][0] if baseline else None
                verb = "" if before is None or setting == "none" else (
                    " raises" if value > before else (" lowers" if value < before else " keeps"))
                if verb:
                    statement = f"{_label(setting)}{verb} {name} on {data} from {before:.3g} to {value:.3g}"
                else:
                    statement = f"{name} on {data} with {_label(setting)} is {value:.3g}"
                statement += f" (Rashomon set of {info['members']}, {n_features} features)"
                ctx.add_finding(kind=name, subject=f"setting:{setting}", value=value, ci=ci, n=len(y_test),
                                unit="fraction", statement=statement,
                                metrics={"untouched": before, "set_size": info["members"], "features": n_features,
                                         "epsilon": info["epsilon"], "epsilon_mode": info["epsilon_mode"]},
                                artifacts={"predictions": predictions} if name == "ambiguity" else None)


def _label(setting: str) -> str:
    return {"none": "the untouched data", "random_over": "balancing by random over-sampling",
            "random_under": "balancing by random under-sampling", "smote": "balancing with SMOTE",
            "filter_correlation": "filtering features by a correlation test",
            "filter_wilcoxon": "filtering features by a Wilcoxon rank-sum test"}[setting]


def _prepare(setting: str, x: np.ndarray, y: np.ndarray, alpha: float, seed: int) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """The training data after one preparation, and the feature columns it keeps."""
    columns = list(range(x.shape[1]))
    if setting == "none":
        return x, y, columns
    if setting in ("random_over", "random_under", "smote"):
        from imblearn.over_sampling import SMOTE, RandomOverSampler
        from imblearn.under_sampling import RandomUnderSampler

        sampler = {"random_over": RandomOverSampler, "random_under": RandomUnderSampler, "smote": SMOTE}[setting]
        xs, ys = sampler(random_state=seed).fit_resample(x, y)
        return xs, ys, columns
    classes = np.unique(y)
    if setting == "filter_correlation":
        p = np.array([stats.pearsonr(x[:, j], y).pvalue if np.ptp(x[:, j]) > 0 else 1.0 for j in columns])
    else:
        p = np.array([stats.ranksums(x[y == classes[0], j], x[y != classes[0], j]).pvalue for j in columns])
    kept = [j for j in columns if p[j] < alpha] or columns
    return x[:, kept], y, kept
