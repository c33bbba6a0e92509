"""``multiplicity.rashomon_set`` and ``multiplicity.preprocessing``: how many good models
disagree with the submitted one, where, and how much the data's preparation changes that.

Findings belong to the submitted model and name the set they were computed on (its size,
epsilon, loss and split in their metrics). Each member is registered as a ModelInstance
whose base is the reference, with a ``derived_from`` link from its own finding to the set's.
Artifacts hold everything needed to recompute every metric: per-point metrics and the
members' predictions in long form (example, member, prediction, reference).
"""

from __future__ import annotations

import json
from typing import Literal

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field
from scipy import stats

from analyses.base import AnalysisPlugin, RunContext
from analyses.multiplicity import metrics
from analyses.multiplicity.rashomon import (
    build_candidates, losses, member_instance, scores_of, select, training_split,
)
from analyses.stats import bootstrap_ci
from ingest.models import CONFIG_NAME, read_json
from schemas.entities import FindingLink, Pillar

__all__ = ["Preprocessing", "RashomonSet"]


class RashomonParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n_candidates: int = Field(default=40, ge=2, description="Models retrained; those within epsilon form the set.")
    epsilon: float = Field(default=0.02, gt=0, description="How far from the best loss a member may be.")
    epsilon_mode: Literal["additive", "relative"] = Field(default="additive", description="loss <= best + eps, or <= best x (1 + eps).")
    loss_on: Literal["train", "test"] = Field(default="train", description="Split whose log loss decides membership.")
    n_bootstrap: int = Field(default=500, ge=100, description="Bootstrap resamples (over points) for the CIs.")
    epochs: int = Field(default=200, ge=1, description="Training epochs of each PyTorch MLP member.")
    importance_repeats: int = Field(default=3, ge=1, description="Permutation-importance repeats per member.")


def _framework_config(ctx: RunContext) -> tuple[str, dict]:
    handle = ctx.model.handle
    config = read_json(handle.path / CONFIG_NAME) if handle.framework == "torch" else {}
    return handle.framework, config


def _set_for(ctx: RunContext, params: RashomonParams, x_train: np.ndarray, y_train: np.ndarray,
             reference, x_test: np.ndarray, y_test: np.ndarray, classes: np.ndarray):  # noqa: ANN001, ANN202
    framework, config = _framework_config(ctx)
    candidates = build_candidates(reference, framework, config, x_train, y_train, params.n_candidates,
                                  ctx.rng, params.epochs)
    x_loss, y_loss = (x_train, y_train) if params.loss_on == "train" else (x_test, y_test)
    candidate_losses = losses([c.model for c in candidates], x_loss, y_loss, classes)
    reference_loss = float(losses([reference], x_loss, y_loss, classes)[0])
    keep, best, bound = select(candidate_losses, reference_loss, params.epsilon, params.epsilon_mode)
    members = [c for c, k in zip(candidates, keep) if k]
    for c, loss in zip(candidates, candidate_losses):
        c.loss = float(loss)
    info = {"epsilon": params.epsilon, "epsilon_mode": params.epsilon_mode, "loss": "log loss",
            "loss_on": params.loss_on, "best_loss": best, "bound": bound, "reference_loss": reference_loss,
            "candidates": len(candidates), "members": len(members)}
    return members, info


def _splits(ctx: RunContext) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train features and labels, test features and labels, and every class either split holds."""
    x_train, y_train = training_split(ctx.dataset)
    x_test, y_test = ctx.dataset.features(), ctx.dataset.labels()
    return x_train, y_train, x_test, y_test, np.unique(np.concatenate([y_train, y_test]))


def multiplicity_metrics(reference_scores: np.ndarray, member_scores: np.ndarray, y: np.ndarray,
                         classes: np.ndarray, rng: np.random.Generator, n_bootstrap: int):  # noqa: ANN201
    """Each metric's value and CI, the per-point table and the long-form predictions."""
    reference = classes[reference_scores.argmax(1)]
    members = classes[member_scores.argmax(2)]
    flips = metrics.flips(reference, members)
    true_index = np.searchsorted(classes, y)
    per_point = {
        "flipped_by_any": flips.any(0).astype(float),
        "share_of_members_flipping": flips.mean(0),
        "disagreement": metrics.disagreement(members, classes),
        "viable_prediction_range": metrics.viable_prediction_range(member_scores, true_index),
        "rashomon_capacity": metrics.rashomon_capacity(member_scores),
    }
    stats_ = {
        "ambiguity": lambda i: float(flips[:, i].any(0).mean()),
        "discrepancy": lambda i: float(flips[:, i].mean(1).max()),
        "obscurity": lambda i: float(flips[:, i].mean(0).mean()),
        "mean_disagreement": lambda i: float(per_point["disagreement"][i].mean()),
        "mean_viable_prediction_range": lambda i: float(per_point["viable_prediction_range"][i].mean()),
        "mean_rashomon_capacity": lambda i: float(per_point["rashomon_capacity"][i].mean()),
    }
    n = len(y)
    values = {name: (fn(np.arange(n)), bootstrap_ci(fn, n, rng, n_bootstrap)) for name, fn in stats_.items()}
    points = pa.table({"example": np.arange(n), **per_point})
    m = members.shape[0]
    predictions = pa.table({
        "example": np.tile(np.arange(n), m), "member": np.repeat(np.arange(m), n),
        "prediction": pa.array(members.reshape(-1).tolist()).cast(pa.string()),
        "reference": pa.array(np.tile(reference, m).tolist()).cast(pa.string()),
    })
    return values, points, predictions


class RashomonSet(AnalysisPlugin):
    name = "multiplicity.rashomon_set"
    version = "1"
    family = "multiplicity"
    pillar = Pillar.verify
    description = ("Retrains the model's family over seeds, bootstrap resamples and regularisation, keeps "
                   "the models within epsilon of the best loss (the Rashomon set), and measures how much "
                   "they disagree with the model: ambiguity, discrepancy, obscurity, disagreement, viable "
                   "prediction range, Rashomon capacity; and how much their feature importances disagree.")
    Params = RashomonParams
    tasks = frozenset({"tabular-classification"})
    frameworks = frozenset({"sklearn", "torch"})

    def run(self, ctx: RunContext) -> None:
        params: RashomonParams = ctx.params  # type: ignore[assignment]
        x_train, y_train, x_test, y_test, classes = _splits(ctx)
        reference = ctx.model.model
        members, info = _set_for(ctx, params, x_train, y_train, reference, x_test, y_test, classes)
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
        member_scores = np.stack([scores_of(c.model, x_test) for c in members])
        reference_scores = scores_of(reference, x_test)
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
        self._explanations(ctx, params, reference, members, x_test, y_test)
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
                      x: np.ndarray, y: np.ndarray) -> None:
        """Explanation multiplicity: permutation importance of each member against the reference's."""
        names = ctx.dataset.feature_names
        rng = ctx.rng
        ref_imp = _permutation_importance(reference, x, y, params.importance_repeats, rng)
        member_imp = np.stack([_permutation_importance(c.model, x, y, params.importance_repeats, rng) for c in members])
        taus = np.array([stats.kendalltau(ref_imp, imp).statistic for imp in member_imp])
        taus = np.nan_to_num(taus, nan=0.0)
        ci = bootstrap_ci(lambda i: float(taus[i].mean()), len(taus), rng, params.n_bootstrap)
        ctx.add_finding(
            kind="importance_kendall_tau", value=float(taus.mean()), ci=ci, n=len(taus), unit="Kendall tau",
            statement=f"members rank features like the model with mean Kendall tau {taus.mean():.3f} "
                      f"(permutation importance, {len(taus)} members)",
            metrics={"method": "permutation importance (accuracy drop)", "min_tau": float(taus.min())},
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


def _permutation_importance(model, x: np.ndarray, y: np.ndarray, repeats: int, rng: np.random.Generator) -> np.ndarray:  # noqa: ANN001
    """Mean accuracy drop when each column is permuted (works for estimators and torch modules)."""
    base = float((scores_of(model, x).argmax(1) == np.searchsorted(np.unique(y), y)).mean())
    out = np.zeros(x.shape[1])
    labels = np.searchsorted(np.unique(y), y)
    for j in range(x.shape[1]):
        drops = []
        for _ in range(repeats):
            shuffled = x.copy()
            shuffled[:, j] = rng.permutation(shuffled[:, j])
            drops.append(base - float((scores_of(model, shuffled).argmax(1) == labels).mean()))
        out[j] = np.mean(drops)
    return out


class PreprocessingParams(RashomonParams):
    settings: list[Literal["random_over", "random_under", "smote", "filter_correlation", "filter_wilcoxon"]] = Field(
        default=["random_over", "random_under", "smote", "filter_correlation", "filter_wilcoxon"],
        description="Data preparations compared with the untouched data.")
    alpha: float = Field(default=0.05, gt=0, lt=1, description="Feature filters keep features with p < alpha.")


class Preprocessing(AnalysisPlugin):
    name = "multiplicity.preprocessing"
    version = "1"
    family = "multiplicity"
    pillar = Pillar.verify
    description = ("Repeats the Rashomon-set study after class balancing (random over/under-sampling, "
                   "SMOTE) and feature filtering (p < alpha under a correlation or a Wilcoxon rank-sum test) "
                   "and reports each setting's multiplicity against the untouched data.")
    Params = PreprocessingParams
    tasks = frozenset({"tabular-classification"})
    frameworks = frozenset({"sklearn"})

    def run(self, ctx: RunContext) -> None:
        params: PreprocessingParams = ctx.params  # type: ignore[assignment]
        x_train, y_train, x_test, y_test, classes = _splits(ctx)
        from sklearn.base import clone

        results = {}
        settings = ["none", *params.settings]
        for done, setting in enumerate(settings):
            xs, ys, columns = _prepare(setting, x_train, y_train, params.alpha, ctx.seed)
            reference = clone(ctx.model.model).fit(xs, ys)
            members, info = _set_for(ctx, params, xs, ys, reference, x_test[:, columns], y_test, classes)
            if len(members) < 2:
                results[setting] = None
                continue
            member_scores = np.stack([scores_of(c.model, x_test[:, columns]) for c in members])
            values, _, predictions = multiplicity_metrics(scores_of(reference, x_test[:, columns]), member_scores,
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


class TreeFarmsParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_features: int = Field(default=8, ge=1, le=20, description="Binarised features kept (median splits of the features most correlated with the label).")
    regularization: float = Field(default=0.02, gt=0, description="Penalty per leaf of the sparse trees.")
    rashomon_bound_multiplier: float = Field(default=0.05, gt=0, description="Epsilon: trees within (1 + eps) x the optimal objective.")
    max_members: int = Field(default=500, ge=2, description="Most trees taken into the metrics.")
    n_bootstrap: int = Field(default=500, ge=100, description="Bootstrap resamples (over points) for the CIs.")


class TreeFarms(AnalysisPlugin):
    name = "multiplicity.treefarms"
    version = "1"
    family = "multiplicity"
    pillar = Pillar.verify
    description = ("The exact Rashomon set of sparse decision trees (TreeFARMS) on binarised features of the "
                   "model's training split, and its multiplicity against the submitted model's predictions: "
                   "where the data suits it (binary labels, a few informative features).")
    Params = TreeFarmsParams
    tasks = frozenset({"tabular-classification"})

    def run(self, ctx: RunContext) -> None:
        import pandas as pd
        from treefarms import TREEFARMS

        params: TreeFarmsParams = ctx.params  # type: ignore[assignment]
        x_train, y_train, x_test, y_test, classes = _splits(ctx)
        if len(classes) != 2:
            raise ValueError(f"TreeFARMS sets need binary labels; this dataset has {len(classes)} classes")
        names = ctx.dataset.feature_names
        strength = np.nan_to_num(np.abs([np.corrcoef(x_train[:, j], y_train)[0, 1] for j in range(x_train.shape[1])]))
        chosen = list(np.argsort(-strength)[:params.max_features])
        medians = np.median(x_train[:, chosen], axis=0)

        def binarise(x: np.ndarray) -> pd.DataFrame:
            return pd.DataFrame({f"{names[j]} <= {m:.4g}": (x[:, j] <= m).astype(int) for j, m in zip(chosen, medians)})

        labels = np.searchsorted(classes, y_train)
        farms = TREEFARMS({"regularization": params.regularization, "verbose": False,
                           "rashomon_bound_multiplier": params.rashomon_bound_multiplier})
        farms.fit(binarise(x_train), pd.Series(labels, name="label"))
        count = int(farms.get_tree_count())
        if count < 2:
            raise ValueError(f"TreeFARMS found {count} tree(s) within the bound; raise rashomon_bound_multiplier")
        taken = min(count, params.max_members)
        test = binarise(x_test)
        members = classes[np.stack([np.asarray(farms[i].predict(test)) for i in range(taken)])]
        member_scores = (members[:, :, None] == classes[None, None, :]).astype(np.float64)
        reference_scores = ctx.model.predict_array(x_test)
        values, points, predictions = multiplicity_metrics(reference_scores, member_scores, y_test, classes,
                                                           ctx.rng, params.n_bootstrap)
        data = ctx.dataset.entity.source_uri
        ctx.add_finding(kind="treefarms_set", value=float(count), n=len(y_test), exact=True, unit="trees",
                        statement=f"{count} sparse trees on {len(chosen)} binarised features of {data} are within "
                                  f"{params.rashomon_bound_multiplier:.0%} of the optimal objective (TreeFARMS)",
                        metrics={"features": [names[j] for j in chosen], "taken": taken,
                                 "regularization": params.regularization,
                                 "rashomon_bound_multiplier": params.rashomon_bound_multiplier})
        for name in ("ambiguity", "discrepancy", "obscurity"):
            value, ci = values[name]
            ctx.add_finding(kind=name, subject="treefarms", value=value, ci=ci, n=len(y_test), unit="fraction",
                            statement=f"{name} of the submitted model against the {taken} TreeFARMS trees on "
                                      f"{data} is {value:.3g} (95% CI {ci[0]:.3g}–{ci[1]:.3g})",
                            metrics={"set_size": taken, "exact_set": True},
                            artifacts={"points": points, "predictions": predictions} if name == "ambiguity" else None)
