"""From a run's model and dataset to one game per explained example.

The parameters every game-theoretic and attribution analysis shares live here
(``ExplainParams``), and ``games_for`` picks the masker that fits the model: tabular
columns, text tokens, the tokens of a sentence pair, or the cells of an image's patch grid.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from modelsci.analyses.games.evaluator import GameEvaluator
from modelsci.analyses.games.maskers import (
    ImageMasker,
    PairEncoderMasker,
    TabularMasker,
    TextClassifierMasker,
    baseline_rows,
)

__all__ = ["EXPLAINABLE_TASKS", "ExplainParams", "games_for", "image_shape"]

EXPLAINABLE_TASKS = frozenset({"tabular-classification", "tabular-regression", "text-classification",
                               "image-classification", "sentence-similarity"})


class ExplainParams(BaseModel):
    """Which examples to explain and what a missing player means."""

    model_config = ConfigDict(extra="forbid")
    examples: int = Field(default=5, ge=1, description="Explain the first N rows of the dataset.")
    budget: int = Field(default=4096, ge=8, description="Most coalitions to evaluate per example; exact when 2^players fits.")
    target: int | Literal["predicted"] = Field(default="predicted", description="Class whose probability is explained.")
    baseline: Literal["zeros", "mean", "marginal", "reference"] = Field(default="mean", description="Tabular: value a missing column takes.")
    reference: list[float] | None = Field(default=None, description="Tabular: the row for baseline 'reference'.")
    n_background: int = Field(default=32, ge=1, description="Tabular, baseline 'marginal': background rows averaged over.")
    text_mode: Literal["remove", "mask"] = Field(default="remove", description="Text: drop a missing token via the attention mask, or replace it by the mask token.")
    patch: int = Field(default=2, ge=1, description="Image: side of a patch-grid cell in pixels.")
    image_baseline: Literal["zeros", "mean", "blur"] = Field(default="zeros", description="Image: what a missing cell shows.")
    image_shape: list[int] | None = Field(default=None, min_length=3, max_length=3, description="Image: (C, H, W) when the model does not say.")
    batch_size: int | None = Field(default=None, ge=1, description="Masked inputs per forward pass (halved on out-of-memory); default 128 on a CPU, 2048 on a GPU.")


def image_shape(model: Any, params: ExplainParams) -> tuple[int, int, int] | None:
    shape = params.image_shape or getattr(model.model, "image_shape", None)
    return tuple(shape) if shape else None  # type: ignore[return-value]


def games_for(model: Any, dataset: Any, params: ExplainParams, rng: np.random.Generator) -> Iterator[tuple[int, GameEvaluator]]:
    """(row index, game) for each explained example."""
    rows = range(min(params.examples, dataset.table.num_rows))
    # CPUs run transformer batches fastest small (cache-sized); GPUs want them large.
    batch = params.batch_size or (2048 if str(model.device).startswith("cuda") else 128)
    framework, task = model.handle.framework, model.task
    if framework == "sentence-transformers":
        a, b = dataset.texts("text"), dataset.texts("text_pair")
        for i in rows:
            yield i, GameEvaluator(PairEncoderMasker(model, a[i], b[i]), batch)
    elif framework == "transformers":
        texts = dataset.texts("text")
        pairs = dataset.texts("text_pair") if "text_pair" in dataset.roles else None
        for i in rows:
            masker = TextClassifierMasker(model, texts[i], pairs[i] if pairs else None, params.text_mode, params.target)
            yield i, GameEvaluator(masker, batch)
    elif task == "image-classification":
        shape = image_shape(model, params)
        if shape is None:
            raise ValueError("image models need image_shape (C, H, W) in the analysis' params")
        x = dataset.features()
        for i in rows:
            yield i, GameEvaluator(ImageMasker(model, x[i], shape, params.patch, params.image_baseline, params.target),
                                   batch)
    else:
        x = dataset.features()
        background = baseline_rows(params.baseline, x, params.reference, params.n_background, rng)
        for i in rows:
            yield i, GameEvaluator(TabularMasker(model, x[i], background, dataset.feature_names, params.target),
                                   batch)
