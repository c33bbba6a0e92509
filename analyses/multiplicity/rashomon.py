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
from typing import Any

import numpy as np
import torch
from sklearn.base import clone
from sklearn.metrics import log_loss

from ingest.models import skops_parameter_count
from schemas.entities import ModelInstance
from schemas.identity import skops_hash, tensor_hash_of_arrays

__all__ = ["Candidate", "build_candidates", "losses", "member_instance", "scores_of", "select", "training_split"]


@dataclass
class Candidate:
    model: Any              # a fitted estimator, or a torch module reading raw features
    description: dict[str, Any]
    loss: float = float("nan")


def training_split(dataset: Any) -> tuple[np.ndarray, np.ndarray]:
    """The train split behind an ``sklearn://`` test split (same seed and share)."""
    from ingest.datasets import resolve_dataset
    from schemas.manifest import DatasetSpec

    entity = dataset.entity
    split = entity.features.get("split")
    if not entity.source_uri.startswith("sklearn://") or split is None:
        raise ValueError("a Rashomon set retrains the model, so it needs the training split: use an "
                         "sklearn:// dataset (its seeded train/test split is recorded)")
    spec = DatasetSpec(source=entity.source_uri, split="train", test_size=split["test_size"],
                       split_seed=split["random_state"], columns={"features": dataset.feature_names,
                                                                   "label": dataset.roles["label"]})
    train = resolve_dataset(spec, "tabular-classification")
    return train.features(), train.labels()


def scores_of(model: Any, x: np.ndarray) -> np.ndarray:
    """Class probabilities (rows x classes) of a candidate or of the loaded reference."""
    if isinstance(model, torch.nn.Module):
        with torch.no_grad():
            out = model(torch.as_tensor(x, dtype=torch.float32))
        return torch.softmax(out, 1).double().numpy()
    return np.asarray(model.predict_proba(x), dtype=np.float64)


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
    from ingest.architectures import MLP

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
    return np.array([log_loss(y, np.clip(scores_of(m, x), 1e-12, 1), labels=classes) for m in models])


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

