"""Building a Rashomon set: retrain the submitted model's family, keep what is within epsilon.

Candidates are the reference model refit (scikit-learn: ``clone``; PyTorch MLPs: a fresh
module from the same config) on bootstrap resamples of the training split, over seeds and,
where the estimator has one, a regularisation strength scaled by 1/2, 1 and 2. A candidate
joins the set when its loss (log loss, on the train or the test split) is within epsilon of
the best model's: ``additive`` (loss <= best + epsilon) or ``relative`` (loss <= best x (1 +
epsilon)). The reference itself is never a member.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from sklearn.base import clone
from sklearn.metrics import log_loss

from modelsci.analyses.base import RunContext
from modelsci.ingest.architectures import CONFIG_NAME
from modelsci.ingest.loading import named_columns
from modelsci.ingest.models import read_json, skops_parameter_count
from modelsci.schemas.entities import ModelInstance
from modelsci.schemas.identity import skops_hash, tensor_hash_of_arrays

__all__ = ["Candidate", "RashomonParams", "build_candidates", "class_scores", "losses", "member_instance",
           "rashomon_members", "scores_of", "select", "splits"]


@dataclass
class Candidate:
    model: Any              # a fitted estimator, or a torch module reading raw features
    description: dict[str, Any]
    loss: float = float("nan")


def scores_of(model: Any, x: np.ndarray) -> np.ndarray:
    """Class probabilities (rows x classes) of a candidate or of the loaded reference."""
    if isinstance(model, torch.nn.Module):
        with torch.no_grad():
            out = model(torch.as_tensor(x, dtype=torch.float32))
        return torch.softmax(out, 1).double().numpy()
    return np.asarray(model.predict_proba(named_columns(model, x)), dtype=np.float64)


def class_scores(model: Any, x: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Scores (rows x len(classes)) whose column j is ``classes[j]``, whichever classes the model saw.

    A scikit-learn estimator's columns follow its own ``classes_`` (a member fit on a resample
    that lacks a class has fewer): they are put in the columns of those classes, the others
    score 0. A torch module's output column j is class j of ``classes``.
    """
    scores = scores_of(model, x)
    own = getattr(model, "classes_", None)
    if own is None:
        if scores.shape[1] != len(classes):
            raise ValueError(f"the model scores {scores.shape[1]} classes, the data has {len(classes)}")
        return scores
    columns = np.searchsorted(classes, own)
    if np.any(columns >= len(classes)) or not np.array_equal(classes[np.minimum(columns, len(classes) - 1)], own):
        raise ValueError(f"the model predicts classes {own.tolist()} that are not all in the data's {classes.tolist()}")
    out = np.zeros((len(x), len(classes)))
    out[:, columns] = scores
    return out


def _regularisation(estimator: Any) -> tuple[str, float] | None:
    params = estimator.get_params()
    for name in ("C", "alpha"):
        for key, value in params.items():
            if (key == name or key.endswith(f"__{name}")) and isinstance(value, float | int) and not isinstance(value, bool):
                return key, float(value)
    return None


def build_candidates(reference: Any, framework: str, config: dict[str, Any], x: np.ndarray, y: np.ndarray,
                     n_candidates: int, rng: np.random.Generator, epochs: int = 200) -> list[Candidate]:
    candidates = []
    scales = (0.5, 1.0, 2.0)
    for k in range(n_candidates):
        seed = int(rng.integers(0, 2**31 - 1))
        rows = np.random.default_rng(seed).integers(0, len(x), len(x))
        scale = scales[k % len(scales)]
        if framework == "sklearn":
            model = clone(reference)
            description: dict[str, Any] = {"seed": seed, "bootstrap": True}
            reg = _regularisation(model)
            if reg is not None:
                model.set_params(**{reg[0]: reg[1] * scale})
                description[reg[0]] = reg[1] * scale
            if "random_state" in model.get_params():
                model.set_params(random_state=seed)
            model.fit(x[rows], y[rows])
        elif framework == "torch" and config.get("architecture") == "mlp":
            model = _train_mlp(config["args"], x[rows], y[rows], seed, epochs)
            description = {"seed": seed, "bootstrap": True, "epochs": epochs}
        else:
            raise ValueError(f"cannot retrain a {framework} model of architecture {config.get('architecture')!r}; "
                             "Rashomon sets support scikit-learn estimators and modelsci MLPs")
        candidates.append(Candidate(model, description))
    return candidates


def _train_mlp(args: dict[str, Any], x: np.ndarray, y: np.ndarray, seed: int, epochs: int) -> torch.nn.Module:
    from modelsci.ingest.architectures import MLP

    torch.manual_seed(seed)
    mean, std = x.mean(0), x.std(0) + 1e-12
    model = MLP(**args).double()
    xs, ys = torch.tensor((x - mean) / std), torch.tensor(y.astype(np.int64))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-4)
    for _ in range(epochs):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(xs), ys).backward()
        opt.step()
    first = model.net[0]
    with torch.no_grad():  # fold the standardisation in: the member reads raw features
        first.bias -= first.weight @ torch.tensor(mean / std)
        first.weight /= torch.tensor(std)
    return model.float().eval()


def losses(models: list[Any], x: np.ndarray, y: np.ndarray, classes: np.ndarray) -> np.ndarray:
    return np.array([log_loss(y, np.clip(class_scores(m, x, classes), 1e-12, 1), labels=classes) for m in models])


def select(candidate_losses: np.ndarray, reference_loss: float, epsilon: float, mode: str) -> tuple[np.ndarray, float, float]:
    """Which candidates are within epsilon of the best loss (the reference counts for the best)."""
    best = float(min(candidate_losses.min(), reference_loss))
    bound = best + epsilon if mode == "additive" else best * (1 + epsilon)
    return candidate_losses <= bound, best, bound


def member_instance(model: Any, reference: ModelInstance, index: int) -> ModelInstance:
    """A member as a ModelInstance, identified by its own weights, with the reference as its base."""
    if isinstance(model, torch.nn.Module):
        model_id = tensor_hash_of_arrays(model.state_dict())
        count = sum(p.numel() for p in model.parameters())
    else:
        import skops.io as sio

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "member.skops"
            sio.dump(model, path)
            model_id = skops_hash(path)
            count = skops_parameter_count(path)
    return ModelInstance(
        id=model_id, source_uri=f"modelsci-rashomon://{reference.id.removeprefix('sha256:')[:16]}/{index}",
        family=reference.family, architecture=reference.architecture, task=reference.task,
        modality=reference.modality, framework=reference.framework, parameter_count=count,
        base_model=reference.source_uri, base_model_id=reference.id, tags=["rashomon-member"],
        card={"derived_from": reference.id, "how": "retrained on a bootstrap resample of the training split"},
    )


class RashomonParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n_candidates: int = Field(default=40, ge=2, description="Models retrained; those within epsilon form the set.")
    epsilon: float = Field(default=0.02, gt=0, description="How far from the best loss a member may be.")
    epsilon_mode: Literal["additive", "relative"] = Field(default="additive", description="loss <= best + eps, or <= best x (1 + eps).")
    loss_on: Literal["train", "test"] = Field(default="train", description="Split whose log loss decides membership.")
    n_bootstrap: int = Field(default=500, ge=100, description="Bootstrap resamples (over points) for the CIs.")
    epochs: int = Field(default=200, ge=1, description="Training epochs of each PyTorch MLP member.")
    importance_repeats: int = Field(default=3, ge=1, description="Permutation-importance repeats per member.")


def _framework_config(ctx: RunContext) -> tuple[str, dict[str, Any]]:
    handle = ctx.model.handle
    config = read_json(handle.path / CONFIG_NAME) if handle.framework == "torch" else {}
    return handle.framework, config


def rashomon_members(ctx: RunContext, params: RashomonParams, x_train: np.ndarray, y_train: np.ndarray,
                     reference: Any, x_test: np.ndarray, y_test: np.ndarray, classes: np.ndarray,
                     ) -> tuple[list[Candidate], dict[str, Any]]:
    """The candidates within epsilon of the best loss (the set), and how the set was chosen."""
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


def splits(ctx: RunContext) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train features and labels, test features and labels, and every class either split holds."""
    if ctx.train is None:
        raise ValueError("a Rashomon set retrains the model, so it needs the training split: use an "
                         "sklearn:// dataset (its seeded train/test split is recorded)")
    x_train, y_train = ctx.train.features(), ctx.train.labels()
    x_test, y_test = ctx.dataset.features(), ctx.dataset.labels()
    return x_train, y_train, x_test, y_test, np.unique(np.concatenate([y_train, y_test]))
