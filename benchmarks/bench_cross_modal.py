"""Cross-modal game benchmark: weighted Banzhaf interactions of a CLIP model, in one run (ratios).

Setting: a randomly initialised CLIP (64x64 images, 16-pixel patches: 16 image cells; a caption
of 8 words: 8 text tokens; width 256, 4 layers), order-2 weighted Banzhaf at p = 1/2 on a budget
of 16,384 coalition pairs, drawn as FIxLIP does (128 image and 128 text coalitions, all pairs).

1. modelsci: the cross-modal masker through the game evaluator (each distinct side encoded once,
   the pairs answered by products of embeddings), regression included.
2. Naive: the same 16,384 pairs, each encoded as one image and one text (the model's own
   get_image_features / get_text_features at the best batch size), then the same regression.
   Target: at least 20x fewer encoder passes and 10x less wall time, the same values.
3. Bare: a loop over the same distinct masked images and texts at the best batch size, nothing
   else. Target: modelsci's time at most 1.15x of it.
4. With ``--large`` (meant for a GPU): a ViT-B/32-sized random CLIP (224x224, 32-pixel patches:
   49 cells; 16 text tokens; width 768, 12 layers), encoder passes per second and total time.

Run: python benchmarks/bench_cross_modal.py [--large]  (writes benchmarks/results/cross_modal.json)
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from modelsci.analyses.games.cross_modal import CrossModalMasker, cross_modal_sampler
from modelsci.analyses.games.evaluator import GameEvaluator
from modelsci.analyses.games.indices import weighted_banzhaf
from modelsci.demo_clip import save_clip
from modelsci.ingest.loading import load_model, resolve_device
from modelsci.ingest.models import VL_TASK, resolve_model
from modelsci.schemas.manifest import ModelSpec

CAPTION = "a small dog runs after a red ball"
WORDS = ["a", "small", "dog", "runs", "after", "red", "ball", "cat", "sits", "on", "the", "mat", "blue", "car",
         "drives", "down", "road", "with", "two", "people"]


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def image(size: int) -> object:
    from PIL import Image

    return Image.fromarray(np.random.default_rng(0).integers(0, 255, (size, size, 3)).astype(np.uint8))


def model(folder: Path, device: str, **size: int) -> object:
    save_clip(folder, [" ".join(WORDS)], **size)
    return load_model(resolve_model(ModelSpec(source=str(folder), task=VL_TASK)), device)


def draws(n_image: int, n_text: int, budget: int, p: float = 0.5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The sampler's sides and its pairs, in the order it serves them (same seed as modelsci's run)."""
    class Sides:
        image = text = None

        def encode_sides(self, a: np.ndarray, b: np.ndarray) -> None:
            self.image, self.text = a, b

    sides = Sides()
    sides.n_a, sides.n_text = n_image, n_text
    pairs = cross_modal_sampler(sides, p, budget)(np.random.default_rng(0), budget)  # type: ignore[arg-type]
    return sides.image, sides.text, pairs


def best_batch(fn, rows: int) -> tuple[float, int]:  # noqa: ANN001 - fn(batch_size) encodes `rows` inputs
    best = (float("inf"), 0)
    for batch in (32, 64, 128, 256):
        if batch > max(rows, 32):
            break
        fn(batch)  # warm
        sync()
        start = time.perf_counter()
        fn(batch)
        sync()
        best = min(best, (time.perf_counter() - start, batch))
    return best


def run(loaded: object, text: str, budget: int, naive: bool) -> dict[str, object]:
    out: dict[str, object] = {}
    size = loaded.model.image_size
    masker = CrossModalMasker(loaded, image(size), text, encode_batch=64)
    n_image, n_text = masker.n_a, masker.n_text
    out["players"] = {"image_cells": n_image, "text_tokens": n_text}
    sides_image, sides_text, pairs = draws(n_image, n_text, budget)

    # 3. Bare: the distinct masked inputs alone, at the best batch size.
    distinct_images = np.unique(sides_image, axis=0)
    distinct_texts = np.unique(sides_text, axis=0)
    probe = CrossModalMasker(loaded, image(size), text)
    masked_images = probe.masked_images(distinct_images)
    attention = probe.masked_attention(distinct_texts)
    ids = probe.input_ids.expand(len(distinct_texts), -1)
    enc = loaded.model

    def bare_images(batch: int) -> None:
        for s in range(0, len(masked_images), batch):
            enc.encode_images(masked_images[s:s + batch])

    def bare_texts(batch: int) -> None:
        for s in range(0, len(attention), batch):
            enc.encode_texts(ids[s:s + batch], attention[s:s + batch])

    image_s, image_batch = best_batch(bare_images, len(masked_images))
    text_s, text_batch = best_batch(bare_texts, len(attention))
    bare = image_s + text_s
    out["bare"] = {"seconds": bare, "encodes": len(distinct_images) + len(distinct_texts),
                   "image_batch": image_batch, "text_batch": text_batch}

    # 1. modelsci, at the batch sizes the bare loop found best.
    masker = CrossModalMasker(loaded, image(size), text, encode_batch=max(image_batch, text_batch))
    game = GameEvaluator(masker, batch_size=1 << 16)
    sync()
    start = time.perf_counter()
    wb = weighted_banzhaf(game, masker.n_players, 0.5, budget, seed=0, sample=cross_modal_sampler(masker, 0.5, budget))
    sync()
    ours = time.perf_counter() - start
    out["modelsci"] = {"seconds": ours, "encoder_passes": masker.forward_passes, "pairs": budget,
                       "vs_bare": ours / bare}
    if not naive:
        out["modelsci"]["passes_per_second"] = masker.forward_passes / ours
        return out

    # 2. Naive: every pair encoded as one image and one text.
    def naive_game(coalitions: np.ndarray) -> np.ndarray:
        values = []
        for s in range(0, len(coalitions), 256):
            chunk = coalitions[s:s + 256]
            img = torch.cat([enc.encode_images(probe.masked_images(chunk[b:b + image_batch, :n_image]))
                             for b in range(0, len(chunk), image_batch)])
            att = probe.masked_attention(chunk[:, n_image:])
            txt = torch.cat([enc.encode_texts(probe.input_ids.expand(len(att[b:b + text_batch]), -1),
                                              att[b:b + text_batch]) for b in range(0, len(chunk), text_batch)])
            values.append(enc.paired(img, txt).cpu().numpy())
        naive_game.passes += 2 * len(coalitions)
        return np.concatenate(values)

    naive_game.passes = 0
    served = iter(range(0, budget, 2048))
    sync()
    start = time.perf_counter()
    ref = weighted_banzhaf(naive_game, masker.n_players, 0.5, budget, seed=0,
                           sample=lambda rng, m: pairs[(s := next(served)):s + m])
    sync()
    theirs = time.perf_counter() - start
    difference = max(abs(wb.values[k] - ref.values[k]) for k in wb.values)
    out["naive"] = {"seconds": theirs, "encoder_passes": naive_game.passes}
    out["ratios"] = {"encoder_passes": naive_game.passes / masker.forward_passes, "wall_time": theirs / ours,
                     "modelsci_vs_bare": ours / bare, "max_abs_difference_of_values": difference}
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--large", action="store_true", help="also the ViT-B/32-sized model (for a GPU)")
    parser.add_argument("--budget", type=int, default=16384)
    args = parser.parse_args()
    torch.manual_seed(0)
    device = resolve_device("auto")
    results: dict[str, object] = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
                                  "threads": torch.get_num_threads(), "budget": args.budget}
    with tempfile.TemporaryDirectory() as tmp:
        small = model(Path(tmp) / "small", device, image_size=64, patch=16, hidden=256, layers=4, projection=128)
        results["small"] = run(small, CAPTION, args.budget, naive=True)
        print(json.dumps(results["small"], indent=1), flush=True)
        if args.large:
            large = model(Path(tmp) / "large", device, image_size=224, patch=32, hidden=768, layers=12,
                          projection=512, max_tokens=32)
            text = " ".join(WORDS[:16])
            results["vit_b32"] = run(large, text, args.budget, naive=False)
            print(json.dumps(results["vit_b32"], indent=1), flush=True)
    out = Path(__file__).parent / "results" / ("cross_modal_large.json" if args.large else "cross_modal.json")
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
