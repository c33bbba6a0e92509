"""``multiplicity.preprocessing``: how much the data's preparation changes the Rashomon set's multiplicity.

Every setting draws its Rashomon set with the same seeds, so two settings that prepare the same
training data give the same numbers. That happens whenever the two feature filters keep the
same features (on breast_cancer both keep the same 26 of 30 at alpha 0.05), or a filter keeps
every feature (then it is the untouched data): such a setting is computed once and its
findings name, in ``metrics.same_data_as``, the setting whose data it repeats.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field
from scipy import stats

from modelsci.analyses.base import AnalysisPlugin, RunContext
from modelsci.analyses.multiplicity.metrics import PREDICTIONS, metric_kind, multiplicity_metrics
from modelsci.analyses.multiplicity.rashomon import RashomonParams, class_scores, rashomon_members, splits
from modelsci.schemas.entities import Pillar

__all__ = ["Preprocessing", "PreprocessingParams"]


class PreprocessingParams(RashomonParams):
    settings: list[Literal["random_over", "random_under", "smote", "filter_correlation", "filter_wilcoxon"]] = Field(
        default=["random_over", "random_under", "smote", "filter_correlation", "filter_wilcoxon"],
        description="Data preparations compared with the untouched data.")
    alpha: float = Field(default=0.05, gt=0, lt=1, description="Feature filters keep features with p < alpha.")


_METRICS = {
    "untouched": "the value on the untouched data (null for setting:none)", "set_size": "members in the set",
    "features": "number of features kept", "kept_features": "their names",
    "same_data_as": "an earlier setting that prepared exactly the same training data (so the same numbers: every "
                    "setting draws its set with the same seeds), or null",
    "epsilon": "the epsilon used", "epsilon_mode": "additive or relative",
}
_SUBJECT = ("`setting:<name>`: none (untouched), random_over, random_under, smote, filter_correlation (Pearson "
            "correlation of each feature with the label), filter_wilcoxon (rank-sum test of the first class "
            "against the others)")


class Preprocessing(AnalysisPlugin):
    name = "multiplicity.preprocessing"
    version = "3"  # 2: scores aligned to the known classes; 3: Wilson interval for ambiguity, same_data_as
    family = "multiplicity"
    pillar = Pillar.verify
    description = ("Repeats the Rashomon-set study after class balancing (random over/under-sampling, "
                   "SMOTE) and feature filtering (p < alpha under a correlation or a Wilcoxon rank-sum test) "
                   "and reports each setting's multiplicity against the untouched data.")
    Params = PreprocessingParams
    tasks = frozenset({"tabular-classification"})
    needs_training_data = True
    frameworks = frozenset({"sklearn"})
    seed_use = "the resamplers (over/under-sampling, SMOTE), the candidates' seeds and resamples, the bootstrap"
    kinds = tuple(metric_kind(name, _SUBJECT, _METRICS, {"predictions": PREDICTIONS} if name == "ambiguity" else None)
                  for name in ("ambiguity", "discrepancy", "obscurity"))

    def run(self, ctx: RunContext) -> None:
        params: PreprocessingParams = ctx.params  # type: ignore[assignment]
        x_train, y_train, x_test, y_test, classes = splits(ctx)
        from sklearn.base import clone

        results: dict[str, tuple | None] = {}
        prepared: dict[str, tuple[np.ndarray, np.ndarray, list[int]]] = {}
        same: dict[str, str | None] = {}
        settings = ["none", *params.settings]
        for done, setting in enumerate(settings):
            xs, ys, columns = _prepare(setting, x_train, y_train, params.alpha, ctx.seed)
            same[setting] = next((earlier for earlier, (xe, ye, ce) in prepared.items()
                                  if ce == columns and np.array_equal(xe, xs) and np.array_equal(ye, ys)), None)
            prepared[setting] = (xs, ys, columns)
            if same[setting] is not None:  # the same data and seeds give the same set: computed once
                results[setting] = results[same[setting]]
                continue
            reference = clone(ctx.model.model).fit(xs, ys)
            members, info = rashomon_members(ctx, params, xs, ys, reference, x_test[:, columns], y_test, classes)
            if len(members) < 2:
                results[setting] = None
                continue
            member_scores = np.stack([class_scores(c.model, x_test[:, columns], classes) for c in members])
            values, _, predictions = multiplicity_metrics(class_scores(reference, x_test[:, columns], classes), member_scores,
                                                          y_test, classes, ctx.rng, params.n_bootstrap)
            results[setting] = (values, info, columns, predictions)
            ctx.progress(done + 1, len(settings))
        baseline = results.get("none")
        data = ctx.dataset.entity.source_uri
        for setting, result in results.items():
            if result is None:
                continue
            values, info, columns, predictions = result
            names = [ctx.dataset.feature_names[j] for j in columns]
            for name in ("ambiguity", "discrepancy", "obscurity"):
                value, ci = values[name]
                before = baseline[0][name][0] if baseline else None
                verb = "" if before is None or setting == "none" else (
                    " raises" if value > before else (" lowers" if value < before else " keeps"))
                if verb:
                    statement = f"{_label(setting)}{verb} {name} on {data} from {before:.3g} to {value:.3g}"
                else:
                    statement = f"{name} on {data} with {_label(setting)} is {value:.3g}"
                statement += f" (Rashomon set of {info['members']}, {len(columns)} features"
                if same[setting] is not None:
                    statement += f"; the same training data as {_label(same[setting])}"
                statement += ")"
                ctx.add_finding(kind=name, subject=f"setting:{setting}", value=value, ci=ci, n=len(y_test),
                                unit="fraction", statement=statement,
                                metrics={"untouched": before, "set_size": info["members"], "features": len(columns),
                                         "kept_features": names, "same_data_as": same[setting],
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
