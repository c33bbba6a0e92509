"""Vision-language dual encoders (CLIP, SigLIP) through transformers: load, encode, compare.

Task ``zero-shot-image-classification`` (the hub's pipeline tag for these models) covers
both zero-shot classification (an image column, a label column and a prompt template) and
image-text similarity (an image column and a text column). A model is a transformers folder
(or hub repository) whose ``config.json`` has ``model_type`` ``clip`` or ``siglip``, with its
tokenizer and image processor; weights load from safetensors and no repository code runs.

The value compared is the model's own: for CLIP the cosine similarity of the projected
image and text embeddings; for SigLIP the sigmoid's logit, cosine x exp(logit_scale) +
logit_bias. Texts are tokenised as the model's own pipeline does (SigLIP: padded to its
maximum length, padding attended), so that the full input's value is the model's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from modelsci.ingest.images import decode_image
from modelsci.ingest.models import DUAL_ENCODERS, check_dual_encoder, read_json

if TYPE_CHECKING:  # torch is imported when a model is loaded, not when a submission is checked
    import torch

__all__ = ["DualEncoder", "images_of", "load_dual_encoder", "zero_shot_prompts"]

@dataclass
class DualEncoder:
    """A CLIP or SigLIP model with its tokenizer and image processor."""

    model: Any
    tokenizer: Any
    image_processor: Any
    kind: str
    device: str

    @property
    def value_name(self) -> str:
        return DUAL_ENCODERS[self.kind]

    @property
    def patch_size(self) -> int:
        return int(self.model.config.vision_config.patch_size)

    @property
    def image_size(self) -> int:
        return int(self.model.config.vision_config.image_size)

    def pixels(self, images: list[Any]) -> torch.Tensor:
        """The processor's pixel values (images x C x H x W) of PIL images or Image feature values."""
        decoded = [image if hasattr(image, "convert") else decode_image(image) for image in images]
        return self.image_processor(images=decoded, return_tensors="pt")["pixel_values"].to(self.device)

    def tokenize(self, texts: list[str]) -> Any:
        """A BatchEncoding (input_ids, attention_mask, special_tokens_mask) as the model's pipeline makes it."""
        import torch

        if self.kind == "siglip":  # trained on texts padded to the full length, padding attended
            enc = self.tokenizer(texts, padding="max_length", truncation=True, return_tensors="pt",
                                 max_length=int(self.model.config.text_config.max_position_embeddings),
                                 return_special_tokens_mask=True)
            enc["attention_mask"] = torch.ones_like(enc["input_ids"])
        else:
            enc = self.tokenizer(texts, padding=True, truncation=True, return_tensors="pt",
                                 return_special_tokens_mask=True)
        return enc.to(self.device)

    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Unit-length image embeddings."""
        import torch

        with torch.no_grad():
            out = self.model.get_image_features(pixel_values=pixel_values.to(self.device))
        emb = getattr(out, "pooler_output", out).float()
        return torch.nn.functional.normalize(emb, dim=-1)

    def encode_texts(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Unit-length text embeddings."""
        import torch

        with torch.no_grad():
            out = self.model.get_text_features(input_ids=input_ids.to(self.device),
                                               attention_mask=attention_mask.to(self.device))
        emb = getattr(out, "pooler_output", out).float()
        return torch.nn.functional.normalize(emb, dim=-1)

    def similarity(self, images: torch.Tensor, texts: torch.Tensor) -> torch.Tensor:
        """The model's similarity of unit embeddings (images x texts), in float64."""
        cosine = images.double() @ texts.double().T
        if self.kind == "siglip":
            scale = float(self.model.logit_scale.detach().exp())
            return cosine * scale + float(self.model.logit_bias.detach())
        return cosine

    def paired(self, images: torch.Tensor, texts: torch.Tensor) -> torch.Tensor:
        """The model's similarity of row i of ``images`` with row i of ``texts``, in float64."""
        cosine = (images.double() * texts.double()).sum(-1)
        if self.kind == "siglip":
            return cosine * float(self.model.logit_scale.detach().exp()) + float(self.model.logit_bias.detach())
        return cosine

    def similarities(self, images: list[Any], texts: list[str], batch_size: int = 64) -> np.ndarray:
        """Similarity of every image with every text (images x texts)."""
        import torch

        image_emb = torch.cat([self.encode_images(self.pixels(images[i:i + batch_size]))
                               for i in range(0, len(images), batch_size)])
        text_emb = []
        for i in range(0, len(texts), batch_size):
            enc = self.tokenize(texts[i:i + batch_size])
            text_emb.append(self.encode_texts(enc["input_ids"], enc["attention_mask"]))
        return self.similarity(image_emb, torch.cat(text_emb)).cpu().numpy()


def load_dual_encoder(path: Path, device: str) -> DualEncoder:
    """The model, its tokenizer and image processor from a checked folder; safetensors only, no remote code."""
    import transformers

    check_dual_encoder(path)
    kind = read_json(path / "config.json")["model_type"]
    model = transformers.AutoModel.from_pretrained(path, trust_remote_code=False, use_safetensors=True,
                                                   local_files_only=True)
    tokenizer = transformers.AutoTokenizer.from_pretrained(path, trust_remote_code=False, local_files_only=True)
    processor = transformers.AutoImageProcessor.from_pretrained(path, trust_remote_code=False, local_files_only=True)
    return DualEncoder(model.to(device).eval(), tokenizer, processor, kind, device)


def zero_shot_prompts(data: Any) -> tuple[list[str], list[str]] | None:
    """A classification dataset's classes (its distinct labels as text, sorted) and their prompts
    (the template with each label in place of ``{label}``); None for image-text pairs."""
    template = data.spec.get("template")
    if not template:
        return None
    classes = sorted({str(v) for v in data.labels()})
    return classes, [template.replace("{label}", c) for c in classes]


def images_of(data: Any) -> list[Any]:
    """The image column's values (Image feature structs with their bytes)."""
    return data.table.column(data.roles["image"]).to_pylist()
