"""Maskers: what a missing player means, per modality.

- tabular: players are columns; a missing column takes a baseline row (``zeros``, ``mean``,
  a reference row) or, ``marginal``, is averaged over background rows.
- text (classifier): players are the tokens without special tokens; a missing token is
  removed through the attention mask (``remove``) or replaced by the mask token (``mask``).
- text pair (sentence encoder): players are the tokens of both texts; the value is the
  cosine similarity of the two embeddings. Each masked side is embedded once and reused for
  every pair it appears in, so a product of k x k coalitions costs 2k forward passes.
- image: players are the cells of a patch grid; a missing cell takes a baseline value
  (``zeros``, ``mean``) or a blurred copy of the image (``blur``).

The explained output of a classifier is the probability of the target class (by default the
class predicted on the full input); of a regressor, its prediction.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["ImageMasker", "PairEncoderMasker", "TabularMasker", "TextClassifierMasker", "target_class"]


def target_class(model: Any, full_output: np.ndarray, target: int | str) -> int | None:
    """The class whose probability is explained (None for a regressor)."""
    if not model.is_classifier:
        return None
    return int(np.argmax(full_output)) if target == "predicted" else int(target)


def _select(model: Any, outputs: np.ndarray, target: int | None) -> np.ndarray:
    return outputs[:, target] if target is not None else outputs.reshape(len(outputs))


class TabularMasker:
    """Columns as players; missing columns from baseline/background rows (averaged over them)."""

    def __init__(self, model: Any, x: np.ndarray, background: np.ndarray, names: list[str],
                 target: int | str = "predicted") -> None:
        self.model = model
        self.x = np.asarray(x, dtype=np.float64)
        self.background = np.atleast_2d(np.asarray(background, dtype=np.float64))
        self.n_players = self.x.shape[0]
        self.names = list(names)
        self.forward_passes = 0
        self.target = target_class(model, model.predict_array(self.x[None])[0], target)

    def values(self, coalitions: np.ndarray) -> np.ndarray:
        m, k = len(coalitions), len(self.background)
        rows = np.where(coalitions[:, None, :], self.x[None, None, :], self.background[None, :, :])
        outputs = self.model.predict_array(rows.reshape(m * k, self.n_players))
        self.forward_passes += m * k
        return _select(self.model, outputs, self.target).reshape(m, k).mean(1)


def baseline_rows(kind: str, data: np.ndarray, reference: list[float] | None = None,
                  n_background: int = 32, rng: np.random.Generator | None = None) -> np.ndarray:
    """Rows a missing tabular player takes its value from."""
    if kind == "zeros":
        return np.zeros((1, data.shape[1]))
    if kind == "mean":
        return data.mean(0, keepdims=True)
    if kind == "reference":
        if reference is None or len(reference) != data.shape[1]:
            raise ValueError(f"baseline 'reference' needs a reference row of {data.shape[1]} values")
        return np.asarray(reference, dtype=np.float64)[None]
    if kind == "marginal":
        rng = rng or np.random.default_rng(0)
        take = rng.choice(len(data), size=min(n_background, len(data)), replace=False)
        return data[np.sort(take)]
    raise ValueError(f"unknown baseline {kind!r}: zeros, mean, reference or marginal")


class TextClassifierMasker:
    """Tokens (without special tokens) of a text classifier's input as players."""

    def __init__(self, model: Any, text: str, text_pair: str | None = None, mode: str = "remove",
                 target: int | str = "predicted") -> None:
        self.model, self.mode = model, mode
        args = [text] if text_pair is None else [text, text_pair]
        enc = model.tokenizer(*args, return_tensors="pt", return_special_tokens_mask=True, truncation=True)
        special = enc.pop("special_tokens_mask")[0].bool()
        self.encoding = {k: v.to(model.device) for k, v in enc.items()}
        self.positions = torch.nonzero(~special).flatten().tolist()
        ids = self.encoding["input_ids"][0].tolist()
        self.names = [model.tokenizer.convert_ids_to_tokens(ids[p]) for p in self.positions]
        self.n_players = len(self.positions)
        self.forward_passes = 0
        full = self._forward(np.ones((1, self.n_players), bool))
        self.target = target_class(model, full[0], target)

    @torch.no_grad()
    def _forward(self, coalitions: np.ndarray) -> np.ndarray:
        m = len(coalitions)
        batch = {k: v.expand(m, -1).clone() for k, v in self.encoding.items()}
        absent = torch.zeros_like(batch["input_ids"], dtype=torch.bool)
        absent[:, self.positions] = torch.as_tensor(~coalitions, device=absent.device)
        if self.mode == "remove":
            batch["attention_mask"][absent] = 0
        else:
            batch["input_ids"][absent] = self.model.tokenizer.mask_token_id or self.model.tokenizer.pad_token_id
        logits = self.model.model(**batch).logits.float()
        self.forward_passes += m
        out = torch.softmax(logits, -1) if self.model.is_classifier else logits
        return out.double().cpu().numpy()

    def values(self, coalitions: np.ndarray) -> np.ndarray:
        return _select(self.model, self._forward(coalitions), self.target)


class PairEncoderMasker:
    """Tokens of both texts as players of a sentence encoder; the value is their cosine similarity."""

    def __init__(self, model: Any, text: str, text_pair: str) -> None:
        self.model = model
        self.sides = [self._side(text), self._side(text_pair)]
        self.n_a = len(self.sides[0]["positions"])
        self.n_players = self.n_a + len(self.sides[1]["positions"])
        self.names = [f"a:{t}" for t in self.sides[0]["names"]] + [f"b:{t}" for t in self.sides[1]["names"]]
        self.forward_passes = 0
        self.embeddings: list[dict[bytes, torch.Tensor]] = [{}, {}]

    def _side(self, text: str) -> dict[str, Any]:
        st = self.model.model
        features = st.preprocess([text])
        ids = features["input_ids"][0]
        special = torch.tensor(st.tokenizer.get_special_tokens_mask(ids.tolist(), already_has_special_tokens=True),
                               dtype=torch.bool)
        positions = torch.nonzero(~special).flatten().tolist()
        tensors = {k: v.to(self.model.device) for k, v in features.items() if isinstance(v, torch.Tensor)}
        extra = {k: v for k, v in features.items() if not isinstance(v, torch.Tensor)}
        return {"tensors": tensors, "extra": extra, "positions": positions,
                "names": st.tokenizer.convert_ids_to_tokens([int(ids[p]) for p in positions])}

    @torch.no_grad()
    def _embed(self, side: int, coalitions: np.ndarray) -> torch.Tensor:
        """Embeddings of one side under each of its coalitions, each unique one computed once."""
        cache = self.embeddings[side]
        keys = [row.tobytes() for row in np.packbits(coalitions, axis=1)] if coalitions.shape[1] else [b""] * len(coalitions)
        todo = {}
        for i, key in enumerate(keys):
            if key not in cache and key not in todo:
                todo[key] = i
        if todo:
            spec = self.sides[side]
            rows = coalitions[list(todo.values())]
            m = len(rows)
            batch = {k: v.expand(m, -1).clone() for k, v in spec["tensors"].items()}
            mask = batch["attention_mask"]
            mask[:, spec["positions"]] = torch.as_tensor(rows, device=mask.device).to(mask.dtype)
            emb = self.model.model({**batch, **spec["extra"]})["sentence_embedding"].float()
            emb = torch.nn.functional.normalize(emb, dim=-1)
            self.forward_passes += m
            for key, e in zip(todo, emb):
                cache[key] = e
        return torch.stack([cache[k] for k in keys])

    def values(self, coalitions: np.ndarray) -> np.ndarray:
        a = self._embed(0, coalitions[:, :self.n_a])
        b = self._embed(1, coalitions[:, self.n_a:])
        return (a.double() * b.double()).sum(-1).cpu().numpy()

    def pair_values(self, side_a: np.ndarray, side_b: np.ndarray) -> np.ndarray:
        """Values of the product of two sets of side coalitions: (len(a), len(b)), 2 x len forward passes."""
        a = self._embed(0, side_a)
        b = self._embed(1, side_b)
        return (a.double() @ b.double().T).cpu().numpy()


class ImageMasker:
    """Cells of a patch grid over an image as players."""

    def __init__(self, model: Any, image: np.ndarray, shape: tuple[int, int, int], patch: int,
                 baseline: str = "zeros", target: int | str = "predicted") -> None:
        self.model = model
        self.shape = tuple(shape)
        c, h, w = self.shape
        self.image = np.asarray(image, dtype=np.float64).reshape(self.shape)
        self.grid = (-(-h // patch), -(-w // patch))
        self.patch = patch
        self.n_players = self.grid[0] * self.grid[1]
        self.names = [f"({r},{col})" for r in range(self.grid[0]) for col in range(self.grid[1])]
        self.baseline = self._baseline(baseline)
        self.forward_passes = 0
        full = model.predict_array(self.image.reshape(1, -1))
        self.target = target_class(model, full[0], target)

    def _baseline(self, kind: str) -> np.ndarray:
        if kind == "zeros":
            return np.zeros(self.shape)
        if kind == "mean":
            return np.broadcast_to(self.image.mean(axis=(1, 2), keepdims=True), self.shape).copy()
        if kind == "blur":
            from scipy.ndimage import gaussian_filter

            return np.stack([gaussian_filter(ch, sigma=max(1.0, self.patch / 2)) for ch in self.image])
        raise ValueError(f"unknown image baseline {kind!r}: zeros, mean or blur")

    def pixel_mask(self, coalitions: np.ndarray) -> np.ndarray:
        _, h, w = self.shape
        cells = coalitions.reshape(-1, *self.grid)
        full = np.kron(cells, np.ones((self.patch, self.patch), dtype=bool))
        return full[:, :h, :w].astype(bool)

    def values(self, coalitions: np.ndarray) -> np.ndarray:
        mask = self.pixel_mask(coalitions)[:, None]
        images = np.where(mask, self.image[None], self.baseline[None])
        outputs = self.model.predict_array(images.reshape(len(coalitions), -1))
        self.forward_passes += len(coalitions)
        return _select(self.model, outputs, self.target)
