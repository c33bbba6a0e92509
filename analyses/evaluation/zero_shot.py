"""Performance of a vision-language dual encoder: zero-shot classification or image-text retrieval.

With ``dataset.template`` the rows are classified: each image's class is the label whose
prompt it is most similar to (argmax over the prompts of every distinct label), and accuracy
(Wilson interval) and macro-F1 (bootstrap interval) are computed against the labels. Without,
the rows are image-text pairs, and retrieval recall is measured in both directions over the
whole split: recall@k image->text is the share of images whose own text is among the k texts
most similar to them (its rank is the number of other texts strictly more similar, so a tie
counts in the pair's favour), text->image the same for texts; each a proportion with its
Wilson interval.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
from sklearn import metrics

from modelsci.analyses.base import FindingKind, RunContext
from modelsci.ingest.vision_language import images_of, zero_shot_prompts

__all__ = ["ZERO_SHOT_KINDS", "retrieval_ranks", "zero_shot_performance"]

_WILSON = "Wilson score 95% interval of the proportion"
_CI = {"ci_method": "how the interval was made", "n_bootstrap": "bootstrap resamples (bootstrap intervals only)"}
_RANKS = {"example": "row index", "rank_image_to_text": "texts more similar to the row's image than its own text",
          "rank_text_to_image": "images more similar to the row's text than its own image"}


def _recall(direction: str, k: int) -> FindingKind:
    source, target = direction.split("_to_")
    return FindingKind(f"recall_at_{k}_{direction}", f"vision-language pairs: share of {source}s whose own {target} "
                       f"is among the {k} {target}s most similar to them (ties count in the pair's favour)",
                       "fraction", _WILSON, metrics=_CI, artifacts={"retrieval": _RANKS} if k == 1 else {})


ZERO_SHOT_KINDS = tuple(_recall(d, k) for d in ("image_to_text", "text_to_image") for k in (1, 5))
"""Retrieval kinds (zero-shot classification writes ``accuracy`` and ``macro_f1``)."""


def retrieval_ranks(similarity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For pairs (i, i): how many texts beat text i for image i, and how many images beat image i for text i."""
    own = np.diag(similarity)
    return (similarity > own[:, None]).sum(1), (similarity > own[None, :]).sum(0)


def zero_shot_performance(plugin: Any, ctx: RunContext, params: Any) -> None:
    """The findings of ``evaluation.performance`` for a dual encoder (``plugin`` writes them)."""
    encoder = ctx.model.model
    data = ctx.dataset
    images = images_of(data)
    zero_shot = zero_shot_prompts(data)
    if zero_shot is not None:
        classes, prompts = zero_shot
        similarity = encoder.similarities(images, prompts, params.batch_size)
        y = np.array([str(v) for v in data.labels()], dtype=object)
        predicted = np.array(classes, dtype=object)[similarity.argmax(1)]
        correct = (predicted == y).astype(np.float64)
        scores: dict[str, Callable[[np.ndarray], float]] = {
            "accuracy": lambda i: float(correct[i].mean()),
            "macro_f1": lambda i: metrics.f1_score(y[i], predicted[i], average="macro", labels=classes,
                                                   zero_division=0),
        }
        top = similarity.max(1)
        artifacts = {"accuracy": {"predictions": pa.table({
            "example": np.arange(len(y)), "label": y.tolist(), "prediction": predicted.tolist(),
            "confidence": top})}}
        plugin._findings(ctx, params, scores, y, artifacts, proportions={"accuracy": correct})
        return
    similarity = encoder.similarities(images, data.texts("text"), params.batch_size)
    to_text, to_image = retrieval_ranks(similarity)
    hits = {f"recall_at_{k}_{d}": (ranks < k).astype(np.float64)
            for d, ranks in (("image_to_text", to_text), ("text_to_image", to_image)) for k in (1, 5)}
    scores = {kind: (lambda i, h=h: float(h[i].mean())) for kind, h in hits.items()}
    table = pa.table({"example": np.arange(len(to_text)), "rank_image_to_text": to_text,
                      "rank_text_to_image": to_image})
    plugin._findings(ctx, params, scores, to_text, {"recall_at_1_image_to_text": {"retrieval": table}},
                     proportions=hits)
