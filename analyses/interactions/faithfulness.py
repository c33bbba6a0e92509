"""Faithfulness of second-order explanations of an image-text game, as FIxLIP defines it.

Players are added (insertion) or removed (deletion) in the order the explanation itself
prefers: greedily, each step takes the player whose addition raises (whose removal lowers)
the explanation's own estimate of the game most, that estimate being the sum of the
interactions of every subset of the coalition (its singletons and, for pairs, the
interactions among the players present). With only singletons this is the order of the
attributions, so first-order and second-order explanations are judged on the same curves.
The game is then evaluated along that order; the area under the insertion curve minus the
area under the deletion curve (x: share of players, 0..1; trapezoid rule) is the headline:
higher is more faithful. The finding also keeps each example's image as the model sees it (a
PNG thumbnail, cropped and resized by the processor, its grid padded to whole cells), so that
the site can draw the explanations over it.

Where the dataset gives boxes (a ``boxes`` column: text spans and the regions of the original
image they name), the pointing game asks whether each explanation points at the region: for
each span that covers at least one text player, the image cell with the largest value (the
first of ties) is a hit when its centre, in pixels of the model's input, lies inside the box
mapped there through the processor's resize and crop (edges included). A first-order
explanation's value of a cell is its attribution (the same cell for every span of an example);
a second-order explanation's is the sum of the cell's pair interactions with the span's text
players. Every explanation of the same data is judged on the same spans.
"""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa

from modelsci.analyses.base import FindingKind, RunContext
from modelsci.analyses.games.cross_modal import CrossModalMasker
from modelsci.analyses.games.evaluator import GameEvaluator
from modelsci.analyses.stats import wilson_interval

__all__ = ["FAITHFULNESS_KIND", "POINTING_KIND", "add_faithfulness_finding", "add_pointing_finding", "greedy_order",
           "insertion_deletion", "pointing_game"]

FAITHFULNESS_KIND = FindingKind(
    "insertion_deletion_area", "vision-language models: mean over examples of the area under the insertion curve "
    "minus the area under the deletion curve, players added or removed greedily by the explanation's own estimate "
    "(singletons and interactions of the players present); higher is more faithful", "output x fraction",
    metrics={"insertion_auc": "mean insertion area", "deletion_auc": "mean deletion area", "method": "the method"},
    artifacts={"insertion_deletion": {"example": "row", "step": "players added/removed", "fraction": "step / n",
                                      "deletion": "output after removing", "insertion": "output after adding"},
               "example_images": {"example": "row", "png": "the image as the model sees it, its grid of cells "
                                  "padded to whole cells (PNG, at most 128 pixels a side)"}})

POINTING_KIND = FindingKind(
    "pointing_game_accuracy", "vision-language models with a `boxes` column: the share of text spans whose top "
    "image cell (largest attribution; second order: largest sum of the cell's interactions with the span's text "
    "players) has its centre inside the span's box, mapped through the processor's resize and crop",
    "share of spans", "Wilson 95% over spans",
    metrics={"hits": "spans whose top cell lies in the box", "method": "the method",
             "order": "1: attributions of cells; 2: interactions of cells with the span's text players"},
    artifacts={"pointing_game": {"example": "row", "span_start": "first character", "span_end": "end character",
                                 "span": "the span's text", "players": "names of the span's text players",
                                 "x0": "the box's left edge in pixels of the model's input", "y0": "its top edge",
                                 "x1": "its right edge", "y1": "its bottom edge",
                                 "cell": "the top cell (player index)", "cell_name": "its name",
                                 "cell_x": "its centre's x (input pixels)", "cell_y": "its centre's y",
                                 "score": "its value", "hit": "whether its centre lies inside the box"}})


def _estimate(present: np.ndarray, single: np.ndarray, pair: np.ndarray) -> float:
    return float(single @ present + present @ np.triu(pair, 1) @ present)


def greedy_order(values: dict[tuple[int, ...], float], n: int, insert: bool) -> list[int]:
    """Players in the order the explanation adds them (``insert``) or removes them."""
    single = np.array([values.get((i,), 0.0) for i in range(n)])
    pair = np.zeros((n, n))
    for key, v in values.items():
        if len(key) == 2:
            pair[key[0], key[1]] = pair[key[1], key[0]] = v
    present = np.zeros(n) if insert else np.ones(n)
    order: list[int] = []
    for _ in range(n):
        best, best_gain = -1, -np.inf
        for i in range(n):
            if (present[i] == 1) == insert:
                continue
            trial = present.copy()
            trial[i] = 1.0 if insert else 0.0
            gain = _estimate(trial, single, pair) * (1 if insert else -1)
            if gain > best_gain:
                best, best_gain = i, gain
        present[best] = 1.0 if insert else 0.0
        order.append(best)
    return order


def insertion_deletion(game: GameEvaluator, values: dict[tuple[int, ...], float]) -> tuple[np.ndarray, np.ndarray]:
    """The game's value after inserting (deleting) the first k players of the explanation's order, k = 0..n."""
    n = game.n_players
    curves = []
    for insert in (True, False):
        rows = np.full((n + 1, n), not insert)
        for k, player in enumerate(greedy_order(values, n, insert)):
            rows[k + 1] = rows[k]
            rows[k + 1, player] = insert
        curves.append(game(rows))
    return curves[0], curves[1]


def _auc(curve: np.ndarray) -> float:
    return float(np.trapezoid(curve, dx=1 / (len(curve) - 1))) if len(curve) > 1 else float(curve[0])


def add_faithfulness_finding(ctx: RunContext, method: str,
                             explained: list[tuple[int, GameEvaluator, dict[tuple[int, ...], float]]]) -> None:
    """One ``insertion_deletion_area`` finding over the examples of image-text games (none for other games)."""
    explained = [e for e in explained if getattr(e[1].masker, "cross_modal", None) is not None]
    if not explained:
        return
    rows, areas, inserted, deleted = [], [], [], []
    for example, game, values in explained:
        insertion, deletion = insertion_deletion(game, values)
        inserted.append(_auc(insertion))
        deleted.append(_auc(deletion))
        areas.append(inserted[-1] - deleted[-1])
        n = len(insertion) - 1
        rows += [(example, k, k / n, float(deletion[k]), float(insertion[k])) for k in range(n + 1)]
    table = pa.table(dict(zip(["example", "step", "fraction", "deletion", "insertion"], map(list, zip(*rows)))))
    images = pa.table({"example": [e for e, _, _ in explained],
                       "png": pa.array([_thumbnail(game.masker) for _, game, _ in explained], pa.binary())})
    value = float(np.mean(areas))
    ctx.add_finding(kind="insertion_deletion_area", value=value, n=len(areas), unit="output x fraction",
                    statement=f"{method}: adding and removing players in the explanation's order, the insertion "
                              f"area exceeds the deletion area by {value:.4g} (higher is more faithful)",
                    metrics={"insertion_auc": float(np.mean(inserted)), "deletion_auc": float(np.mean(deleted)),
                             "method": method},
                    artifacts={"insertion_deletion": table, "example_images": images})
    add_pointing_finding(ctx, method, explained)


def pointing_game(masker: CrossModalMasker, values: dict[tuple[int, ...], float],
                  boxes: list[dict[str, list[float]]]) -> list[dict[str, object]]:
    """One row per box whose span covers a text player: the explanation's top cell for it and whether it hits."""
    n_a = masker.n_a
    second = any(len(key) == 2 for key in values)
    centres = masker.cell_centres()
    rows = []
    for item in boxes:
        start, end = (int(v) for v in item["span"])
        players = masker.span_players(start, end)
        if not players:  # a span the tokenizer cut off (or without offsets) has nothing to point with
            continue
        if second:
            scores = np.array([sum(values.get((c, n_a + t), 0.0) for t in players) for c in range(n_a)])
        else:
            scores = np.array([values.get((c,), 0.0) for c in range(n_a)])
        cell = int(np.argmax(scores))
        x0, y0, x1, y1 = masker.input_box(item["box"])
        cx, cy = (float(v) for v in centres[cell])
        rows.append({"span_start": start, "span_end": end, "span": masker.text[start:end],
                     "players": [masker.names[n_a + t] for t in players], "x0": x0, "y0": y0, "x1": x1, "y1": y1,
                     "cell": cell, "cell_name": masker.names[cell], "cell_x": cx, "cell_y": cy,
                     "score": float(scores[cell]), "hit": bool(x0 <= cx <= x1 and y0 <= cy <= y1)})
    return rows


def add_pointing_finding(ctx: RunContext, method: str,
                         explained: list[tuple[int, GameEvaluator, dict[tuple[int, ...], float]]]) -> None:
    """One ``pointing_game_accuracy`` finding over the examples' boxes (none without a ``boxes`` column)."""
    column = ctx.dataset.roles.get("boxes")
    if column is None:
        return
    boxes = ctx.dataset.table.column(column)
    rows = [{"example": example, **row} for example, game, values in explained
            for row in pointing_game(game.masker, values, boxes[example].as_py() or [])]
    if not rows:
        return
    hits, n = sum(r["hit"] for r in rows), len(rows)
    order = 2 if any(len(key) == 2 for _, _, values in explained for key in values) else 1
    ci = wilson_interval(hits, n)
    ctx.add_finding(kind="pointing_game_accuracy", value=hits / n, ci=ci, n=n, unit="share of spans",
                    statement=f"{method}: the top image cell of a text span lies in its box for {hits} of {n} "
                              f"spans ({hits / n:.3g}, 95% CI {ci[0]:.3g}–{ci[1]:.3g})",
                    metrics={"hits": hits, "method": method, "order": order},
                    artifacts={"pointing_game": pa.Table.from_pylist(rows)})


def _thumbnail(masker: CrossModalMasker, side: int = 128) -> bytes:
    """The masker's processed image back in pixels (the processor's normalisation undone), as a PNG."""
    from PIL import Image

    processor = masker.encoder.image_processor
    image = masker.image.detach().float().cpu().numpy()
    if getattr(processor, "do_normalize", False):
        image = image * np.asarray(processor.image_std)[:, None, None] + np.asarray(processor.image_mean)[:, None, None]
    if getattr(processor, "do_rescale", False):  # back to 0..255 from the processor's own scale
        image = image / float(processor.rescale_factor)
    else:
        image = image * 255.0
    _, h, w = image.shape
    full = np.zeros((len(image), masker.grid[0] * masker.side, masker.grid[1] * masker.side))
    full[:, :h, :w] = image  # the grid's last row and column of cells may reach past the image
    picture = Image.fromarray(np.clip(np.rint(full), 0, 255).astype(np.uint8).transpose(1, 2, 0))
    picture.thumbnail((side, side))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()
