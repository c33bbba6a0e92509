"""``multiplicity.rashomon_set``: how many good models disagree with the submitted one, where, and how much.

Findings belong to the submitted model and name the set they were computed on (its size,
epsilon, loss and split in their metrics). Each member is registered as a ModelInstance
whose base is the reference, with a ``derived_from`` link from its own finding to the set's.
Artifacts hold everything needed to recompute every metric: per-point metrics and the
members' predictions in long form (example, member, prediction, reference).
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
from scipy import stats
from sklearn.inspection import permutation_importance

from modelsci.analyses.base import AnalysisPlugin, FindingKind, RunContext
from modelsci.analyses.multiplicity.metrics import (
    METRIC_VALUES,
    POINTS,
    PREDICTIONS,
    metric_kind,
    multiplicity_metrics,
)
from modelsci.analyses.multiplicity.rashomon import (
    RashomonParams,
    class_scores,
    member_instance,
    rashomon_members,
    splits,
)
from modelsci.analyses.stats import bootstrap_ci
from modelsci.schemas.entities import FindingLink, Pillar

__all__ = ["RashomonSet"]

_SET_METRICS = {"set_size": "members in the set", "epsilon": "the epsilon used", "epsilon_mode": "additive or relative",
                "loss_on": "split whose log loss decided membership"}
KINDS = (
    FindingKind("rashomon_set", "number of retrained candidates within epsilon of the best log loss (the set's "
                "size; the submitted model is never a member)", "members",
                metrics={"epsilon": "epsilon", "epsilon_mode": "additive or relative", "loss": "log loss",
                         "loss_on": "train or test", "best_loss": "best loss (the submitted model counts)",
                         "bound": "largest loss a member may have", "reference_loss": "the submitted model's loss",
                         "candidates": "models retrained", "members": "models in the set"},
                artifacts={"members": {"member": "member index", "loss": "its log loss",
                                       "description": "how it was trained (JSON: seed, bootstrap, regularisation)"}}),
    *(metric_kind(name, "empty: the whole model", _SET_METRICS,
                  {"points": POINTS, "predictions": PREDICTIONS} if name == "ambiguity" else None)
      for name in METRIC_VALUES),
    FindingKind("rashomon_member", "the member's log loss on the membership split", "log loss",
                subject="empty; the finding's model is the member (a ModelInstance of its own, linked "
                        "derived_from to the set's finding)",
                metrics={"member": "member index", "reference": "id of the submitted model",
                         "seed": "training seed", "bootstrap": "trained on a bootstrap resample",
                         "<parameter>": "the scaled regularisation strength, named by the estimator's parameter "
                                        "(e.g. `logisticregression__C`), where it has one",
                         "epochs": "training epochs (PyTorch MLPs)"}),
    FindingKind("importance_kendall_tau", "mean over members of Kendall's tau between the member's and the submitted "
                "model's permutation importances (accuracy drop; NaN taus of constant importances count as 0)",
                "Kendall tau", "seeded percentile bootstrap over members, 95%",
                metrics={"method": "how importance was measured", "repeats": "permutations per feature",
                         "min_tau": "the smallest tau"},
                artifacts={"importances": {"member": "member index (-1: the submitted model)",
                                           "feature": "feature name", "importance": "mean accuracy drop"}}),
    FindingKind("importance_spread", "standard deviation over members of the feature's permutation importance",
                "std of importance", subject="the feature's name",
                metrics={"mean_importance": "mean over members of its importance"}),
)


class RashomonSet(AnalysisPlugin):
    name = "multiplicity.rashomon_set"
    version = "3"  # 2: permutation importance by class; 3: Wilson interval for ambiguity
    family = "multiplicity"
    pillar = Pillar.verify
    description = ("Retrains the model's family over seeds, bootstrap resamples and regularisation, keeps "
                   "the models within epsilon of the best loss (the Rashomon set), and measures how much "
                   "they disagree with the model: ambiguity, discrepancy, obscurity, disagreement, viable "
                   "prediction range, Rashomon capacity; and how much their feature importances disagree.")
    Params = RashomonParams
    tasks = frozenset({"tabular-classification"})
    needs_training_data = True
    frameworks = frozenset({"sklearn", "torch"})
    seed_use = "the candidates' training seeds and bootstrap resamples, the permutations and the bootstrap intervals"
    kinds = KINDS

    def run(self, ctx: RunContext) -> None:
        params: RashomonParams = ctx.params  # type: ignore[assignment]
        x_train, y_train, x_test, y_test, classes = splits(ctx)
        reference = ctx.model.model
        members, info = rashomon_members(ctx, params, x_train, y_train, reference, x_test, y_test, classes)
        ctx.progress(1, 3)
        if len(members) < 2:
            raise ValueError(f"only {len(members)} of {info['candidates']} candidates are within epsilon "
                             f"({params.epsilon_mode} {params.epsilon}); raise epsilon or n_candidates")
        ref_model = ctx.model.handle.instance
        data = ctx.dataset.entity
        set_finding = ctx.add_finding(
            kind="rashomon_set", value=float(len(members)), n=info["candidates"], unit="members",
            statement=(f"{len(members)} of {info['candidates']} retrained models are within {params.epsilon_mode} "
                       f"epsilon {params.epsilon} of the best {params.loss_on} log loss ({info['best_loss']:.4g}) "
                       f"on {data.source_uri}"),
            metrics=info,
            artifacts={"members": pa.table({
                "member": np.arange(len(members)), "loss": [c.loss for c in members],
                "description": [json.dumps(c.description, sort_keys=True) for c in members]})},
        )
        member_scores = np.stack([class_scores(c.model, x_test, classes) for c in members])
        reference_scores = class_scores(reference, x_test, classes)
        values, points, predictions = multiplicity_metrics(reference_scores, member_scores, y_test, classes,
                                                           ctx.rng, params.n_bootstrap)
        for name, (value, ci) in values.items():
            ctx.add_finding(
                kind=name, value=value, ci=ci, n=len(y_test), unit="fraction" if "capacity" not in name else "2^bits",
                statement=f"{name.replace('_', ' ')} of {ref_model.source_uri.rsplit('/', 1)[-1]} over its "
                          f"Rashomon set of {len(members)} on {data.source_uri} is {value:.4g} "
                          f"(95% CI {ci[0]:.3g}–{ci[1]:.3g})",
                metrics={"set_size": len(members), **{k: info[k] for k in ("epsilon", "epsilon_mode", "loss_on")}},
                artifacts={"points": points, "predictions": predictions} if name == "ambiguity" else None,
            )
        ctx.progress(2, 3)
        self._members(ctx, members, set_finding)
        self._explanations(ctx, params, reference, members, x_test, y_test, classes)
        ctx.progress(3, 3)

    def _members(self, ctx: RunContext, members: list, set_finding) -> None:  # noqa: ANN001
        reference = ctx.model.handle.instance
        for index, candidate in enumerate(members):
            instance = member_instance(candidate.model, reference, index)
            if instance.id in {m.id for m in ctx.bundle.models} or instance.id == reference.id:
                continue  # two resamples gave the same weights: one instance
            ctx.bundle.models.append(instance)
            finding = ctx.add_finding(
                kind="rashomon_member", value=candidate.loss, unit="log loss", model_id=instance.id,
                statement=f"member {index} of the Rashomon set of {reference.id[:19]} (loss {candidate.loss:.4g})",
                metrics={"member": index, "reference": reference.id, **candidate.description},
            )
            ctx.bundle.links.append(FindingLink(src_id=finding.id, dst_id=set_finding.id, relation="derived_from",
                                                evidence={"reference_model": reference.id, "member_model": instance.id}))

    def _explanations(self, ctx: RunContext, params: RashomonParams, reference, members: list,  # noqa: ANN001
                      x: np.ndarray, y: np.ndarray, classes: np.ndarray) -> None:
        """Explanation multiplicity: permutation importance of each member against the reference's.

        Every model is permuted with the same shuffles (one seed drawn from the run's rng), so
        differences between importances are the models', not the shuffles'.
        """
        names = ctx.dataset.feature_names
        rng = ctx.rng
        seed = int(rng.integers(0, 2**31 - 1))
        repeats = params.importance_repeats
        ref_imp = _permutation_importance(reference, x, y, classes, repeats, seed)
        member_imp = np.stack([_permutation_importance(c.model, x, y, classes, repeats, seed) for c in members])
        taus = np.array([stats.kendalltau(ref_imp, imp).statistic for imp in member_imp])
        taus = np.nan_to_num(taus, nan=0.0)
        ci = bootstrap_ci(lambda i: float(taus[i].mean()), len(taus), rng, params.n_bootstrap)
        ctx.add_finding(
            kind="importance_kendall_tau", value=float(taus.mean()), ci=ci, n=len(taus), unit="Kendall tau",
            statement=f"members rank features like the model with mean Kendall tau {taus.mean():.3f} "
                      f"(permutation importance, {len(taus)} members)",
            metrics={"method": "permutation importance (mean accuracy drop, sklearn.inspection)",
                     "repeats": repeats, "min_tau": float(taus.min())},
            artifacts={"importances": pa.table({
                "member": np.repeat(np.arange(-1, len(members)), len(names)),
                "feature": pa.array(names * (len(members) + 1)),
                "importance": np.concatenate([ref_imp, member_imp.reshape(-1)])})},
        )
        spread = member_imp.std(axis=0)
        for name, s, mean in zip(names, spread, member_imp.mean(axis=0)):
            ctx.add_finding(kind="importance_spread", subject=name, value=float(s), n=len(members),
                            unit="std of importance",
                            statement=f"importance of `{name}` varies across the Rashomon set with std {s:.3g} "
                                      f"(mean {mean:.3g})",
                            metrics={"mean_importance": float(mean)})


class _ClassIndexPredictor:
    """A fitted model as scikit-learn's permutation importance calls it: it predicts ``classes``
    through scores aligned to them (``class_scores``), whatever classes the model itself saw."""

    def __init__(self, model, classes: np.ndarray) -> None:  # noqa: ANN001
        self.model, self.classes = model, classes

    def fit(self, x: np.ndarray, y: np.ndarray) -> _ClassIndexPredictor:
        return self  # already fitted

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.classes[class_scores(self.model, x, self.classes).argmax(1)]


def _accuracy(estimator: _ClassIndexPredictor, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(estimator.predict(x) == y))


def _permutation_importance(model, x: np.ndarray, y: np.ndarray, classes: np.ndarray, repeats: int,  # noqa: ANN001
                            seed: int) -> np.ndarray:
    """Mean accuracy drop when each column is permuted (``sklearn.inspection.permutation_importance``,
    for estimators and torch modules alike); labels are compared as values of ``classes``."""
    if not np.isin(y, classes).all():
        raise ValueError(f"labels {np.setdiff1d(y, classes).tolist()} are not among the classes {classes.tolist()}")
    result = permutation_importance(_ClassIndexPredictor(model, classes), x, y, scoring=_accuracy,
                                    n_repeats=repeats, random_state=seed)
    return np.asarray(result.importances_mean, dtype=np.float64)
