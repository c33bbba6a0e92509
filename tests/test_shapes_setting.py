"""The conditioned shapes setting: its ground truth (blob counts and the fill-ratio test) and its demo pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from modelsci.analyses.hallucination.shapes import (
    SQUARE_FILL,
    count_shapes,
    draw_shapes,
    shape_images,
    shape_kinds,
    shapes_truth,
)

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "examples" / "demo" / "shapes_text_16"


def _canvas(size: int = 16) -> np.ndarray:
    return -np.ones((1, 1, size, size), dtype=np.float32)


@pytest.mark.parametrize("size", [16, 32, 64])
def test_drawn_shapes_are_told_apart_by_their_fill_ratio(size: int) -> None:
    kinds = ["square", "disc"] * 20
    images, drawn = draw_shapes(40, size, np.random.default_rng(size), kinds)
    assert drawn == kinds
    assert shape_kinds(images) == [[k] for k in kinds]
    random_images, random_kinds = draw_shapes(40, size, np.random.default_rng(1))
    assert {"square", "disc"} == set(random_kinds)  # drawn at random when no kinds are given
    assert shape_kinds(random_images) == [[k] for k in random_kinds]


def test_shape_images_keeps_its_random_draws_and_draws_the_kinds_asked_for() -> None:
    rng = np.random.default_rng(0)
    images, kinds = draw_shapes(5, 16, np.random.default_rng(0))
    np.testing.assert_array_equal(shape_images(5, 16, rng), images)
    discs = shape_images(3, 16, np.random.default_rng(0), ["disc"] * 3)
    assert shape_kinds(discs) == [["disc"]] * 3
    with pytest.raises(ValueError, match="triangle"):
        shape_images(1, 16, np.random.default_rng(0), ["triangle"])


def test_the_fill_ratio_test_at_its_boundary() -> None:
    # A 4x5 rectangle fills its box: a square. The same box missing three pixels fills 17/20 = 0.85,
    # which is not more than SQUARE_FILL: a disc. Missing two fills 0.9: a square.
    images = np.concatenate([_canvas()] * 3)
    images[:, 0, 2:6, 2:7] = 1.0
    images[1, 0, 2, [2, 6]] = -1.0
    images[1, 0, 5, 2] = -1.0
    images[2, 0, 2, [2, 6]] = -1.0
    assert SQUARE_FILL == 0.85
    assert shape_kinds(images) == [["square"], ["disc"], ["square"]]


def test_conditioned_truth_on_known_images() -> None:
    square, disc, both, two_squares, empty, speck = (_canvas() for _ in range(6))
    square[0, 0, 2:7, 2:7] = 1.0
    yy, xx = np.mgrid[:16, :16]
    disc[0, 0][(yy - 8) ** 2 + (xx - 8) ** 2 <= 9] = 1.0
    both[0, 0, 1:5, 1:5] = 1.0
    both[0, 0][(yy - 11) ** 2 + (xx - 11) ** 2 <= 9] = 1.0
    two_squares[0, 0, 1:5, 1:5] = 1.0
    two_squares[0, 0, 9:14, 9:14] = 1.0
    speck[0, 0, 3:5, 3] = 1.0  # two pixels: below min_pixels, no shape
    images = np.concatenate([square, disc, square, disc, both, two_squares, empty, speck])
    expected = ["square", "disc", "disc", "square", "square", "square", "disc", "square"]
    assert count_shapes(images).tolist() == [1, 1, 1, 1, 2, 2, 0, 0]
    in_support, hallucinated = shapes_truth(images, expected)
    assert in_support.tolist() == [True, True, False, False, False, False, False, False]
    assert hallucinated.tolist() == [False, False, True, True, True, True, True, True]
    # Without expected kinds: one shape in support, more than one hallucinated, none neither.
    in_support, hallucinated = shapes_truth(images)
    assert in_support.tolist() == [True, True, True, True, False, False, False, False]
    assert hallucinated.tolist() == [False, False, False, False, True, True, False, False]
    # An unconditioned row (None) is judged as without expected kinds.
    in_support, hallucinated = shapes_truth(images[[2, 6]], [None, None])
    assert in_support.tolist() == [True, False] and hallucinated.tolist() == [False, False]
    with pytest.raises(ValueError, match="3 expected kinds given for 8 images"):
        shapes_truth(images, expected[:3])


def test_the_prompt_tokenizer_reads_each_word_as_one_token(tmp_path: Path) -> None:
    from transformers import CLIPTokenizer

    from modelsci.demo_shapes import shapes_tokenizer

    shapes_tokenizer(tmp_path, ["one", "square", "disc"])
    tokenizer = CLIPTokenizer.from_pretrained(tmp_path)
    vocab = tokenizer.get_vocab()
    ids = tokenizer(["one square", "one disc", ""]).input_ids
    assert ids == [[0, vocab["one</w>"], vocab["square</w>"], 1], [0, vocab["one</w>"], vocab["disc</w>"], 1], [0, 1]]
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (0, 1, 1)


def test_the_trainer_saves_a_stable_diffusion_layout_with_its_data_note(tmp_path: Path) -> None:
    from modelsci.demo_shapes import CONDITIONS, train_shapes_text
    from modelsci.ingest.models import resolve_model
    from modelsci.schemas.manifest import ModelSpec

    folder = train_shapes_text(tmp_path / "p", images=8, steps=2, batch=4, blocks=(8, 16), attention=(False, True),
                               groups=4, hidden=16)
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline" and index["vae"] == [None, None]
    assert index["unet"] == ["diffusers", "UNet2DConditionModel"]
    assert json.loads((folder / "modelsci.json").read_text()) == {
        "data": {"kind": "shapes", "conditions": {"one square": "square", "one disc": "disc"}}}
    assert CONDITIONS == {"one square": "square", "one disc": "disc"}
    handle = resolve_model(ModelSpec(source=str(folder), task="text-to-image"))
    assert handle.framework == "diffusers"


def test_the_shipped_pipeline_is_small_and_carries_its_card() -> None:
    size = sum(f.stat().st_size for f in SHIPPED.rglob("*") if f.is_file())
    assert size < 2_000_000
    card = (SHIPPED / "README.md").read_text()
    assert "license: apache-2.0" in card and "text-to-image" in card
    assert not list(SHIPPED.rglob("*.bin")) and not list(SHIPPED.rglob("*.pt"))  # safetensors only


def test_the_shipped_pipeline_follows_its_prompts_and_still_hallucinates() -> None:
    import torch

    from modelsci.analyses.hallucination.diffusion import diffusion_model, sample
    from modelsci.analyses.hallucination.filters import FilterParams, ground_truth_of
    from modelsci.ingest.loading import load_model
    from modelsci.ingest.models import resolve_model
    from modelsci.schemas.manifest import ModelSpec

    handle = resolve_model(ModelSpec(source=str(SHIPPED), task="text-to-image"))
    model = diffusion_model(load_model(handle), FilterParams(prompts=["one square", "one disc"]))
    n = 48
    latents, _ = sample(model, n, torch.Generator().manual_seed(0), keep_last=2)
    images = model.decode(latents)
    in_support, hallucinated = ground_truth_of(model, images, np.arange(n))
    # Judged independently: sample i was prompted "one square" for even i, "one disc" for odd i.
    kinds = shape_kinds(images)
    asked = ["square", "disc"] * (n // 2)
    assert in_support.tolist() == [k == [a] for k, a in zip(kinds, asked, strict=True)]
    # It draws what it is asked for (ignoring the prompt would get about half right) and still hallucinates.
    assert 0.7 * n < in_support.sum() < n and hallucinated.sum() == n - in_support.sum()


def test_the_demo_copies_the_shipped_pipeline(tmp_path: Path) -> None:
    from modelsci.demo_shapes import train_demo_shapes

    assert train_demo_shapes(tmp_path) == []  # copied, not trained
    copied = sorted(str(f.relative_to(tmp_path / "shapes_text_16")) for f in (tmp_path / "shapes_text_16").rglob("*"))
    assert copied == sorted(str(f.relative_to(SHIPPED)) for f in SHIPPED.rglob("*"))
    assert (tmp_path / "shapes_text_16" / "unet" / "diffusion_pytorch_model.safetensors").read_bytes() == (
        SHIPPED / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()
