"""From a run's model and dataset to one game per explained example.

The parameters every game-theoretic and attribution analysis shares live here
(``ExplainParams``), and ``games_for`` picks the masker that fits the model: tabular
columns, text tokens, the tokens of a sentence pair, or the cells of an image's patch grid.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

from modelsci.analyses.games.cross_modal import cross_modal_games
from modelsci.analyses.games.evaluator import GameEvaluator
from modelsci.analyses.games.maskers import (
    ImageMasker,
    PairEncoderMasker,
    TabularMasker,
    TextClassifierMasker,
    baseline_rows,
)
from modelsci.analyses.games.prompt_game import PromptMasker, PromptOptions, prompt_examples
from modelsci.ingest.models import VL_TASK

__all__ = ["EXPLAINABLE_TASKS", "ExplainParams", "games_for", "image_shape"]

EXPLAINABLE_TASKS = frozenset({"tabular-classification", "tabular-regression", "text-classification",
                               "image-classification", "sentence-similarity", "text-generation",
                               VL_TASK})


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
    players: Literal["words", "tokens"] = Field(default="words", description="Text generation: players are the prompt's words (tokens grouped by their character offsets) or its tokens.")
    positions: Literal["kept", "contiguous"] = Field(default="kept", description="Text generation, text_mode remove: present tokens keep their positions in the full prompt, or are numbered contiguously (the prompt with the missing words deleted).")
    fill: Literal["pad", "unk"] = Field(default="pad", description="Text generation, text_mode mask: the token a missing player's tokens become (pad: EOS when there is no pad token).")
    value: Literal["sum", "mean"] = Field(default="sum", description="Text generation: the target's log-probability summed over its tokens, or their mean.")
    max_new_tokens: int = Field(default=8, ge=1, description="Text generation without a target column: length of the model's greedy continuation that is explained.")
    chat: bool = Field(default=False, description="Text generation: render prompts with the tokenizer's chat template (always with a messages column); only user turns are players.")
    cell: int = Field(default=1, ge=1, description="Vision-language: side of an image cell in the vision tower's patches (players are the cells, then the text's words or tokens, as `players` says); image_baseline zeros is a black pixel, mean the processor's mean pixel.")

    @model_serializer(mode="wrap")
    def _recorded(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # The parameters of one task only are recorded when they differ from their defaults, so that
        # the params hash (part of every run and finding key) of a run on another task stays what it was.
        dumped = handler(self)
        for name in _RECORDED_WHEN_SET:
            if name in dumped and dumped[name] == type(self).model_fields[name].default:
                del dumped[name]
        return dumped


_RECORDED_WHEN_SET = ("players", "positions", "fill", "value", "max_new_tokens", "chat", "cell")


def image_shape(model: Any, params: ExplainParams) -> tuple[int, int, int] | None:
    shape = params.image_shape or getattr(model.model, "image_shape", None)
    return tuple(shape) if shape else None  # type: ignore[return-value]


def games_for(model: Any, dataset: Any, params: ExplainParams, rng: np.random.Generator) -> Iterator[tuple[int, GameEvaluator]]:
    """(row index, game) for each explained example."""
    rows = range(min(params.examples, dataset.table.num_rows))
    # CPUs run transformer batches fastest small (cache-sized); GPUs want them large.
    batch = params.batch_size or (2048 if str(model.device).startswith("cuda") else 128)
    framework, task = model.handle.framework, model.task
    if task == "text-generation":
        options = PromptOptions(params.players, params.text_mode, params.positions, params.fill, params.value,
                                params.max_new_tokens, params.chat)
        for i, prompt, target, messages in prompt_examples(dataset, rows):
            yield i, GameEvaluator(PromptMasker(model, prompt, target, options, messages), batch)
    elif task == VL_TASK:
        if params.text_mode != "remove":
            raise ValueError("vision-language models remove missing tokens through the attention mask: "
                             "text_mode must be remove")
        yield from cross_modal_games(model, dataset, rows, cell=params.cell, baseline=params.image_baseline,
                                     text_players=params.players, target=params.target,
                                     encode_batch=params.batch_size or (512 if batch == 2048 else 64))
    elif framework == "sentence-transformers":
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
