"""The shapes setting: images holding exactly one simple shape, a filled square or disc.

The ground truth counts connected blobs and tells a square from a disc by the share of its
bounding box a blob fills (``SQUARE_FILL``). Unconditional models: one shape is in support, more
than one is a hallucination. Conditional models (prompts such as ``one disc``, or class labels,
each mapped to a kind by the model's data note ``conditions``): exactly one shape of the kind
asked for is in support, anything else (none, several, the wrong kind) is a hallucination.

The text-conditional pipelines of the demo are trained by ``modelsci.demo_shapes``. Each pipeline
folder carries a ``modelsci.json`` with ``{"data": {"kind": "shapes", ...}}`` so the hallucination
analyses know how to judge its samples.
"""

from __future__ import annotations

import numpy as np

__all__ = ["KINDS", "SQUARE_FILL", "count_shapes", "draw_shapes", "shape_images", "shape_kinds", "shapes_truth"]

KINDS = ("square", "disc")
"""The shapes a sample may hold."""
SQUARE_FILL = 0.85
"""A blob filling more than this share of its bounding box is a square, else a disc: a filled square fills
all of it, a drawn disc about pi/4 (0.52 to 0.73 at the radii drawn, by pixel rounding)."""


def draw_shapes(n: int, size: int, rng: np.random.Generator,
                kinds: list[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """(n, 1, size, size) images in [-1, 1] holding one filled square or disc each at a random place, and
    which kind each holds: ``kinds`` (one per image) when given, else each drawn at random."""
    if kinds is not None and len(kinds) != n:
        raise ValueError(f"{len(kinds)} kinds given for {n} images")
    images = -np.ones((n, 1, size, size), dtype=np.float32)
    drawn: list[str] = []
    yy, xx = np.mgrid[:size, :size]
    for k in range(n):
        r = int(rng.integers(size // 10 + 1, size // 5 + 2))
        cy, cx = rng.integers(r, size - r, 2)
        kind = KINDS[int(rng.random() >= 0.5)] if kinds is None else kinds[k]
        if kind == "square":
            mask = (np.abs(yy - cy) <= r) & (np.abs(xx - cx) <= r)
        elif kind == "disc":
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        else:
            raise ValueError(f"unknown shape {kind!r}; the shapes are {', '.join(KINDS)}")
        images[k, 0][mask] = 1.0
        drawn.append(kind)
    return images, drawn


def shape_images(n: int, size: int, rng: np.random.Generator, kinds: list[str] | None = None) -> np.ndarray:
    """(n, 1, size, size) images in [-1, 1]: one filled square or disc each (``kinds``, else at random)."""
    return draw_shapes(n, size, rng, kinds)[0]


def shape_kinds(images: np.ndarray, threshold: float = 0.0, min_pixels: int = 4) -> list[list[str]]:
    """The kind of each connected blob above ``threshold`` (of at least ``min_pixels``) per image,
    by its fill ratio: the share of its bounding box it covers (see ``SQUARE_FILL``)."""
    from scipy import ndimage

    found: list[list[str]] = []
    for image in images.reshape(len(images), -1, *images.shape[-2:]):
        labels, _ = ndimage.label(image.max(axis=0) > threshold)
        kinds = []
        for label, box in enumerate(ndimage.find_objects(labels), start=1):
            pixels = int((labels[box] == label).sum())
            if pixels >= min_pixels:
                fill = pixels / labels[box].size
                kinds.append("square" if fill > SQUARE_FILL else "disc")
        found.append(kinds)
    return found


def count_shapes(images: np.ndarray, threshold: float = 0.0, min_pixels: int = 4) -> np.ndarray:
    """Connected blobs above ``threshold`` (of at least ``min_pixels``) per image."""
    return np.array([len(kinds) for kinds in shape_kinds(images, threshold, min_pixels)], dtype=int)


def shapes_truth(images: np.ndarray, expected: list[str | None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(in support, hallucinated) per image. Without ``expected``: one shape is in support, more than one
    hallucinated (none is neither). With ``expected`` (the kind each image was asked for; None for an
    unconditioned one): exactly one shape of that kind is in support, any other count or kind hallucinated."""
    kinds = shape_kinds(images)
    if expected is not None and len(expected) != len(kinds):
        raise ValueError(f"{len(expected)} expected kinds given for {len(kinds)} images")
    counts = np.array([len(k) for k in kinds], dtype=int)
    if expected is None:
        return counts == 1, counts > 1
    asked = np.array([e is not None for e in expected])
    right = np.array([k == [e] for k, e in zip(kinds, expected, strict=True)])
    in_support = np.where(asked, right, counts == 1)
    return in_support, np.where(asked, ~right, counts > 1)
