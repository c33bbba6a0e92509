"""``interactions.metagame``: meta-attributions phi_{j->i}, how much player j shapes player i's
Shapley value. Exact through the Möbius transform for small games, nested permutation sampling
above; each row sums to the Shapley value phi_i."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from modelsci.analyses.base import AnalysisPlugin, FindingKind, RunContext
from modelsci.analyses.games.indices import meta_attributions
from modelsci.analyses.games.inputs import EXPLAINABLE_TASKS, ExplainParams, games_for
from modelsci.analyses.games.prompt_game import PROMPT_METRICS, explained_output
from modelsci.schemas.entities import Pillar

__all__ = ["MetaAttributions", "meta_table"]


def meta_table(example: int, names: list[str], meta: np.ndarray) -> pa.Table:
    n = len(names)
    i, j = np.divmod(np.arange(n * n), n)
    return pa.table({"example": np.full(n * n, example), "i": i, "j": j,
                     "name_i": [names[k] for k in i], "name_j": [names[k] for k in j],
                     "value": meta.reshape(-1)})


class MetaAttributions(AnalysisPlugin):
    name = "interactions.metagame"
    version = "1"
    family = "interactions"
    pillar = Pillar.explore
    description = ("Meta-attributions: the Shapley value of player j in the game whose value on T is "
                   "player i's Shapley value with only T present; rows sum to the Shapley values.")
    Params = ExplainParams
    tasks = EXPLAINABLE_TASKS
    seed_use = ("the nested permutations when 2^players exceeds the budget and the marginal baseline's background "
                "rows; exact values with another baseline do not change")
    kinds = (FindingKind(
        "meta_attribution", "the largest-magnitude off-diagonal meta-attribution phi_{j->i} of the example (how much "
        "player j shapes player i's Shapley value; signed)", "output units",
        subject="`example:<row>`: the explained row",
        metrics={"value_full": "f(x) with every player present", "value_empty": "f with none present",
                 "budget": "coalitions used", "exact": "whether exact (Möbius transform) or sampled",
                 "efficiency_gap": "sum of all phi_{j->i} - (value_full - value_empty); 0 when exact",
                 "model_evaluations": "forward passes made", "r2": "always null (not computed)", **PROMPT_METRICS},
        artifacts={"meta_attributions": {"example": "row", "i": "player whose Shapley value is split",
                                         "j": "player shaping it", "name_i": "name of i", "name_j": "name of j",
                                         "value": "phi_{j->i}; row i sums to i's Shapley value"}}),)

    def run(self, ctx: RunContext) -> None:
        params: ExplainParams = ctx.params  # type: ignore[assignment]
        for done, (example, game) in enumerate(games_for(ctx.model, ctx.dataset, params, ctx.rng)):
            meta, exact, used = meta_attributions(game, game.n_players, params.budget, ctx.seed)
            phi = meta.sum(1)
            off = meta - np.diag(np.diag(meta))
            i, j = np.unravel_index(np.argmax(np.abs(off)), off.shape)
            names = game.names
            ctx.add_finding(
                kind="meta_attribution", subject=f"example:{example}", value=float(off[i, j]),
                n=game.n_players, exact=exact, unit="output units",
                statement=(f"meta-attributions: in example {example}, `{names[j]}` shapes the Shapley value "
                           f"of `{names[i]}` most ({off[i, j]:+.4g} of its {phi[i]:+.4g})"),
                metrics={"value_full": game.value_full, "value_empty": game.value_empty, "budget": used,
                         "exact": exact, "efficiency_gap": float(phi.sum() - (game.value_full - game.value_empty)),
                         "model_evaluations": game.model_evaluations, "r2": None, **explained_output(game)},
                artifacts={"meta_attributions": meta_table(example, names, meta)},
            )
            ctx.progress(done + 1, params.examples)
