"""Static SVG plots for the site, drawn with matplotlib at build time, one function per kind.

Every function takes plain rows (from findings or artifacts) and returns SVG text, or None
when there is nothing to draw; the site embeds the SVG inline so pages need no extra files.
The site trusts this SVG as markup, so every label in it is escaped here (``html.escape``,
and matplotlib's own escaping of SVG text) and every label is plain text, never mathtext.
"""

from __future__ import annotations

import html
import io
from typing import Any

import numpy as np

__all__ = ["bars", "calibration", "curves", "heatmap", "histogram", "interval_curve", "matrix", "token_highlight"]


def _figure(width: float = 6.0, height: float = 3.2):  # noqa: ANN202 - matplotlib objects
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # Labels are contributor text (feature names, subjects): drawn as typed, never read as mathtext.
    plt.rcParams.update({"svg.fonttype": "none", "font.size": 9, "text.parse_math": False})
    return plt.subplots(figsize=(width, height))


def _svg(fig: Any) -> str:
    import matplotlib.pyplot as plt

    sink = io.StringIO()
    fig.tight_layout()
    fig.savefig(sink, format="svg")
    plt.close(fig)
    text = sink.getvalue()
    return text[text.index("<svg"):]  # inline: drop the XML prolog and doctype


def bars(labels: list[str], values: list[float], errors: list[tuple[float, float] | None] | None = None,
         title: str = "", xlabel: str = "", error_label: str = "95% CI") -> str | None:
    """Horizontal bars from zero, largest magnitude on top, with whiskers where ``errors`` gives them.

    Plain SVG (big sites draw thousands). Signed values draw to the left of the zero line; the
    axis label names the whiskers (``error_label``) only when at least one is drawn.
    """
    if not values:
        return None
    order = sorted(range(len(values)), key=lambda i: (-abs(values[i]), i))[:15]
    shown = [values[i] for i in order] + [v for i in order if errors and errors[i] for v in errors[i]]
    low, high = min([0.0, *shown]), max([0.0, *shown])
    if high - low < 1e-12:
        high = low + 1.0
    left, width, row = 180, 320, 18
    height = 40 + row * len(order) + 30
    scale = width / (high - low)

    def x(value: float) -> float:
        return left + (value - low) * scale

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 40}" height="{height}" '
             f'viewBox="0 0 {left + width + 40} {height}" font-size="11" font-family="sans-serif">',
             f'<text x="{left}" y="16" font-weight="bold">{html.escape(title)}</text>']
    whiskers = False
    for k, i in enumerate(order):
        y = 30 + k * row
        start, end = sorted((x(0.0), x(values[i])))
        parts.append(f'<text x="{left - 6}" y="{y + 12}" text-anchor="end">{html.escape(labels[i][:40])}</text>')
        parts.append(f'<rect x="{start:.1f}" y="{y + 2}" width="{end - start:.1f}" height="{row - 5}" fill="#3f6fb5">'
                     f'<title>{html.escape(labels[i])}: {values[i]:.4g}</title></rect>')
        if errors and errors[i]:
            whiskers = True
            lo, hi = (x(v) for v in errors[i])
            mid = y + row / 2
            parts.append(f'<path class="whisker" d="M{lo:.1f} {mid:.1f}H{hi:.1f}M{lo:.1f} {mid - 4:.1f}V{mid + 4:.1f}'
                         f'M{hi:.1f} {mid - 4:.1f}V{mid + 4:.1f}" stroke="#333" fill="none"/>')
    axis = 30 + row * len(order) + 4
    parts.append(f'<path d="M{left} {axis}H{left + width}" stroke="#666"/>')
    if low < 0:
        parts.append(f'<path d="M{x(0.0):.1f} 24V{axis}" stroke="#999"/>')  # the zero line bars start from
    from matplotlib.ticker import MaxNLocator  # round tick values (0.01, 0.02, ...), not fifths of the range

    for tick in (t for t in MaxNLocator(nbins=5).tick_values(low, high) if low - 1e-12 <= t <= high + 1e-12):
        parts.append(f'<path d="M{x(tick):.1f} {axis}V{axis + 4}" stroke="#666"/>'
                     f'<text x="{x(tick):.1f}" y="{axis + 15}" text-anchor="middle">{tick:.3g}</text>')
    label = f"{xlabel} (whiskers: {error_label})" if whiskers and error_label else xlabel
    parts.append(f'<text x="{left + width / 2}" y="{height - 2}" text-anchor="middle">{html.escape(label)}</text></svg>')
    return "".join(parts)


def matrix(names: list[str], values: np.ndarray, title: str = "", colorbar: str = "value") -> str | None:
    """A square matrix (interactions of order 2, meta-attributions) as a diverging heatmap."""
    if values.size == 0:
        return None
    n = len(names)
    fig, ax = _figure(min(1.5 + 0.35 * n, 8.0), min(1.2 + 0.35 * n, 7.5))
    limit = float(np.abs(values).max()) or 1.0
    image = ax.imshow(values, cmap="RdBu_r", vmin=-limit, vmax=limit)
    ax.set_xticks(range(n), names, rotation=90)
    ax.set_yticks(range(n), names)
    ax.set_title(title)
    fig.colorbar(image, ax=ax, shrink=0.8, label=colorbar)
    return _svg(fig)


def heatmap(grid: np.ndarray, title: str = "", image: np.ndarray | None = None,
            colorbar: str = "attribution") -> str | None:
    """Patch attributions over an image's grid (the image underneath when given)."""
    if grid.size == 0:
        return None
    fig, ax = _figure(3.2, 3.0)
    if image is not None:
        ax.imshow(image, cmap="gray", extent=(0, grid.shape[1], grid.shape[0], 0))
    limit = float(np.abs(grid).max()) or 1.0
    shown = ax.imshow(grid, cmap="RdBu_r", vmin=-limit, vmax=limit, alpha=0.6 if image is not None else 1.0,
                      extent=(0, grid.shape[1], grid.shape[0], 0))
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title)
    fig.colorbar(shown, ax=ax, shrink=0.8, label=colorbar)
    return _svg(fig)


def calibration(rows: list[dict[str, Any]], title: str = "calibration") -> str | None:
    """Accuracy against mean confidence, one point per confidence bin, with the diagonal of perfect calibration."""
    if not rows:
        return None
    fig, ax = _figure(3.6, 3.2)
    ax.plot([0, 1], [0, 1], color="#999", linestyle="--", linewidth=1)
    ax.plot([r["confidence"] for r in rows], [r["accuracy"] for r in rows], marker="o", color="#3f6fb5")
    ax.set_xlabel("mean confidence in the bin")
    ax.set_ylabel("accuracy in the bin")
    ax.set_title(title)
    return _svg(fig)


def curves(rows: list[dict[str, Any]], title: str = "deletion and insertion") -> str | None:
    """Mean deletion and insertion curves over examples."""
    if not rows:
        return None
    steps = sorted({r["fraction"] for r in rows})
    mean = {k: [np.mean([r[k] for r in rows if r["fraction"] == s]) for s in steps] for k in ("deletion", "insertion")}
    fig, ax = _figure(4.0, 3.0)
    ax.plot(steps, mean["deletion"], label="deletion", color="#b5473f")
    ax.plot(steps, mean["insertion"], label="insertion", color="#3f6fb5")
    ax.set_xlabel("fraction of features (most attributed first)")
    ax.set_ylabel("mean output over examples")
    ax.legend()
    ax.set_title(title)
    return _svg(fig)


def histogram(values: list[float], threshold: float | None = None, title: str = "", xlabel: str = "",
              ylabel: str = "count") -> str | None:
    """A distribution of values (``ylabel`` names what is counted), with a threshold line where one applies."""
    if not values:
        return None
    fig, ax = _figure(4.5, 3.0)
    ax.hist(values, bins=min(40, max(5, len(values) // 5)), color="#3f6fb5")
    if threshold is not None:
        ax.axvline(threshold, color="#b5473f", linestyle="--", label="threshold")
        ax.legend()
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    return _svg(fig)


def token_highlight(tokens: list[str], values: list[float]) -> str:
    """Tokens as HTML spans tinted by attribution (red raises, blue lowers the output); escaped."""
    limit = max((abs(v) for v in values), default=0.0) or 1.0
    spans = []
    for token, value in zip(tokens, values):
        alpha = min(abs(value) / limit, 1.0) * 0.8
        rgb = "181,71,63" if value > 0 else "63,111,181"
        spans.append(f'<span class="token" style="background: rgba({rgb},{alpha:.2f})" '
                     f'title="{value:+.4g}">{html.escape(token)}</span>')
    return '<p class="tokens">' + " ".join(spans) + "</p>"


def interval_curve(xs: list[float], ys: list[float], lows: list[float], highs: list[float], title: str = "",
                   xlabel: str = "", ylabel: str = "", marked: float | None = None) -> str | None:
    """One value against a setting (a rate against the guidance scale), its 95% interval as a band;
    ``marked`` draws a dashed line at one setting (the run's own)."""
    if not xs:
        return None
    order = np.argsort(xs)
    x, y = np.asarray(xs, float)[order], np.asarray(ys, float)[order]
    fig, ax = _figure(4.5, 3.0)
    ax.fill_between(x, np.asarray(lows, float)[order], np.asarray(highs, float)[order], color="#3f6fb5", alpha=0.2,
                    label="95% CI")
    ax.plot(x, y, marker="o", color="#3f6fb5")
    if marked is not None:
        ax.axvline(marked, color="#b5473f", linestyle="--", label="the run's own")
    ax.legend()
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    return _svg(fig)
