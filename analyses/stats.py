"""Statistics shared by analyses: seeded bootstrap confidence intervals."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["bootstrap_ci"]


def bootstrap_ci(statistic: Callable[[np.ndarray], float], n: int, rng: np.random.Generator,
                 n_resamples: int = 1000, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(indices)`` over rows resampled with replacement.

    Resamples where the statistic is undefined (it returns NaN, e.g. ROC-AUC on one class) are
    dropped; if none is defined the interval is (NaN, NaN).
    """
    values = np.array([statistic(rng.integers(0, n, n)) for _ in range(n_resamples)], dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    alpha = (1 - level) / 2
    low, high = np.quantile(values, [alpha, 1 - alpha])
    return float(low), float(high)
