"""Site views of a vision-language model's explanations: patch heatmaps over the image, beside the text.

Players are named ``image(row,col)`` (cells of the image grid) and ``text:TOKEN``. An
attribution artifact becomes the cells' heatmap over the example's image with the text's tokens
tinted beside it; an interaction artifact becomes, for each of the text players with the
strongest cross-modal interactions, the token beside the heatmap of its interactions with every
image cell (the view FIxLIP's paper shows). The faithfulness comparison draws the insertion and
deletion curves of every explanation of the same model and data, first- and second-order, in one
plot. Built from ``modelsci.plots``' escaped SVG and HTML only.
"""

from __future__ import annotations

import io
import re
from typing import Any

import numpy as np

from modelsci import plots

__all__ = ["example_image", "faithfulness_comparison", "vision_language_view"]

_CELL = re.compile(r"image\((\d+),(\d+)\)")
_COLOURS = ["#3f6fb5", "#b5473f", "#4f9a4a", "#8a5ab5", "#c08a2b", "#555555"]


def _grid(cells: dict[tuple[int, int], float]) -> np.ndarray:
    grid = np.zeros((max(r for r, _ in cells) + 1, max(c for _, c in cells) + 1))
    for (r, c), value in cells.items():
        grid[r, c] = value
    return grid


def _cell(name: str) -> tuple[int, int] | None:
    match = _CELL.fullmatch(name)
    return (int(match.group(1)), int(match.group(2))) if match else None


def example_image(rows: list[dict[str, Any]], example: int) -> np.ndarray | None:
    """One example's image (H x W x 3, uint8) from an ``example_images`` artifact; None when absent."""
    from PIL import Image

    for row in rows:
        if row["example"] == example and row["png"]:
            # Decoded with a size limit: a catalogue's artifacts may come from an import.
            with Image.open(io.BytesIO(row["png"])) as picture:
                if picture.width * picture.height > 1024 * 1024:
                    return None
                return np.asarray(picture.convert("RGB"))
    return None


def _first_example(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of the artifact's first example (an artifact may hold several; a cell shows one value)."""
    example = rows[0].get("example") if rows else None
    return [r for r in rows if r.get("example") == example]


def vision_language_view(name: str, rows: list[dict[str, Any]], image: np.ndarray | None = None,
                         strongest: int = 3) -> str | None:
    """The view of an ``attributions`` or ``interactions`` artifact, over ``image`` when given; else None."""
    rows = _first_example(rows)
    if name == "attributions":
        cells = {c: r["value"] for r in rows if (c := _cell(r["name"])) is not None}
        text = [(r["name"].removeprefix("text:"), r["value"]) for r in rows if r["name"].startswith("text:")]
        if not cells:
            return None
        heatmap = plots.heatmap(_grid(cells), title="image cells", image=image) or ""
        return heatmap + plots.token_highlight([t for t, _ in text], [v for _, v in text])
    if name == "interactions":
        by_token: dict[str, dict[tuple[int, int], float]] = {}
        for r in rows:
            if r["order"] != 2:
                continue
            a, b = r["names"]
            cell, token = (_cell(a), b) if _cell(a) else (_cell(b), a)
            if cell is None or not token.startswith("text:"):
                continue
            by_token.setdefault(token.removeprefix("text:"), {})[cell] = r["value"]
        if not by_token:
            return None
        top = sorted(by_token, key=lambda t: -max(abs(v) for v in by_token[t].values()))[:strongest]
        views = []
        for token in top:
            heatmap = plots.heatmap(_grid(by_token[token]), title=f"interactions with '{token}'", image=image,
                                    colorbar="interaction") or ""
            views.append('<div class="vl-token">' + plots.token_highlight([token], [1.0]) + heatmap + "</div>")
        return "".join(views)
    return None


def faithfulness_comparison(curves: dict[str, list[dict[str, Any]]]) -> str | None:
    """Mean insertion (solid) and deletion (dashed) curves over the examples, one colour per explanation."""
    if not curves:
        return None
    fig, ax = plots._figure(5.2, 3.4)
    for k, (method, rows) in enumerate(sorted(curves.items())):
        steps = sorted({r["fraction"] for r in rows})
        mean = {key: np.array([np.mean([r[key] for r in rows if r["fraction"] == s]) for s in steps])
                for key in ("insertion", "deletion")}
        area = float(np.trapezoid(mean["insertion"] - mean["deletion"], steps)) if len(steps) > 1 else 0.0
        colour = _COLOURS[k % len(_COLOURS)]
        ax.plot(steps, mean["insertion"], color=colour, label=f"{method} (area {area:.3g})")
        ax.plot(steps, mean["deletion"], color=colour, linestyle="--")
    ax.set_xlabel("fraction of players added (solid) or removed (dashed)")
    ax.set_ylabel("mean model output")
    ax.set_title("faithfulness: insertion and deletion")
    ax.legend(fontsize=7)
    return plots._svg(fig)
