"""The findings every attribution method writes, so methods compare on the same terms.

Per example: the attributions (artifact ``attributions``: example, feature, name, value) and
the completeness gap ``sum(phi) - (f(x) - f(baseline))``. Per dataset: each feature's mean
|phi| with a bootstrap 95% CI over examples, the most important feature, and faithfulness:
deletion and insertion curves (remove / add features from the most attributed down) and
their areas, evaluated through the same masking as the games.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from modelsci.analyses.base import FindingKind, RunContext
from modelsci.analyses.games.evaluator import GameEvaluator
from modelsci.analyses.games.indices import reconstruction_r2
from modelsci.analyses.games.prompt_game import PROMPT_METRICS, explained_output
from modelsci.analyses.interactions.faithfulness import FAITHFULNESS_KIND, POINTING_KIND, add_faithfulness_finding
from modelsci.analyses.stats import bootstrap_ci

__all__ = ["ATTRIBUTION_KINDS", "ExampleAttribution", "add_attribution_findings", "faithfulness_curves"]

_EXAMPLE_METRICS = {
    "value_full": "f(x): the explained output with every feature present",
    "value_empty": "f(baseline): the output with every feature missing",
    "completeness_gap": "sum of attributions - (value_full - value_empty); 0 for complete methods",
    "budget": "coalitions evaluated (0 for gradient methods)", "exact": "whether the values are exact",
    "r2": "R² of v(empty) + sum of attributions against the game on held-out random coalitions",
    "model_evaluations": "forward passes the game evaluator made", "method": "the attribution method",
    **PROMPT_METRICS,
}
_DATASET_LEVEL = "mean over explained examples of |attribution|"

ATTRIBUTION_KINDS = (
    FindingKind("attribution", "the largest-magnitude attribution of the example (signed), in the explained "
                "output's units (a class probability, or the regression output)", "output units",
                subject="`example:<row>`: the explained row", metrics=_EXAMPLE_METRICS,
                artifacts={"attributions": {"example": "row", "feature": "player index", "name": "player name "
                                            "(column, token or patch)", "value": "attribution"}}),
    FindingKind("feature_importance", f"{_DATASET_LEVEL} of the feature", "mean |attribution|",
                "seeded percentile bootstrap over examples, 95% (none with one example)",
                subject="the feature's (player's) name", metrics={"method": "the attribution method"}),
    FindingKind("most_important_feature", f"the largest {_DATASET_LEVEL} over features", "mean |attribution|",
                "that feature's bootstrap interval", metrics={"feature": "its name", "method": "the method"}),
    FindingKind("deletion_auc", "mean over examples of the area under the output as the most attributed "
                "features are removed first (x: share removed, 0..1; trapezoid rule); lower is more faithful",
                "output x fraction", metrics={"insertion_auc": "the insertion area", "method": "the method"},
                artifacts={"curves": {"example": "row", "step": "features removed/added", "fraction": "step / n",
                                      "deletion": "output after removing", "insertion": "output after adding"}},
                lower_is_better=True),
    FindingKind("insertion_auc", "the same area as the most attributed features are added first, from the "
                "baseline; higher is more faithful", "output x fraction",
                metrics={"deletion_auc": "the deletion area", "method": "the method"}),
    FAITHFULNESS_KIND,
    POINTING_KIND,
)


@dataclass
class ExampleAttribution:
    example: int
    names: list[str]
    phi: np.ndarray
    value_full: float
    value_empty: float
    budget: int
    exact: bool
    r2: float | None
    model_evaluations: int

    @classmethod
    def of(cls, example: int, game: GameEvaluator, phi: np.ndarray, rng: np.random.Generator, *,
           budget: int = 0, exact: bool = False) -> ExampleAttribution:
        """An example's attributions, judged by how well v(empty) + sum of phi reproduces the game."""
        additive = {(): game.value_empty, **{(i,): float(v) for i, v in enumerate(phi)}}
        return cls(example, game.names, np.asarray(phi, dtype=np.float64), game.value_full, game.value_empty,
                   budget, exact, reconstruction_r2(additive, game, game.n_players, rng), game.model_evaluations)


def faithfulness_curves(game: GameEvaluator, phi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Output after deleting (inserting) the k most attributed players, k = 0..n."""
    order = np.argsort(-phi, kind="stable")
    n = len(phi)
    present = np.zeros((n + 1, n), dtype=bool)
    for k in range(1, n + 1):
        present[k] = present[k - 1]
        present[k, order[k - 1]] = True
    insertion = game(present)
    deletion = game(~present)
    return deletion, insertion


def _auc(curve: np.ndarray) -> float:
    """Area under a curve sampled at evenly spaced fractions 0..1 (trapezoid rule)."""
    return float(np.trapezoid(curve, dx=1 / (len(curve) - 1))) if len(curve) > 1 else float(curve[0])


def add_attribution_findings(ctx: RunContext, method: str, results: list[ExampleAttribution],
                             games: dict[int, GameEvaluator], rng: np.random.Generator | None = None) -> None:
    """The findings of ``ATTRIBUTION_KINDS``; ``rng`` draws the bootstrap (default: the run's)."""
    model, data = ctx.model.handle.instance, ctx.dataset.entity
    where = f"model {model.id[:19]} ({model.source_uri.rsplit('/', 1)[-1]}) on {data.source_uri}"
    by_name: dict[str, list[float]] = defaultdict(list)
    curves = []
    for r in results:
        gap = float(r.phi.sum() - (r.value_full - r.value_empty))
        top = int(np.argmax(np.abs(r.phi)))
        table = pa.table({"example": [r.example] * len(r.phi), "feature": list(range(len(r.phi))),
                          "name": r.names, "value": r.phi.astype(np.float64)})
        ctx.add_finding(
            kind="attribution", subject=f"example:{r.example}", value=float(r.phi[top]), n=len(r.phi),
            exact=r.exact, unit="output units",
            statement=(f"{method}: in example {r.example}, `{r.names[top]}` moves the output most "
                       f"({r.phi[top]:+.4g}); sum of attributions {r.phi.sum():.4g} vs "
                       f"f(x) - f(baseline) {r.value_full - r.value_empty:.4g}"),
            metrics={"value_full": r.value_full, "value_empty": r.value_empty, "completeness_gap": gap,
                     "budget": r.budget, "exact": r.exact, "r2": r.r2, "model_evaluations": r.model_evaluations,
                     "method": method, **explained_output(games.get(r.example))},
            artifacts={"attributions": table},
        )
        for name, value in zip(r.names, r.phi):
            by_name[name].append(abs(float(value)))
        if r.example in games:
            deletion, insertion = faithfulness_curves(games[r.example], r.phi)
            curves.append((r.example, deletion, insertion))
    add_faithfulness_finding(ctx, method, [(r.example, games[r.example], {(i,): float(v) for i, v in enumerate(r.phi)})
                                           for r in results if r.example in games])
    rng = rng or ctx.rng
    importance = {}
    for name, values in by_name.items():
        arr = np.array(values)
        ci = bootstrap_ci(lambda i: float(arr[i].mean()), len(arr), rng, 1000) if len(arr) > 1 else None
        importance[name] = (float(arr.mean()), ci, len(arr))
        ctx.add_finding(kind="feature_importance", subject=name, value=float(arr.mean()), ci=ci,
                        n=len(arr), unit="mean |attribution|",
                        statement=f"{method}: mean |attribution| of `{name}` for {where} is {arr.mean():.4g}",
                        metrics={"method": method})
    top_name, (top_value, top_ci, top_n) = max(importance.items(), key=lambda kv: kv[1][0])
    ci_text = f", 95% CI {top_ci[0]:.3g}–{top_ci[1]:.3g}" if top_ci else ""
    ctx.add_finding(kind="most_important_feature", subject="", value=top_value, ci=top_ci, n=top_n,
                    unit="mean |attribution|",
                    statement=f"`{top_name}` is the most important feature of {where} by {method} "
                              f"(mean |phi| {top_value:.3g}{ci_text})",
                    metrics={"feature": top_name, "method": method})
    if curves:
        rows = [(e, k, k / (len(d) - 1), float(d[k]), float(ins[k])) for e, d, ins in curves for k in range(len(d))]
        table = pa.table(dict(zip(["example", "step", "fraction", "deletion", "insertion"], map(list, zip(*rows)))))
        deletion_auc = float(np.mean([_auc(d) for _, d, _ in curves]))
        insertion_auc = float(np.mean([_auc(i) for _, _, i in curves]))
        ctx.add_finding(kind="deletion_auc", value=deletion_auc, n=len(curves), unit="output x fraction",
                        statement=f"{method}: deleting the most attributed features first, the output's "
                                  f"area under the curve is {deletion_auc:.4g} (lower is more faithful)",
                        metrics={"insertion_auc": insertion_auc, "method": method},
                        artifacts={"curves": table})
        ctx.add_finding(kind="insertion_auc", value=insertion_auc, n=len(curves), unit="output x fraction",
                        statement=f"{method}: inserting the most attributed features first, the output's "
                                  f"area under the curve is {insertion_auc:.4g} (higher is more faithful)",
                        metrics={"deletion_auc": deletion_auc, "method": method})
