"""Predictive multiplicity metrics over a Rashomon set, per point and aggregated.

Inputs: the reference model's labels ``reference`` (n,), the members' labels ``members``
(m, n) (the reference is not a member), and for the score-based metrics the members' class
probabilities ``scores`` (m, n, k).

- ambiguity: share of points whose label some member flips;
- discrepancy: the largest share of points any one member flips;
- obscurity: mean over points of the share of members that flip the point;
- disagreement: 4 mu (1 - mu) per point, mu the share of members predicting the positive
  class (for k > 2 classes: mu per class, summed: 2 (1 - sum_c mu_c^2), which is 4 mu (1 - mu)
  at k = 2);
- viable prediction range: max - min over members of the true class' score;
- Rashomon capacity: the capacity C (bits) of the channel member -> class whose rows are
  the members' score vectors at the point, by Blahut-Arimoto, reported as 2^C in [1, k].

Ambiguity is a proportion of points and gets the Wilson score interval (a bootstrap gives
[0, 0] when no point flips); the other aggregates a seeded percentile bootstrap over points.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from modelsci.analyses.base import FindingKind
from modelsci.analyses.stats import bootstrap_ci, wilson_interval

__all__ = ["METRIC_VALUES", "POINTS", "PREDICTIONS", "ambiguity", "disagreement", "discrepancy", "flips", "metric_kind", "multiplicity_metrics",
           "obscurity", "rashomon_capacity", "viable_prediction_range"]

METRIC_VALUES = {
    "ambiguity": ("share of test points whose predicted label at least one member flips (differs from the "
                  "submitted model's)", "fraction"),
    "discrepancy": ("largest share of test points that any one member flips", "fraction"),
    "obscurity": ("mean over test points of the share of members that flip the point", "fraction"),
    "mean_disagreement": ("mean over test points of 2 (1 - sum_c mu_c^2), mu_c the share of members predicting "
                          "class c (4 mu (1 - mu) for two classes)", "fraction"),
    "mean_viable_prediction_range": ("mean over test points of max - min over members of the true class' score",
                                     "fraction"),
    "mean_rashomon_capacity": ("mean over test points of 2^C, C the capacity in bits of the channel whose rows are "
                               "the members' score vectors (Blahut-Arimoto), in [1, classes]", "2^bits"),
}
POINTS = {"example": "test row", "flipped_by_any": "1 when some member flips the point",
          "share_of_members_flipping": "share of members that flip it", "disagreement": "per-point disagreement",
          "viable_prediction_range": "per-point spread of the true class' score",
          "rashomon_capacity": "per-point 2^C"}
PREDICTIONS = {"example": "test row", "member": "member index", "prediction": "the member's label (as text)",
               "reference": "the submitted model's label (as text)"}


def metric_kind(name: str, subject: str, metrics: dict[str, str],
                artifacts: dict[str, dict[str, str]] | None = None) -> FindingKind:
    """The documentation of one multiplicity metric's finding."""
    value, unit = METRIC_VALUES[name]
    interval = ("Wilson score 95% interval of the proportion" if name == "ambiguity"
                else "seeded percentile bootstrap over test points, 95%")
    return FindingKind(name, value, unit, interval, subject=subject, metrics=metrics, artifacts=artifacts or {})


def flips(reference: np.ndarray, members: np.ndarray) -> np.ndarray:
    """(m, n) booleans: member j predicts another label than the reference on point i."""
    return np.asarray(members) != np.asarray(reference)[None, :]


def ambiguity(reference: np.ndarray, members: np.ndarray) -> float:
    return float(flips(reference, members).any(axis=0).mean())


def discrepancy(reference: np.ndarray, members: np.ndarray) -> float:
    return float(flips(reference, members).mean(axis=1).max())


def obscurity(reference: np.ndarray, members: np.ndarray) -> float:
    return float(flips(reference, members).mean(axis=0).mean())


def disagreement(members: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Per point; 4 mu (1 - mu) for two classes."""
    shares = np.stack([(np.asarray(members) == c).mean(axis=0) for c in classes], axis=1)  # (n, k)
    return 2.0 * (1.0 - (shares ** 2).sum(axis=1))


def viable_prediction_range(scores: np.ndarray, true_class_index: np.ndarray) -> np.ndarray:
    """Per point: the spread over members of the true class' score."""
    n = scores.shape[1]
    true = scores[:, np.arange(n), true_class_index]  # (m, n)
    return true.max(axis=0) - true.min(axis=0)


def rashomon_capacity(scores: np.ndarray, iterations: int = 200, tol: float = 1e-10) -> np.ndarray:
    """Per point: 2^C, C the capacity of the channel whose rows are the members' score vectors."""
    m, n, k = scores.shape
    out = np.empty(n)
    for i in range(n):
        out[i] = 2.0 ** _capacity_bits(np.clip(scores[:, i, :], 0.0, None), iterations, tol)
    return np.clip(out, 1.0, k)


def _capacity_bits(channel: np.ndarray, iterations: int, tol: float) -> float:
    """Blahut-Arimoto: max over input distributions p of I(X; Y) for rows P(y | x)."""
    channel = channel / channel.sum(axis=1, keepdims=True)
    m = channel.shape[0]
    p = np.full(m, 1.0 / m)
    log_channel = np.log2(np.where(channel > 0, channel, 1.0))
    capacity = 0.0
    for _ in range(iterations):
        q = p @ channel  # output distribution
        log_q = np.log2(np.where(q > 0, q, 1.0))
        divergence = np.sum(channel * (log_channel - log_q[None, :]), axis=1)  # D(P(.|x) || q), bits
        lower = float(np.log2(np.sum(p * 2.0 ** divergence)))
        upper = float(divergence.max())
        p = p * 2.0 ** divergence
        p /= p.sum()
        capacity = lower
        if upper - lower < tol:
            break
    return max(capacity, 0.0)


def multiplicity_metrics(reference_scores: np.ndarray, member_scores: np.ndarray, y: np.ndarray,
                         classes: np.ndarray, rng: np.random.Generator, n_bootstrap: int,
                         ) -> tuple[dict[str, tuple[float, tuple[float, float]]], pa.Table, pa.Table]:
    """Each metric's value and CI, the per-point table and the long-form predictions."""
    reference = classes[reference_scores.argmax(1)]
    members = classes[member_scores.argmax(2)]
    flipped = flips(reference, members)
    true_index = np.searchsorted(classes, y)
    per_point = {
        "flipped_by_any": flipped.any(0).astype(float),
        "share_of_members_flipping": flipped.mean(0),
        "disagreement": disagreement(members, classes),
        "viable_prediction_range": viable_prediction_range(member_scores, true_index),
        "rashomon_capacity": rashomon_capacity(member_scores),
    }
    stats_ = {
        "ambiguity": lambda i: float(flipped[:, i].any(0).mean()),
        "discrepancy": lambda i: float(flipped[:, i].mean(1).max()),
        "obscurity": lambda i: float(flipped[:, i].mean(0).mean()),
        "mean_disagreement": lambda i: float(per_point["disagreement"][i].mean()),
        "mean_viable_prediction_range": lambda i: float(per_point["viable_prediction_range"][i].mean()),
        "mean_rashomon_capacity": lambda i: float(per_point["rashomon_capacity"][i].mean()),
    }
    n = len(y)
    values = {name: (fn(np.arange(n)), bootstrap_ci(fn, n, rng, n_bootstrap)) for name, fn in stats_.items()
              if name != "ambiguity"}
    values = {"ambiguity": (stats_["ambiguity"](np.arange(n)), wilson_interval(int(flipped.any(0).sum()), n)), **values}
    points = pa.table({"example": np.arange(n), **per_point})
    m = members.shape[0]
    predictions = pa.table({
        "example": np.tile(np.arange(n), m), "member": np.repeat(np.arange(m), n),
        "prediction": pa.array(members.reshape(-1).tolist()).cast(pa.string()),
        "reference": pa.array(np.tile(reference, m).tolist()).cast(pa.string()),
    })
    return values, points, predictions
