"""Sparse interaction artifacts and the findings every interaction analysis writes.

An artifact has one row per interaction: ``players`` (sorted list of int), ``names`` (list of
string: column names, tokens, patch coordinates), ``order`` and ``value``. Each finding
records v(N), v(empty set), the budget, whether it is exact and the R² of the additive
reconstruction on held-out coalitions.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from modelsci.analyses.base import FindingKind, RunContext
from modelsci.analyses.games.evaluator import GameEvaluator
from modelsci.analyses.games.indices import Interactions, reconstruction_r2
from modelsci.analyses.games.prompt_game import PROMPT_METRICS, explained_output
from modelsci.analyses.interactions.faithfulness import FAITHFULNESS_KIND, POINTING_KIND, add_faithfulness_finding

__all__ = ["INTERACTION_KINDS", "ExampleInteractions", "add_interaction_findings", "interaction_table"]

INTERACTION_KINDS = (
    FindingKind("interactions", "the largest-magnitude interaction of order 2 or more in the example (signed; 0 "
                "when the order is 1; vision-language models: among those joining an image cell and a text player), "
                "in the explained output's units", "output units",
                subject="`example:<row>`: the explained row",
                metrics={"value_full": "f(x) with every player present", "value_empty": "f with none present",
                         "budget": "coalitions evaluated", "exact": "whether the values are exact",
                         "r2": "R² of the interactions summed over each coalition's subsets against the game, "
                               "on held-out random coalitions",
                         "model_evaluations": "forward passes made", "index": "interaction index",
                         "order": "highest order", "players": "player indices of the strongest interaction",
                         **PROMPT_METRICS},
                artifacts={"interactions": {"example": "row", "players": "sorted player indices",
                                            "names": "their names", "order": "number of players",
                                            "value": "the interaction (order 1: the player's own value)"}}),
    FindingKind("strongest_interaction", "the largest mean |interaction| over examples, among interactions of "
                "order 2 or more (identified by their players' names)", "mean |interaction|",
                metrics={"names": "the players of that interaction"}),
    FAITHFULNESS_KIND,
    POINTING_KIND,
)


@dataclass
class ExampleInteractions:
    example: int
    game: GameEvaluator
    interactions: Interactions
    r2: float


def interaction_table(example: int, names: list[str], values: dict[tuple[int, ...], float]) -> pa.Table:
    rows = [(example, list(k), [names[i] for i in k], len(k), float(v)) for k, v in sorted(values.items()) if k]
    return pa.table({
        "example": pa.array([r[0] for r in rows], pa.int64()),
        "players": pa.array([r[1] for r in rows], pa.list_(pa.int64())),
        "names": pa.array([r[2] for r in rows], pa.list_(pa.string())),
        "order": pa.array([r[3] for r in rows], pa.int64()),
        "value": pa.array([r[4] for r in rows], pa.float64()),
    })


def example_interactions(example: int, game: GameEvaluator, interactions: Interactions,
                         rng: np.random.Generator) -> ExampleInteractions:
    values = dict(interactions.values)
    values.setdefault((), game.value_empty)
    return ExampleInteractions(example, game, interactions, reconstruction_r2(values, game, game.n_players, rng))


def add_interaction_findings(ctx: RunContext, label: str, results: list[ExampleInteractions]) -> None:
    model, data = ctx.model.handle.instance, ctx.dataset.entity
    where = f"model {model.id[:19]} ({model.source_uri.rsplit('/', 1)[-1]}) on {data.source_uri}"
    by_names: dict[tuple[str, ...], list[float]] = defaultdict(list)
    for r in results:
        names = r.game.names
        higher = {k: v for k, v in r.interactions.values.items() if len(k) >= 2}
        cross_modal = getattr(r.game.masker, "cross_modal", None)
        if cross_modal is not None:  # an image-text game's headline is its strongest image-text interaction
            higher = {k: v for k, v in higher.items() if cross_modal(k)}
        strongest = max(higher.items(), key=lambda kv: abs(kv[1]), default=((), 0.0))
        shown = ", ".join(f"`{names[i]}`" for i in strongest[0]) or "none"
        ctx.add_finding(
            kind="interactions", subject=f"example:{r.example}", value=float(strongest[1]),
            n=r.game.n_players, exact=r.interactions.exact, unit="output units",
            statement=f"{label}: the strongest interaction in example {r.example} is ({shown}) at {strongest[1]:+.4g}",
            metrics={"value_full": r.game.value_full, "value_empty": r.game.value_empty,
                     "budget": r.interactions.budget, "exact": r.interactions.exact, "r2": r.r2,
                     "model_evaluations": r.game.model_evaluations, "index": r.interactions.index,
                     "order": r.interactions.order, "players": list(strongest[0]), **explained_output(r.game)},
            artifacts={"interactions": interaction_table(r.example, names, r.interactions.values)},
        )
        for k, v in higher.items():
            by_names[tuple(names[i] for i in k)].append(abs(v))
    add_faithfulness_finding(ctx, label, [(r.example, r.game, r.interactions.values) for r in results])
    if by_names:
        top, values = max(by_names.items(), key=lambda kv: float(np.mean(kv[1])))
        ctx.add_finding(
            kind="strongest_interaction", value=float(np.mean(values)), n=len(values),
            unit="mean |interaction|",
            statement=f"{label}: ({', '.join(f'`{t}`' for t in top)}) is the strongest interaction of {where} "
                      f"(mean |value| {np.mean(values):.4g} over {len(values)} example(s))",
            metrics={"names": list(top)},
        )
