"""Values and interactions of a game: through shapiq where it has them, by hand where not.

- ``shapley_interactions``: any shapiq index (SV, k-SII, STII, FSII, SII, FBII, BV) up to
  order 3, exact (shapiq's ExactComputer over all 2^n coalitions) when 2^n fits the budget,
  else shapiq's approximator for the index.
- ``weighted_banzhaf``: faithful weighted Banzhaf interactions of order 2 for a weight
  p in (0, 1), the weighted least-squares fit of the game by an order-2 additive model under
  the kernel p^|S| (1-p)^(n-|S|). shapiq has only p = 1/2 (FBII). X^T W X is accumulated in
  chunks, so memory stays (interactions)^2, never budget x interactions.
- ``meta_attributions``: phi_{j->i}, the Shapley value of player j in the game whose value on
  T is player i's Shapley value in the game restricted to T. Exactly, through the Möbius
  transform m of v: phi_{j->i} = sum over S containing i and j of m(S) / |S|^2 (each row sums
  to phi_i). Sampled, by nested permutations sharing the evaluator's cache.
- ``reconstruction_r2``: how well the interactions, summed over the subsets of a coalition,
  reproduce the game on held-out random coalitions.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["INDICES", "Interactions", "all_coalitions", "meta_attributions", "moebius",
           "reconstruction_r2", "shapley_interactions", "weighted_banzhaf"]

Game = Callable[[np.ndarray], np.ndarray]
INDICES = ("SV", "BV", "k-SII", "STII", "FSII", "SII", "FBII")


@dataclass
class Interactions:
    """Interaction values by sorted player tuple (the empty tuple is the baseline term)."""

    values: dict[tuple[int, ...], float]
    index: str
    order: int
    exact: bool
    budget: int

    def of_order(self, order: int) -> dict[tuple[int, ...], float]:
        return {k: v for k, v in self.values.items() if len(k) == order}

    def singletons(self, n: int) -> np.ndarray:
        return np.array([self.values.get((i,), 0.0) for i in range(n)])


def all_coalitions(n: int) -> np.ndarray:
    """Every coalition of n players as rows of a boolean matrix; row s is the bits of s."""
    return ((np.arange(2 ** n)[:, None] >> np.arange(n)[None, :]) & 1).astype(bool)


def shapley_interactions(game: Game, n: int, index: str, order: int, budget: int,
                         seed: int = 0) -> Interactions:
    """shapiq's values of ``index`` up to ``order``: exact if 2^n <= budget, else approximated."""
    import shapiq

    if index not in INDICES:
        raise ValueError(f"unknown index {index!r}; choose one of {INDICES}")
    order = 1 if index in ("SV", "BV") else order
    if 2 ** n <= budget:
        result = shapiq.ExactComputer(game, n_players=n)(index=index, order=order)
        exact, used = True, 2 ** n
    else:
        terms = sum(math.comb(n, k) for k in range(order + 1))
        if budget < 2 * terms:
            raise ValueError(f"a budget of {budget} coalitions cannot estimate {index} up to order {order} for "
                             f"{n} players ({terms} terms): give at least {2 * terms}, or lower the order")
        approximator = _approximator(index, n, order, seed)
        result = approximator.approximate(budget=budget, game=game)
        exact, used = False, budget
    values = {tuple(sorted(int(p) for p in k)): float(v) for k, v in result.dict_values.items()}
    return Interactions(values, index, order, exact, used)


def _approximator(index: str, n: int, order: int, seed: int):  # noqa: ANN202 - shapiq's own types
    import shapiq

    if index == "SV":
        return shapiq.KernelSHAP(n, random_state=seed)
    if index == "FSII":
        return shapiq.RegressionFSII(n, max_order=order, random_state=seed)
    if index == "FBII":
        return shapiq.RegressionFBII(n, max_order=order, random_state=seed)
    if index == "STII":
        return shapiq.SVARMIQ(n, max_order=order, index="STII", random_state=seed)
    if index == "BV":
        return shapiq.SVARMIQ(n, max_order=1, index="BV", random_state=seed)
    return shapiq.KernelSHAPIQ(n, max_order=order, index=index, random_state=seed)


def _pair_features(coalitions: np.ndarray, order: int) -> np.ndarray:
    """Design matrix of the order-``order`` additive model: 1, s_i, s_i s_j (, s_i s_j s_k)."""
    c = coalitions.astype(np.float64)
    n = c.shape[1]
    columns = [np.ones((len(c), 1)), c]
    for k in range(2, order + 1):
        members = np.array(list(itertools.combinations(range(n), k)), dtype=np.intp).reshape(-1, k)
        product = c[:, members[:, 0]]
        for j in range(1, k):  # every k-subset's product at once
            product = product * c[:, members[:, j]]
        columns.append(product)
    return np.concatenate(columns, axis=1)


def _subsets_up_to(n: int, order: int) -> list[tuple[int, ...]]:
    return [t for k in range(order + 1) for t in itertools.combinations(range(n), k)]


def weighted_banzhaf(game: Game, n: int, p: float, budget: int, seed: int = 0, *,
                     order: int = 2, chunk: int = 2048,
                     sample: Callable[[np.random.Generator, int], np.ndarray] | None = None) -> Interactions:
    """Faithful weighted Banzhaf interactions: exact over all coalitions if 2^n <= budget, else
    on ``budget`` coalitions drawn from the kernel (each player present with probability p).

    ``sample(rng, m)`` draws m coalitions instead (e.g. a product of the two sides of a pair).
    """
    if not 0 < p < 1:
        raise ValueError(f"p must lie in (0, 1), got {p}")
    terms = _subsets_up_to(n, order)
    xtx = np.zeros((len(terms), len(terms)))
    xty = np.zeros(len(terms))
    exact = 2 ** n <= budget
    rng = np.random.default_rng(seed)
    total = 2 ** n if exact else budget
    for start in range(0, total, chunk):
        size = min(chunk, total - start)
        if exact:
            s = np.arange(start, start + size)
            coalitions = ((s[:, None] >> np.arange(n)[None, :]) & 1).astype(bool)
            sizes = coalitions.sum(1)
            weights = p ** sizes * (1 - p) ** (n - sizes)
        else:
            coalitions = sample(rng, size) if sample else rng.random((size, n)) < p
            weights = np.ones(size)  # drawn from the kernel already
        x = _pair_features(coalitions, order)
        y = game(coalitions)
        xw = x * weights[:, None] if exact else x  # sampled rows weigh 1: x.T @ x lets numpy use syrk
        xtx += xw.T @ x
        xty += xw.T @ y
    from scipy.linalg import lstsq

    # The minimum-norm solution, as numpy's SVD-based lstsq gives, by a pivoted QR: 2-3x faster
    # on the 2,000-term systems of image-text games.
    beta = lstsq(xtx, xty, lapack_driver="gelsy", check_finite=False)[0]
    return Interactions({t: float(b) for t, b in zip(terms, beta)}, f"WBII(p={p})", order, exact, total)


def moebius(values: np.ndarray, n: int) -> np.ndarray:
    """Möbius transform of a game given on all 2^n coalitions (bit order of ``all_coalitions``)."""
    m = np.array(values, dtype=np.float64)
    for i in range(n):
        bit = 1 << i
        idx = np.arange(2 ** n)
        has = (idx & bit) != 0
        m[has] -= m[idx[has] ^ bit]
    return m


def meta_attributions(game: Game, n: int, budget: int, seed: int = 0) -> tuple[np.ndarray, bool, int]:
    """phi_{j->i} as an (i, j) matrix, whether exact, and the coalitions used."""
    if 2 ** n <= budget:
        v = game(all_coalitions(n))
        m = moebius(v, n)
        sizes = np.array([bin(s).count("1") for s in range(2 ** n)])
        meta = np.zeros((n, n))
        weight = np.where(sizes > 0, m / np.maximum(sizes, 1) ** 2, 0.0)
        members = all_coalitions(n).astype(np.float64)
        meta = (members * weight[:, None]).T @ members  # sum over S of w(S) [i in S][j in S]
        return meta, True, 2 ** n
    return _meta_sampled(game, n, budget, np.random.default_rng(seed))


def _shapley_in_subgame(game: Game, members: np.ndarray, order: np.ndarray, n: int) -> np.ndarray:
    """Marginal contributions along ``order`` (a permutation of ``members``): one Shapley sample."""
    rows = np.zeros((len(order) + 1, n), dtype=bool)
    for k, player in enumerate(order):
        rows[k + 1] = rows[k]
        rows[k + 1, player] = True
    values = game(rows)
    phi = np.zeros(n)
    phi[order] = np.diff(values)
    return phi


def _meta_sampled(game: Game, n: int, budget: int, rng: np.random.Generator) -> tuple[np.ndarray, bool, int]:
    """Nested permutation sampling: outer permutations for j, coupled inner ones for phi_i."""
    meta = np.zeros((n, n))
    counts = np.zeros(n)
    used = 0
    while used < budget:
        outer = rng.permutation(n)
        for k, j in enumerate(outer):
            before = outer[:k]
            with_j = outer[:k + 1]
            inner = rng.permutation(with_j)
            phi_with = _shapley_in_subgame(game, with_j, inner, n)
            phi_without = _shapley_in_subgame(game, before, inner[inner != j], n)
            meta[:, j] += phi_with - phi_without
            counts[j] += 1
            used += 2 * (k + 1) + 1
    return meta / np.maximum(counts, 1)[None, :], False, used


def reconstruction_r2(interactions: dict[tuple[int, ...], float], game: Game, n: int,
                      rng: np.random.Generator, samples: int = 64) -> float:
    """R² of v(S) ~ sum of the interactions of subsets of S, on random held-out coalitions."""
    coalitions = rng.random((samples, n)) < 0.5
    truth = game(coalitions)
    predicted = np.array([sum(v for t, v in interactions.items() if all(c[i] for i in t))
                          for c in coalitions])
    spread = np.sum((truth - truth.mean()) ** 2)
    if spread == 0:
        return 1.0 if np.allclose(truth, predicted) else 0.0
    return float(1 - np.sum((truth - predicted) ** 2) / spread)
