"""Tiny vision-language dual encoders (CLIP, SigLIP) and image-text data, made by the tests."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

CAPTIONS = ["a photo of a red square", "a photo of a blue circle", "a photo of a green cross",
            "a red dog", "a blue cat", "a green bird"]


def _word_tokenizer(captions: list[str], specials: list[str]):  # noqa: ANN202 - a tokenizers.Tokenizer
    """A word-level tokenizer trained offline on ``captions``."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(captions, trainers.WordLevelTrainer(special_tokens=specials))
    return tok


def tiny_clip(folder: Path, *, seed: int = 0, image_size: int = 32, patch: int = 16) -> Path:
    """A random CLIPModel (one layer, width 32) with a word-level tokenizer and an image processor."""
    from modelsci.demo_clip import save_clip

    return save_clip(folder, CAPTIONS, seed=seed, image_size=image_size, patch=patch)


def tiny_siglip(folder: Path, *, seed: int = 0, image_size: int = 32, patch: int = 16, hidden: int = 32) -> Path:
    """A random SiglipModel with a word-level tokenizer (ending in ``</s>``, padded to 16) and its image processor."""
    import torch
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast, SiglipConfig, SiglipImageProcessor, SiglipModel

    folder.mkdir(parents=True, exist_ok=True)
    tok = _word_tokenizer(CAPTIONS, ["<pad>", "<unk>", "</s>"])
    end = tok.token_to_id("</s>")
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", end)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
                                   model_max_length=16)
    fast.save_pretrained(folder)
    torch.manual_seed(seed)
    config = SiglipConfig(
        text_config={"vocab_size": fast.vocab_size, "hidden_size": hidden, "intermediate_size": 2 * hidden,
                     "num_hidden_layers": 1, "num_attention_heads": 2, "max_position_embeddings": 16,
                     "pad_token_id": 0, "eos_token_id": end},
        vision_config={"hidden_size": hidden, "intermediate_size": 2 * hidden, "num_hidden_layers": 1,
                       "num_attention_heads": 2, "image_size": image_size, "patch_size": patch})
    model = SiglipModel(config).eval()
    with torch.no_grad():  # a bias and scale far from 0 and 1, so a value that drops either shows
        model.logit_bias.fill_(-1.5)
        model.logit_scale.fill_(1.2)
    model.save_pretrained(folder)
    SiglipImageProcessor(size={"height": image_size, "width": image_size}).save_pretrained(folder)
    return folder


def png(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def shapes(n: int, size: int = 32, seed: int = 0) -> list[tuple[bytes, str, str]]:
    """(PNG bytes, caption, label) of n random coloured images."""
    rng = np.random.default_rng(seed)
    colours = {"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 200, 30)}
    out = []
    for i in range(n):
        name = list(colours)[i % 3]
        image = rng.integers(0, 60, (size, size, 3))
        x, y = rng.integers(0, size // 2, 2)
        image[y:y + size // 2, x:x + size // 2] = colours[name]
        out.append((png(image), CAPTIONS[i % len(CAPTIONS)], name))
    return out


def metadata_folder(folder: Path, rows: list[tuple[bytes, str, str]]) -> Path:
    """An image folder with metadata.jsonl (file_name, text), as the hub's imagefolder reads it."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "metadata.jsonl", "w") as f:
        for i, (data, caption, _) in enumerate(rows):
            (folder / f"{i}.png").write_bytes(data)
            f.write(json.dumps({"file_name": f"{i}.png", "text": caption}) + "\n")
    return folder
