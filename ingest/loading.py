"""Load a resolved model on a device and push a dataset's rows through it.

Every loader reads safetensors or skops only and never enables remote code. ``predict``
gives class probabilities (rows x classes) for classifiers, values for regressors,
cosine similarities for sentence pairs and embeddings for encoders.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from modelsci.ingest.architectures import CONFIG_NAME, build
from modelsci.ingest.datasets import DatasetHandle
from modelsci.ingest.models import VL_TASK, ModelError, ModelHandle, read_json, skops_file, trusted_skops_types
from modelsci.ingest.vision_language import load_dual_encoder

__all__ = ["LoadedModel", "load_model", "named_columns", "resolve_device"]


def resolve_device(device: str = "auto") -> str:
    """``auto`` -> ``cuda`` when present, else ``cpu``; asking for CUDA without one is an error."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError("--device cuda: no CUDA device is available on this machine")
    if device != "cpu" and not device.startswith("cuda"):
        raise ModelError(f"--device must be auto, cpu or cuda, not {device!r}")
    return device


def named_columns(model: Any, x: np.ndarray) -> Any:
    """``x`` as a DataFrame with the columns a scikit-learn model was fitted with, when it knows them.

    The rows come in the model's own column order (the dataset takes them by name); naming them
    lets scikit-learn check that, instead of warning on every call.
    """
    names = getattr(model, "feature_names_in_", None)
    if names is None or x.ndim != 2 or x.shape[1] != len(names):
        return x
    import pandas as pd

    return pd.DataFrame(x, columns=list(names))


@dataclass
class LoadedModel:
    """A model in memory, ready to predict."""

    handle: ModelHandle
    device: str
    model: Any
    tokenizer: Any = None

    @property
    def task(self) -> str:
        return self.handle.task

    @property
    def is_classifier(self) -> bool:
        return self.task.endswith("classification")

    def predict(self, data: DatasetHandle, batch_size: int = 256) -> np.ndarray:
        """The model's outputs on every row of ``data``; NaN or inf is a ModelError naming the model."""
        return self._finite(self._predict(data, batch_size), f"{data.entity.source_uri}")

    def _finite(self, out: np.ndarray, where: str) -> np.ndarray:
        bad = ~np.isfinite(out)
        if bad.any():
            rows = int(bad.reshape(len(out), -1).any(axis=1).sum()) if out.ndim else 1
            raise ModelError(f"model {self.handle.id} ({self.handle.path}) outputs NaN or inf on {rows} "
                             f"of {len(out)} rows of {where}")
        return out

    def _predict(self, data: DatasetHandle, batch_size: int) -> np.ndarray:
        framework = self.handle.framework
        if framework in ("sklearn", "torch"):
            return self.predict_array(data.features(), batch_size)
        if framework == "sentence-transformers":
            return self._predict_sentences(data, batch_size)
        if framework == "transformers" and "text" in data.roles:
            return self._predict_text(data, batch_size)
        raise ModelError(f"model {self.handle.id[:19]}: predicting with a {framework} model "
                         f"for {self.task} is not supported")

    def predict_array(self, x: np.ndarray, batch_size: int = 4096) -> np.ndarray:
        """Outputs on a feature matrix (rows x features, in the model's feature order) of a
        scikit-learn or PyTorch model."""
        if self.handle.framework == "sklearn":
            return self._finite(self._predict_sklearn(x), "a feature matrix")
        if self.handle.framework == "torch":
            return self._finite(self._predict_tensor(torch.as_tensor(x, dtype=torch.float32), batch_size),
                                "a feature matrix")
        raise ModelError(f"model {self.handle.id[:19]}: a {self.handle.framework} model does not read feature rows")

    def _predict_sklearn(self, x: np.ndarray) -> np.ndarray:
        x = named_columns(self.model, x)
        if not self.is_classifier:
            return np.asarray(self.model.predict(x), dtype=np.float64)
        if hasattr(self.model, "predict_proba"):
            return np.asarray(self.model.predict_proba(x), dtype=np.float64)
        labels = np.asarray(self.model.predict(x))
        classes = np.asarray(self.model.classes_)
        return (labels[:, None] == classes[None, :]).astype(np.float64)

    @torch.no_grad()
    def _predict_tensor(self, x: torch.Tensor, batch_size: int) -> np.ndarray:
        outputs = [self.model(batch.to(self.device)).float().cpu() for batch in x.split(batch_size)]
        out = torch.cat(outputs)
        if not self.is_classifier:
            return out.squeeze(-1).double().numpy()
        if out.shape[1] == 1:  # a single logit: binary classifier
            p = torch.sigmoid(out[:, 0])
            return torch.stack([1 - p, p], 1).double().numpy()
        return torch.softmax(out, 1).double().numpy()

    @torch.no_grad()
    def _predict_text(self, data: DatasetHandle, batch_size: int) -> np.ndarray:
        texts = data.texts("text")
        pairs = data.texts("text_pair") if "text_pair" in data.roles else None
        outputs = []
        for start in range(0, len(texts), batch_size):
            args = [texts[start:start + batch_size]]
            if pairs is not None:
                args.append(pairs[start:start + batch_size])
            enc = self.tokenizer(*args, padding=True, truncation=True, return_tensors="pt").to(self.device)
            outputs.append(self.model(**enc).logits.float().cpu())
        logits = torch.cat(outputs)
        return (torch.softmax(logits, 1) if self.is_classifier else logits.squeeze(-1)).double().numpy()

    @torch.no_grad()
    def _predict_sentences(self, data: DatasetHandle, batch_size: int) -> np.ndarray:
        first = self.model.encode(data.texts("text"), batch_size=batch_size, convert_to_tensor=True)
        if "text_pair" not in data.roles:
            return first.double().cpu().numpy()
        second = self.model.encode(data.texts("text_pair"), batch_size=batch_size, convert_to_tensor=True)
        return torch.nn.functional.cosine_similarity(first, second).double().cpu().numpy()


def load_model(handle: ModelHandle, device: str = "cpu") -> LoadedModel:
    """Load ``handle`` on ``device``; any failure is a ModelError naming the model."""
    try:
        _quiet(handle.framework)
        return _LOADERS[handle.framework](handle, device)
    except ModelError:
        raise
    except Exception as exc:  # a loader's own error: wrong shapes, missing files, bad configs
        raise ModelError(f"model {handle.id[:19]}... ({handle.path}) fails to load as "
                         f"{handle.framework}: {type(exc).__name__}: {exc}") from None


def _quiet(framework: str) -> None:
    """No per-file loading bars from the hub libraries: a run's own progress line says what loads."""
    if framework in ("transformers", "sentence-transformers"):
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
    elif framework == "diffusers":
        from diffusers.utils import logging as diffusers_logging

        diffusers_logging.disable_progress_bar()


def _load_sklearn(handle: ModelHandle, device: str) -> LoadedModel:
    import skops.io as sio

    file = skops_file(handle.path)
    return LoadedModel(handle, "cpu", sio.load(file, trusted=trusted_skops_types(file)))


def _load_torch(handle: ModelHandle, device: str) -> LoadedModel:
    from safetensors.torch import load_file

    state = load_file(str(handle.path / "model.safetensors"))
    module = build(read_json(handle.path / CONFIG_NAME), {k: list(v.shape) for k, v in state.items()})
    module.load_state_dict(state, strict=True)
    return LoadedModel(handle, device, module.to(device).eval())


def _load_transformers(handle: ModelHandle, device: str) -> LoadedModel:
    import transformers

    if handle.task == VL_TASK:  # a DualEncoder: the model with its tokenizer and image processor
        encoder = load_dual_encoder(handle.path, device)
        return LoadedModel(handle, device, encoder, encoder.tokenizer)

    auto = {
        "text-classification": transformers.AutoModelForSequenceClassification,
        "image-classification": transformers.AutoModelForImageClassification,
        "text-generation": transformers.AutoModelForCausalLM,
    }.get(handle.task, transformers.AutoModel)
    # Causal LMs: half-precision weights load as stored on a GPU, as float32 on a CPU (where
    # half-precision matmuls are slow and inexact); other models load as before.
    dtype = {"dtype": "auto" if device.startswith("cuda") else torch.float32} if handle.task == "text-generation" else {}
    model = auto.from_pretrained(handle.path, trust_remote_code=False, use_safetensors=True,
                                 local_files_only=True, **dtype)
    tokenizer = None
    if any((handle.path / name).exists() for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json")):
        tokenizer = transformers.AutoTokenizer.from_pretrained(handle.path, trust_remote_code=False,
                                                               local_files_only=True)
    return LoadedModel(handle, device, model.to(device).eval(), tokenizer)


def _load_sentence_transformers(handle: ModelHandle, device: str) -> LoadedModel:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(handle.path), device=device, trust_remote_code=False,
                                local_files_only=True)
    return LoadedModel(handle, device, model.eval())


def _load_diffusers(handle: ModelHandle, device: str) -> LoadedModel:
    import diffusers

    if (handle.path / "model_index.json").exists():
        # Components saved as null (a Stable Diffusion layout without a VAE samples in pixel space;
        # no safety checker) are passed as None, which diffusers accepts only when told.
        index = read_json(handle.path / "model_index.json")
        absent = {name: None for name, entry in index.items()
                  if not name.startswith("_") and isinstance(entry, list) and entry[-1:] == [None]}
        model = diffusers.DiffusionPipeline.from_pretrained(
            handle.path, use_safetensors=True, trust_remote_code=False, local_files_only=True, **absent)
        return LoadedModel(handle, device, model.to(device))
    name = read_json(handle.path / "config.json").get("_class_name")
    cls = getattr(diffusers, str(name), None)
    if not (isinstance(cls, type) and issubclass(cls, diffusers.ModelMixin)):
        raise ModelError(f"{handle.path}: config.json names {name!r}, which is not a diffusers model class")
    model = cls.from_pretrained(handle.path, use_safetensors=True, local_files_only=True)
    return LoadedModel(handle, device, model.to(device).eval())


_LOADERS = {
    "sklearn": _load_sklearn, "torch": _load_torch, "transformers": _load_transformers,
    "sentence-transformers": _load_sentence_transformers, "diffusers": _load_diffusers,
}
