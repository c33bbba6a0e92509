"""``multiplicity.treefarms``: the exact Rashomon set of sparse decision trees, against the submitted model."""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from collections.abc import Iterator

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from modelsci.analyses.base import AnalysisPlugin, FindingKind, RunContext
from modelsci.analyses.multiplicity.metrics import POINTS, PREDICTIONS, metric_kind, multiplicity_metrics
from modelsci.analyses.multiplicity.rashomon import splits
from modelsci.schemas.entities import Pillar

__all__ = ["TreeFarms", "TreeFarmsParams"]


class TreeFarmsParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_features: int = Field(default=8, ge=1, le=20, description="Binarised features kept (median splits of the features most correlated with the label).")
    regularization: float = Field(default=0.02, gt=0, description="Penalty per leaf of the sparse trees.")
    rashomon_bound_multiplier: float = Field(default=0.05, gt=0, description="Epsilon: trees within (1 + eps) x the optimal objective.")
    max_members: int = Field(default=500, ge=2, description="Most trees taken into the metrics.")
    n_bootstrap: int = Field(default=500, ge=100, description="Bootstrap resamples (over points) for the CIs.")


class TreeFarms(AnalysisPlugin):
    name = "multiplicity.treefarms"
    version = "2"  # 2: Wilson interval for ambiguity
    family = "multiplicity"
    pillar = Pillar.verify
    description = ("The exact Rashomon set of sparse decision trees (TreeFARMS) on binarised features of the "
                   "model's training split, and its multiplicity against the submitted model's predictions: "
                   "where the data suits it (binary labels, a few informative features).")
    Params = TreeFarmsParams
    tasks = frozenset({"tabular-classification"})
    needs_training_data = True
    seed_dependent = False
    seed_use = "TreeFARMS enumerates the set exactly; the seed only draws the bootstrap intervals"
    kinds = (
        FindingKind("treefarms_set", "number of sparse decision trees whose objective (loss + regularization x "
                    "leaves) is within (1 + rashomon_bound_multiplier) x the optimum", "trees",
                    metrics={"features": "the features binarised (median splits)", "taken": "trees taken into the "
                             "metrics (at most max_members)", "regularization": "penalty per leaf",
                             "rashomon_bound_multiplier": "epsilon"}),
        *(metric_kind(name, "`treefarms`", {"set_size": "trees taken", "exact_set": "always true"},
                      {"points": POINTS, "predictions": PREDICTIONS} if name == "ambiguity" else None)
          for name in ("ambiguity", "discrepancy", "obscurity")),
    )

    def run(self, ctx: RunContext) -> None:
        import pandas as pd
        from treefarms import TREEFARMS

        params: TreeFarmsParams = ctx.params  # type: ignore[assignment]
        x_train, y_train, x_test, y_test, classes = splits(ctx)
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
        with _quiet_stdout():
            farms.fit(binarise(x_train), pd.Series(labels, name="label"))
        count = int(farms.get_tree_count())
        if count < 2:
            raise ValueError(f"TreeFARMS found {count} tree(s) within the bound; raise rashomon_bound_multiplier")
        taken = min(count, params.max_members)
        test = binarise(x_test)
        with _quiet_stdout():
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


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    """Standard output sent to /dev/null while the block runs, at the descriptor: TreeFARMS prints
    every tree it finds as JSON (from C++ and from Python) whatever its ``verbose`` says, and a
    run reports through its findings, not its output."""
    sys.stdout.flush()
    libc = ctypes.CDLL(None)
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            with contextlib.redirect_stdout(null):
                yield
            libc.fflush(None)  # C's buffered output goes to /dev/null too, not after the block
    finally:
        os.dup2(saved, 1)
        os.close(saved)
