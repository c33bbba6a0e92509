"""CLIP dual encoders saved as real transformers folders: for the demo, tests and benchmarks.

``save_clip`` trains a word-level tokenizer offline (``tokenizers``) on the captions it is
given, builds a ``CLIPModel`` of the requested size with random weights, and saves the model
(safetensors), the tokenizer and a ``CLIPImageProcessor`` into one folder that modelsci
ingests like any hub CLIP.

``train_digits_clip`` makes the demo's dual encoder: such a CLIP trained on scikit-learn's
8x8 digits (white ink on black, enlarged to 32x32 pixels, a 4x4 grid of 8-pixel patches)
against captions ``a handwritten digit three``. Training is deterministic (fixed seeds, one
thread) and takes about twenty seconds on one CPU core. The demo and the tests use the weights
it made, shipped in ``examples/demo/digits_clip``; ``python -m modelsci.demo_clip
examples/demo/digits_clip`` makes them again, and the demo trains them itself when they are
missing.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np

from modelsci.demo_models import one_thread, shipped_or_trained

__all__ = ["DIGIT_WORDS", "digit_captions", "digit_images", "save_clip", "train_demo_clip", "train_digits_clip"]

DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
TEMPLATE = "a handwritten digit {label}"
_HELD_OUT = 1500  # digits from this row on are never trained on: the demo's data comes from them
_CARD = ("---\nlicense: bsd-3-clause\ntags: [modelsci-demo, zero-shot-image-classification]\n---\n"
         "A two-layer CLIP trained on scikit-learn's digits against captions `a handwritten digit three`.\n")


def save_clip(folder: Path, captions: list[str], *, seed: int = 0, image_size: int = 32, patch: int = 16,
              hidden: int = 32, layers: int = 1, projection: int = 16, max_tokens: int = 16) -> Path:
    """A random CLIPModel with a word-level tokenizer trained on ``captions`` and its image processor."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, PreTrainedTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(captions, trainers.WordLevelTrainer(special_tokens=["<pad>", "<unk>", "<start>", "<end>"]))
    start, end = tok.token_to_id("<start>"), tok.token_to_id("<end>")
    tok.post_processor = processors.TemplateProcessing(single="<start> $A <end>",
                                                       special_tokens=[("<start>", start), ("<end>", end)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<start>", eos_token="<end>", pad_token="<pad>",
                                   unk_token="<unk>", model_max_length=max_tokens)
    fast.save_pretrained(folder)
    torch.manual_seed(seed)
    heads = max(1, hidden // 32)
    config = CLIPConfig(
        text_config={"vocab_size": fast.vocab_size, "hidden_size": hidden, "intermediate_size": 4 * hidden,
                     "num_hidden_layers": layers, "num_attention_heads": heads, "max_position_embeddings": max_tokens,
                     "bos_token_id": start, "eos_token_id": end, "pad_token_id": 0},
        vision_config={"hidden_size": hidden, "intermediate_size": 4 * hidden, "num_hidden_layers": layers,
                       "num_attention_heads": heads, "image_size": image_size, "patch_size": patch},
        projection_dim=projection)
    CLIPModel(config).eval().save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
                       ).save_pretrained(folder)
    return folder


def digit_images(rows: slice | None = None) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as 32x32 RGB images (uint8, white ink on black) and their labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    ink = digits.images[rows or slice(None)] / 16.0
    pixels = np.rint(255 * ink).astype(np.uint8).repeat(4, 1).repeat(4, 2)
    return np.repeat(pixels[..., None], 3, axis=-1), digits.target[rows or slice(None)]


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def digit_captions(path: Path, n: int | None = None) -> Path:
    """A Parquet file of the first ``n`` held-out digits (all 297 by default): an ``image`` column (the
    datasets Image feature, PNG bytes), a ``label`` column (the digit's word) and a ``text`` column (its caption)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    images, labels = digit_images(slice(_HELD_OUT, None if n is None else _HELD_OUT + n))
    image = pa.array([{"bytes": _png(i), "path": None} for i in images],
                     pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    words = [DIGIT_WORDS[int(d)] for d in labels]
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"image": image, "label": words, "text": [TEMPLATE.format(label=w) for w in words]}),
                   path)
    return path


def train_digits_clip(folder: Path, *, steps: int = 1000, seed: int = 0) -> Path:
    """Train the digits CLIP on the first 1500 digits and save it with its tokenizer and image processor.

    Each step is a zero-shot classification step: every image of a batch against the ten captions.
    """
    import torch
    from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

    captions = [TEMPLATE.format(label=w) for w in DIGIT_WORDS]
    with one_thread():
        save_clip(folder, captions, seed=seed, image_size=32, patch=8, hidden=32, layers=2, projection=32,
                  max_tokens=8)
        model = CLIPModel.from_pretrained(folder, use_safetensors=True)
        processor = CLIPImageProcessor.from_pretrained(folder)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        images, labels = digit_images(slice(0, _HELD_OUT))
        pixels = processor(images=list(images), return_tensors="pt")["pixel_values"]
        labels = torch.as_tensor(labels)
        text = tokenizer(captions, return_tensors="pt", padding=True)
        generator = torch.Generator().manual_seed(seed)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
        model.train()
        for _ in range(steps):
            batch = torch.randint(0, len(labels), (128,), generator=generator)
            out = model(input_ids=text["input_ids"], attention_mask=text["attention_mask"],
                        pixel_values=pixels[batch])
            loss = torch.nn.functional.cross_entropy(out.logits_per_image, labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
    model.save_pretrained(folder)
    (folder / "README.md").write_text(_CARD)
    return folder


def train_demo_clip(models: Path, data: Path) -> list[str]:
    """Put the digits CLIP in ``models/digits_clip`` (the shipped weights, else trained here) and its
    held-out digits with captions in ``data``. Returns the model's name when it was trained."""
    if not data.exists():
        digit_captions(data)
    return shipped_or_trained(models, "digits_clip", train_digits_clip)


def _accuracy(folder: Path) -> float:
    """Zero-shot accuracy on the held-out digits (a check when regenerating)."""
    from modelsci.ingest.vision_language import load_dual_encoder

    encoder = load_dual_encoder(folder, "cpu")
    from PIL import Image

    images, labels = digit_images(slice(_HELD_OUT, None))
    sim = encoder.similarities([Image.fromarray(i) for i in images], [TEMPLATE.format(label=w) for w in DIGIT_WORDS])
    return float(np.mean(sim.argmax(1) == labels))


if __name__ == "__main__":
    out = train_digits_clip(Path(sys.argv[1]))
    print(f"{out}: zero-shot accuracy {_accuracy(out):.0%} on the held-out digits")
