"""The game evaluator: coalitions (a boolean matrix) -> values, batched, cached, counted.

A masker knows how to turn coalitions of one input's players into model inputs and outputs;
the evaluator asks it only for coalitions it has not seen, in batches as large as the device
allows (halving on out-of-memory), and remembers every value. shapiq's approximators and
modelsci's own analyses call the same evaluator, so analyses that need the same coalitions
pay for them once. Its cost is the model's forward passes and little else.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

__all__ = ["GameEvaluator", "Masker"]


class Masker(Protocol):
    """Turns coalitions of one input's players into model outputs."""

    n_players: int
    names: list[str]
    forward_passes: int
    """Inputs pushed through the model so far (one masked row, text or image each)."""

    def values(self, coalitions: np.ndarray) -> np.ndarray: ...


class GameEvaluator:
    """A value function on coalitions, callable as shapiq expects: ``game(coalitions) -> values``."""

    def __init__(self, masker: Masker, batch_size: int = 512) -> None:
        self.masker = masker
        self.n_players = masker.n_players
        self.batch_size = batch_size
        self.cache: dict[bytes, float] = {}
        self.requested = 0
        """Coalition values asked for, cached or not."""

    @property
    def names(self) -> list[str]:
        return self.masker.names

    @property
    def model_evaluations(self) -> int:
        return self.masker.forward_passes

    def __call__(self, coalitions: np.ndarray) -> np.ndarray:
        coalitions = np.asarray(coalitions, dtype=bool).reshape(-1, self.n_players)
        self.requested += len(coalitions)
        keys = [row.tobytes() for row in np.packbits(coalitions, axis=1)]
        todo: dict[bytes, int] = {}
        for i, key in enumerate(keys):
            if key not in self.cache and key not in todo:
                todo[key] = i
        if todo:
            rows = coalitions[list(todo.values())]
            for key, value in zip(todo, self._evaluate(rows)):
                self.cache[key] = float(value)
        return np.array([self.cache[k] for k in keys], dtype=np.float64)

    def _evaluate(self, rows: np.ndarray) -> np.ndarray:
        out, start = [], 0
        while start < len(rows):
            batch = rows[start:start + self.batch_size]
            try:
                values = self.masker.values(batch)
            except torch.cuda.OutOfMemoryError:
                if self.batch_size == 1:
                    raise
                torch.cuda.empty_cache()
                self.batch_size //= 2
                continue
            if not np.all(np.isfinite(values)):
                raise ValueError("the model returned NaN or inf on a masked input")
            out.append(np.asarray(values, dtype=np.float64))
            start += len(batch)
        return np.concatenate(out)

    @property
    def value_full(self) -> float:
        return float(self(np.ones((1, self.n_players), bool))[0])

    @property
    def value_empty(self) -> float:
        return float(self(np.zeros((1, self.n_players), bool))[0])
