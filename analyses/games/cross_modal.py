"""The cross-modal game of a vision-language dual encoder (CLIP, SigLIP): image cells and text tokens.

Players are the cells of a grid over the processed image, aligned with the vision tower's
patches (a cell is ``cell`` x ``cell`` patches), followed by the text's tokens (special and
padding tokens are never players) or, with ``text_players="words"``, its words (the tokens of
one word move together). A missing cell shows a baseline there: ``mean`` the processor's
mean pixel (0 after normalisation), ``zeros`` a black pixel, ``blur`` a Gaussian blur of the
image; a missing token is removed through the attention mask. The value is the model's own
similarity of the masked image and the masked text (CLIP: cosine; SigLIP: the sigmoid's
logit with its scale and bias).

Each distinct image coalition is encoded once and each distinct text coalition once, and a
batch of (image, text) coalition pairs is answered by products of cached embeddings: the cost
of a game is its unique image encodes plus its unique text encodes, never its pairs.
``cross_modal_sampler`` draws image and text coalitions separately from the weighted Banzhaf
kernel and takes all their pairs, so a budget of k^2 pairs costs 2k encodes.

For the pointing game the masker also knows where things are: ``input_box`` maps a box in
pixels of the original image through the processor's resize and centre crop to pixels of the
model's input, ``cell_centres`` are the cells' centres there (a cell past the image's edge:
the centre of its part inside), and ``span_players`` are the text players whose characters
overlap a span of the text (read from a fast tokenizer's offsets).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from modelsci.analyses.games.evaluator import GameEvaluator
from modelsci.ingest.images import decode_image
from modelsci.ingest.vision_language import images_of, zero_shot_prompts

__all__ = ["CrossModalMasker", "cross_modal_games", "cross_modal_sampler"]


class CrossModalMasker:
    """Image cells then text tokens (or words) of one image-text pair; the value is the model's similarity."""

    def __init__(self, model: Any, image: Any, text: str, *, cell: int = 1, baseline: str = "mean",
                 text_players: str = "tokens", encode_batch: int = 64) -> None:
        self.encoder = model.model if hasattr(model, "handle") else model  # a LoadedModel or a DualEncoder
        enc = self.encoder
        self.encode_batch = encode_batch
        decoded = image if hasattr(image, "convert") else decode_image(image)
        self.original_size: tuple[int, int] = decoded.size  # (width, height), as PIL gives it
        self.text = text
        self.image = enc.pixels([decoded])[0]
        self.side = enc.patch_size * cell
        _, h, w = self.image.shape
        self.grid = (math.ceil(h / self.side), math.ceil(w / self.side))
        self.n_a = self.grid[0] * self.grid[1]
        self.baseline = self._baseline(baseline)
        tokens = enc.tokenize([text])
        self.input_ids = tokens["input_ids"][:1]
        self.attention = tokens["attention_mask"][:1]
        special = tokens["special_tokens_mask"][0].bool().cpu()
        positions = [int(p) for p in torch.nonzero(~special & self.attention[0].bool().cpu()).flatten()]
        if text_players == "words":
            word_ids = tokens.word_ids(0)
            groups: dict[int, list[int]] = {}
            for p in positions:
                groups.setdefault(word_ids[p] if word_ids[p] is not None else -1 - p, []).append(p)
            self.text_groups = list(groups.values())
        else:
            self.text_groups = [[p] for p in positions]
        # Characters of each text player (None without a fast tokenizer's offsets).
        chars = [tokens.token_to_chars(0, p) if tokens.encodings else None for p in positions]
        by_position = {p: c for p, c in zip(positions, chars)}
        self.text_spans: list[tuple[int, int] | None] = [
            None if any(by_position[p] is None for p in g) else
            (min(by_position[p].start for p in g), max(by_position[p].end for p in g)) for g in self.text_groups]
        ids = self.input_ids[0].tolist()
        words = [enc.tokenizer.decode([ids[p] for p in g]).strip() or enc.tokenizer.convert_ids_to_tokens(ids[g[0]])
                 for g in self.text_groups]
        self.names = ([f"image({r},{c})" for r in range(self.grid[0]) for c in range(self.grid[1])]
                      + [f"text:{t}" for t in words])
        self.n_text = len(self.text_groups)
        self.n_players = self.n_a + self.n_text
        self.forward_passes = 0
        self.image_encodes = 0
        self.text_encodes = 0
        self.cache: tuple[dict[bytes, torch.Tensor], dict[bytes, torch.Tensor]] = ({}, {})

    def input_box(self, box: list[float]) -> tuple[float, float, float, float]:
        """A box (x0, y0, x1, y1) in pixels of the original image, in pixels of the model's input."""
        processor = self.encoder.image_processor
        width, height = self.original_size
        new_h, new_w = height, width
        if getattr(processor, "do_resize", True):
            new_h, new_w = _resized(processor.size, height, width)
        top = left = 0
        if getattr(processor, "do_center_crop", False):
            crop_h, crop_w = _size(processor.crop_size, "height"), _size(processor.crop_size, "width")
            # transformers' centre crop: floor((size - crop) / 2) in, or padding of ceil((crop - size) / 2) around
            top = (new_h - crop_h) // 2 if new_h >= crop_h else -math.ceil((crop_h - new_h) / 2)
            left = (new_w - crop_w) // 2 if new_w >= crop_w else -math.ceil((crop_w - new_w) / 2)
        sx, sy = new_w / width, new_h / height
        return box[0] * sx - left, box[1] * sy - top, box[2] * sx - left, box[3] * sy - top

    def cell_centres(self) -> np.ndarray:
        """(x, y) of each image cell's centre in pixels of the model's input (cells x 2)."""
        _, h, w = self.image.shape
        rows, cols = np.divmod(np.arange(self.n_a), self.grid[1])
        x = (cols * self.side + np.minimum((cols + 1) * self.side, w)) / 2
        y = (rows * self.side + np.minimum((rows + 1) * self.side, h)) / 2
        return np.stack([x, y], axis=1)

    def span_players(self, start: int, end: int) -> list[int]:
        """Text players (0 = the first text player) whose characters overlap ``text[start:end]``."""
        return [k for k, span in enumerate(self.text_spans) if span is not None and span[0] < end and span[1] > start]

    def _baseline(self, kind: str) -> torch.Tensor:
        processor = self.encoder.image_processor
        if kind == "mean":  # the processor's mean pixel is 0 once normalised
            return torch.zeros_like(self.image)
        if kind == "zeros":
            if not getattr(processor, "do_normalize", False):
                return torch.zeros_like(self.image)
            mean = torch.tensor(processor.image_mean, dtype=self.image.dtype, device=self.image.device)
            std = torch.tensor(processor.image_std, dtype=self.image.dtype, device=self.image.device)
            return (-mean / std)[:, None, None].expand_as(self.image).clone()
        if kind == "blur":
            from scipy.ndimage import gaussian_filter

            blurred = np.stack([gaussian_filter(ch, sigma=max(1.0, self.side / 2)) for ch in self.image.cpu().numpy()])
            return torch.as_tensor(blurred, dtype=self.image.dtype, device=self.image.device)
        raise ValueError(f"unknown image baseline {kind!r}: mean, zeros or blur")

    def masked_images(self, coalitions: np.ndarray) -> torch.Tensor:
        """The processed image with the absent cells of each coalition showing the baseline."""
        _, h, w = self.image.shape
        cells = torch.as_tensor(coalitions.reshape(-1, *self.grid), device=self.image.device)
        mask = cells.repeat_interleave(self.side, 1).repeat_interleave(self.side, 2)[:, None, :h, :w]
        return torch.where(mask, self.image[None], self.baseline[None])

    def masked_attention(self, coalitions: np.ndarray) -> torch.Tensor:
        """The attention mask with the absent tokens (or words) of each coalition removed."""
        mask = self.attention.expand(len(coalitions), -1).clone()
        for k, group in enumerate(self.text_groups):
            absent = torch.as_tensor(~coalitions[:, k], device=mask.device)
            mask[absent.nonzero().flatten()[:, None], torch.tensor(group, device=mask.device)[None]] = 0
        return mask

    def _embed(self, side: int, coalitions: np.ndarray) -> torch.Tensor:
        """Embeddings of one side's coalitions, each distinct one encoded once."""
        cache = self.cache[side]
        if coalitions.shape[1] == 0:
            first, inverse = np.zeros(1, dtype=np.intp), np.zeros(len(coalitions), dtype=np.intp)
            keys = [b""]
        else:  # distinct rows once, vectorised: many pairs share few sides
            packed = np.packbits(coalitions, axis=1)
            unique, first, inverse = np.unique(packed, axis=0, return_index=True, return_inverse=True)
            keys = [row.tobytes() for row in unique]
        todo = [i for i, key in enumerate(keys) if key not in cache]
        rows = coalitions[first[todo]]
        for start in range(0, len(rows), self.encode_batch):
            chunk = rows[start:start + self.encode_batch]
            if side == 0:
                emb = self.encoder.encode_images(self.masked_images(chunk))
                self.image_encodes += len(chunk)
            else:
                ids = self.input_ids.expand(len(chunk), -1)
                emb = self.encoder.encode_texts(ids, self.masked_attention(chunk))
                self.text_encodes += len(chunk)
            self.forward_passes += len(chunk)
            for i, e in zip(todo[start:start + self.encode_batch], emb):
                cache[keys[i]] = e
        table = torch.stack([cache[k] for k in keys])
        return table[torch.as_tensor(inverse.reshape(-1), device=table.device)]

    def cross_modal(self, players: tuple[int, ...]) -> bool:
        """Whether a set of players holds both an image cell and a text player."""
        return any(p < self.n_a for p in players) and any(p >= self.n_a for p in players)

    def encode_sides(self, image_coalitions: np.ndarray, text_coalitions: np.ndarray) -> None:
        """Encode (and cache) every distinct coalition of each side ahead of the pairs that use them."""
        self._embed(0, image_coalitions)
        self._embed(1, text_coalitions)

    def values(self, coalitions: np.ndarray) -> np.ndarray:
        images = self._embed(0, coalitions[:, :self.n_a])
        texts = self._embed(1, coalitions[:, self.n_a:])
        return self.encoder.paired(images, texts).cpu().numpy()

    def pair_values(self, image_coalitions: np.ndarray, text_coalitions: np.ndarray) -> np.ndarray:
        """Values of every (image, text) coalition pair: (len(image), len(text)), one encode per distinct side."""
        images = self._embed(0, image_coalitions)
        texts = self._embed(1, text_coalitions)
        return self.encoder.similarity(images, texts).cpu().numpy()


def _size(size: Any, key: str) -> int | None:
    """A processor's size entry, from a transformers SizeDict or a plain dict."""
    value = size.get(key) if isinstance(size, dict) else getattr(size, key, None)
    return int(value) if value else None


def _resized(size: Any, height: int, width: int) -> tuple[int, int]:
    """(height, width) after the processor's resize, by transformers' own rules for these size forms."""
    if isinstance(size, int):
        return size, size
    if _size(size, "height") and _size(size, "width"):
        return _size(size, "height"), _size(size, "width")
    if _size(size, "shortest_edge") and not _size(size, "longest_edge"):
        short, long = sorted((height, width))
        new_short, new_long = _size(size, "shortest_edge"), int(_size(size, "shortest_edge") * long / short)
        return (new_long, new_short) if width <= height else (new_short, new_long)
    raise ValueError(f"the image processor's size {dict(size) if isinstance(size, dict) else size} is not one the "
                     "pointing game maps boxes through (height and width, or shortest_edge)")


def cross_modal_sampler(masker: CrossModalMasker, p: float, budget: int
                        ) -> Callable[[np.random.Generator, int], np.ndarray]:
    """FIxLIP's cross-modal sampling: ceil(sqrt(budget)) coalitions of each side, drawn from the
    kernel (each player present with probability p), all their pairs served in chunks.

    The sides are drawn and encoded once, on the first call, in the masker's encode batches.
    """
    k = math.ceil(math.sqrt(budget))
    drawn: dict[str, np.ndarray] = {}
    served = [0]

    def sample(rng: np.random.Generator, m: int) -> np.ndarray:
        if not drawn:
            drawn["image"] = rng.random((k, masker.n_a)) < p
            drawn["text"] = rng.random((k, masker.n_text)) < p
            masker.encode_sides(drawn["image"], drawn["text"])
        index = np.arange(served[0], served[0] + m) % (k * k)
        served[0] += m
        return np.concatenate([drawn["image"][index // k], drawn["text"][index % k]], axis=1)

    return sample


def cross_modal_games(model: Any, dataset: Any, rows: range, *, cell: int, baseline: str, text_players: str,
                      target: int | str, encode_batch: int) -> Iterator[tuple[int, GameEvaluator]]:
    """(row, game) per explained row: the image with its own caption, or with the prompt of the
    target class (by default the class the model predicts from all the prompts)."""
    encoder = model.model
    images = images_of(dataset)
    zero_shot = zero_shot_prompts(dataset)
    texts = dataset.texts("text") if zero_shot is None else None
    for i in rows:
        if zero_shot is None:
            text = texts[i]
        else:
            classes, prompts = zero_shot
            if target == "predicted":
                text = prompts[int(np.argmax(encoder.similarities([images[i]], prompts)[0]))]
            elif 0 <= int(target) < len(prompts):
                text = prompts[int(target)]
            else:
                raise ValueError(f"target {target} is not a class index: the classes are 0..{len(prompts) - 1} "
                                 f"({', '.join(classes)})")
        masker = CrossModalMasker(model, images[i], text, cell=cell, baseline=baseline, text_players=text_players,
                                  encode_batch=encode_batch)
        # The masker batches its own encodes: the evaluator may hand it as many pairs as it likes.
        yield i, GameEvaluator(masker, batch_size=1 << 16)
