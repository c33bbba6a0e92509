"""Model adapters: a manifest's ``model`` section -> a ModelInstance and a folder to load from.

A submitted model is untrusted. Its weights are read from safetensors (or skops for
scikit-learn), never unpickled; a repository that needs its own code is refused, as are
pickle-based weights, each with what to do instead. Recognised layouts, in a folder:

- sentence-transformers: ``modules.json``
- diffusers: ``model_index.json`` (a pipeline) or ``config.json`` with ``_class_name`` (a UNet)
- plain PyTorch: ``modelsci.json`` naming an architecture modelsci knows (``ingest.architectures``)
- transformers: ``config.json`` with ``model_type``
- scikit-learn: one ``.skops`` file (or a ``.skops`` file given directly)

Every file is read through ``schemas.untrusted_files``: regular files only, links that stay
inside the submitted folder, bounded sizes. Everything about the files that can be checked
is checked before the model is registered: pickles, repository code, skops types outside the
trusted set, a torch architecture's shapes against the weights'.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from modelsci.ingest.architectures import ARCHITECTURES, CONFIG_NAME, input_size, parameter_shapes, shape_mismatch
from modelsci.ingest.hub import is_hub, snapshot
from modelsci.ingest.pipelines import CONDITIONAL_TASK, UNCONDITIONAL_TASK, pipeline_layout
from modelsci.schemas.entities import ModelInstance, source_name
from modelsci.schemas.errors import ModelsciError
from modelsci.schemas.identity import (
    TensorRecord,
    safetensors_header,
    safetensors_records,
    skops_hash,
    tensor_hash,
)
from modelsci.schemas.manifest import ModelSpec
from modelsci.schemas.untrusted_files import limit, load_yaml, open_regular, read_text, regular_file, walk

__all__ = ["DUAL_ENCODERS", "PICKLE_SUFFIXES", "VL_TASK", "check_dual_encoder", "SKLEARN_TRUSTED", "ModelError", "ModelHandle", "ModelInputs", "card_metadata", "check_files",
           "model_inputs", "resolve_model", "source_name", "trusted_skops_types", "weights_identity"]

PICKLE_SUFFIXES = frozenset({".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".joblib"})
SKLEARN_TRUSTED = frozenset({
    # scikit-learn's own fitted-state types that skops does not trust by default; modelsci
    # trusts these (they hold arrays, not code) and refuses every other untrusted type.
    "sklearn.tree._tree.Tree",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
    "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
})
_MODALITY = {
    "text-classification": "text", "sentence-similarity": "text", "feature-extraction": "text",
    "image-classification": "image", "tabular-classification": "tabular",
    "tabular-regression": "tabular", "unconditional-image-generation": "generative", "text-to-image": "generative",
    "text-generation": "text",
    "zero-shot-image-classification": "vision-language",
}


class ModelError(ModelsciError, ValueError):
    """A model that cannot be accepted or loaded; the message says why and what to do instead."""


VL_TASK = "zero-shot-image-classification"
DUAL_ENCODERS = {"clip": "cosine similarity", "siglip": "sigmoid logit (cosine x exp(logit_scale) + logit_bias)"}
"""model_type -> the value its similarity is."""


def check_dual_encoder(path: Path) -> None:
    """A folder modelsci can load as a dual encoder: a known model_type, a tokenizer and an image processor."""
    config = read_json(path / "config.json")
    kind = config.get("model_type")
    if kind not in DUAL_ENCODERS:
        raise ModelError(f"{path}: {VL_TASK} needs a CLIP or SigLIP dual encoder (config.json model_type clip or "
                         f"siglip), not {kind!r}" + (" (SigLIP 2's variable-resolution patches are not supported yet)"
                                                     if kind == "siglip2" else ""))
    if not any((path / n).exists() for n in ("tokenizer.json", "vocab.json", "tokenizer_config.json")):
        raise ModelError(f"{path}: no tokenizer (tokenizer.json): save the processor with the model")
    if not (path / "preprocessor_config.json").exists():
        raise ModelError(f"{path}: no image processor (preprocessor_config.json): save the processor with the model")


@dataclass
class ModelHandle:
    """A resolved model: its catalogue entity and the local folder (or file) its weights are in."""

    instance: ModelInstance
    path: Path
    framework: str
    task: str

    @property
    def id(self) -> str:
        return self.instance.id

    def spec(self) -> dict[str, Any]:
        """What the executor needs to load it again (stored with each queued run)."""
        return {"path": str(self.path), "framework": self.framework, "task": self.task}


@dataclass(frozen=True)
class ModelInputs:
    """What a model reads from feature rows: its feature names where it knows them, and how many."""

    names: list[str] | None
    count: int | None
    known_from: str
    """Where they were read, for messages: ``its feature_names_in_``, ``features in modelsci.json``."""


def model_inputs(handle: ModelHandle) -> ModelInputs:
    """The feature names (scikit-learn ``feature_names_in_``, ``features`` in ``modelsci.json``)
    and the feature count (``n_features_in_``, the architecture's first layer) a model reads."""
    if handle.framework == "sklearn":
        import skops.io as sio

        file = skops_file(handle.path)
        try:
            estimator = sio.load(file, trusted=trusted_skops_types(file))
        except ModelError:
            raise
        except Exception as exc:  # skops raises many types for a file it cannot rebuild
            raise ModelError(f"{file}: fails to load with skops: {type(exc).__name__}: {exc}") from None
        names = getattr(estimator, "feature_names_in_", None)
        count = getattr(estimator, "n_features_in_", None)
        return ModelInputs([str(n) for n in names] if names is not None else None,
                           int(count) if count is not None else None,
                           "its feature_names_in_" if names is not None else "its n_features_in_")
    if handle.framework == "torch":
        config = read_json(handle.path / CONFIG_NAME)
        names = config.get("features")
        if names is not None and not (isinstance(names, list) and all(isinstance(n, str) for n in names)
                                      and len(set(names)) == len(names)):
            raise ModelError(f"{handle.path / CONFIG_NAME}: features must be a list of distinct column names")
        try:
            count = input_size(config)
        except ValueError as exc:
            raise ModelError(f"{handle.path}: {exc}") from None
        if names is not None and count is not None and len(names) != count:
            raise ModelError(f"{handle.path / CONFIG_NAME}: features lists {len(names)} column(s) but the "
                             f"architecture reads {count} value(s) per row")
        return ModelInputs(names, count, f"features in {CONFIG_NAME}" if names else "its first layer")
    return ModelInputs(None, None, "")


def resolve_model(spec: ModelSpec, *, location: Path | None = None) -> ModelHandle:
    """Find the model's files, refuse what is unsafe, and identify it by its weights.

    ``location`` is where a local model's files are read when ``spec.source`` is the form recorded
    in the catalogue (relative to the manifest's folder, or ``local:NAME``) rather than a path here.
    """
    revision = None
    if is_hub(spec.source):
        path, revision = snapshot(spec.source, spec.revision)
        root = path.parent.parent  # the repository's cache folder: snapshots link into its blobs/
    else:
        if spec.revision is not None:
            raise ModelError("model.revision: only hub (hf://) sources have revisions")
        path = (location or Path(spec.source)).expanduser().absolute()
        if not path.exists() and not path.is_symlink():
            raise ModelError(f"model.source: {path} does not exist")
        root = path if path.is_dir() else path.parent
    check_files(path, root)
    framework = detect_framework(path)
    model_id, parameter_count = weights_identity(path, framework)
    if framework == "sklearn":
        trusted_skops_types(skops_file(path))
    elif framework == "torch":
        check_architecture(path)
    elif framework == "diffusers" and spec.task in (UNCONDITIONAL_TASK, CONDITIONAL_TASK):
        pipeline_layout(path, spec.task)
    if spec.task == CONDITIONAL_TASK and framework != "diffusers":
        raise ModelError(f"{path}: {CONDITIONAL_TASK} needs a diffusers pipeline, not a {framework} model")
    if spec.task == VL_TASK:
        if framework != "transformers":
            raise ModelError(f"{path}: {VL_TASK} needs a transformers CLIP or SigLIP folder, not a {framework} model")
        check_dual_encoder(path)
    card = card_metadata(path)
    config = read_json(path / "config.json") if path.is_dir() else {}
    known = {k: card.pop(k, None) for k in ("license", "base_model", "pipeline_tag", "tags")}
    base_model = known["base_model"]
    if isinstance(base_model, list):
        base_model = base_model[0] if base_model else None
    tags = known["tags"] if isinstance(known["tags"], list) else []
    source_uri = spec.source.split("@")[0] if is_hub(spec.source) else (spec.source if location else str(path))
    instance = ModelInstance(
        id=model_id, name=spec.name or source_name(source_uri), source_uri=source_uri,
        revision=revision, family=config.get("model_type") or _family(path, framework),
        architecture=_architecture(path, framework, config), task=spec.task,
        modality=_MODALITY.get(spec.task), framework=framework, parameter_count=parameter_count,
        base_model=str(base_model) if base_model else None, license=_str_or_none(known["license"]),
        pipeline_tag=_str_or_none(known["pipeline_tag"]), tags=[str(t) for t in tags],
        card={k: v for k, v in card.items() if _jsonable(v)},
    )
    return ModelHandle(instance, path, framework, spec.task)


def check_files(path: Path, root: Path) -> list[Path]:
    """Every file of a submitted model, each a regular file inside ``root`` (links included)."""
    files = walk(path, what="model.source") if path.is_dir() else [path]
    for file in files:
        regular_file(file, within=root, what="model.source")
    return files


def detect_framework(path: Path) -> str:
    """Which framework's layout ``path`` has; refuses pickles and repositories needing code."""
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".skops":
            return "sklearn"
        if suffix in PICKLE_SUFFIXES:
            raise ModelError(_pickle_refusal([path]))
        if suffix == ".safetensors":
            raise ModelError(f"{path}: a bare safetensors file does not say what architecture it is; "
                             f"put it in a folder with a {CONFIG_NAME} or a transformers config.json")
        raise ModelError(f"{path}: not a model file modelsci can load (a .skops file or a folder)")
    code = sorted(p.relative_to(path).as_posix() for p in walk(path) if p.suffix == ".py")
    config = read_json(path / "config.json")
    if code or "auto_map" in config:
        what = f"its own code ({', '.join(code[:5])})" if code else "its own code (auto_map in config.json)"
        raise ModelError(f"{path}: the repository needs {what}; modelsci never runs a submitted "
                         "model's code (trust_remote_code stays off). Submit a model whose "
                         "architecture transformers, diffusers or modelsci already knows.")
    if (path / "modules.json").exists():
        framework = "sentence-transformers"
    elif (path / "model_index.json").exists() or "_class_name" in config:
        framework = "diffusers"
    elif (path / CONFIG_NAME).exists():
        framework = "torch"
    elif "model_type" in config:
        framework = "transformers"
    elif list(path.glob("*.skops")):
        return "sklearn"
    else:
        raise ModelError(f"{path}: no layout modelsci recognises (modules.json, model_index.json, "
                         f"config.json, {CONFIG_NAME} or a .skops file)")
    if not _safetensors_files(path):
        pickles = sorted(p for p in walk(path) if p.suffix.lower() in PICKLE_SUFFIXES)
        if pickles:
            raise ModelError(_pickle_refusal(pickles))
        raise ModelError(f"{path}: no weights found (no .safetensors file)")
    return framework


def weights_identity(path: Path, framework: str) -> tuple[str, int]:
    """The model id (tensor hash, or skops hash for scikit-learn) and its parameter count."""
    if framework == "sklearn":
        file = skops_file(path)
        try:
            return skops_hash(file), skops_parameter_count(file)
        except ValueError as exc:
            raise ModelError(str(exc)) from None
    count = 0

    def records() -> Iterator[TensorRecord]:
        nonlocal count
        for file in _safetensors_files(path):
            # Weights in a subfolder (a diffusers pipeline's unet/, vae/) are named by it.
            prefix = "" if file.parent == path else file.parent.relative_to(path).as_posix() + "/"
            for name, dtype, shape, data in safetensors_records(file):
                n = 1
                for d in shape:
                    n *= d
                count += n
                yield prefix + name, dtype, shape, data

    try:
        model_id = tensor_hash(records())
    except (ValueError, KeyError, OSError) as exc:
        raise ModelError(f"{path}: cannot read its weights: {exc}") from None
    return model_id, count


def card_metadata(path: Path) -> dict[str, Any]:
    """The YAML front matter of the model card (README.md), or {}."""
    folder = path if path.is_dir() else path.parent
    readme = folder / "README.md"
    if not readme.exists() and not readme.is_symlink():
        return {}
    text = read_text(readme, limit("card"), within=folder, what="model card")
    if not text.startswith("---"):
        return {}
    front, sep, _ = text[3:].partition("\n---")
    if not sep:
        return {}
    try:
        data = load_yaml(front)
    except yaml.YAMLError as exc:
        problem = str(exc).splitlines()[0]
        raise ModelError(f"{readme}: the card's front matter is not plain YAML ({problem}); fix it "
                         "or remove it") from None
    return data if isinstance(data, dict) else {}


def check_architecture(path: Path) -> None:
    """A plain PyTorch model's architecture is one modelsci knows, with the weights' shapes."""
    config = read_json(path / CONFIG_NAME)
    try:
        expected = parameter_shapes(config)
    except ValueError as exc:
        raise ModelError(f"{path}: {exc}") from None
    actual: dict[str, list[int]] = {}
    for file in _safetensors_files(path):
        with open_regular(file, what="weights") as f:
            _, tensors = safetensors_header(f, os.fstat(f.fileno()).st_size, str(file))
        actual.update({name: shape for name, (_, shape, _, _) in tensors.items()})
    mismatch = shape_mismatch(expected, actual)
    if mismatch:
        raise ModelError(f"{path / CONFIG_NAME}: {mismatch}")


def trusted_skops_types(file: Path) -> list[str]:
    """The untrusted types a skops file holds, once each is one modelsci trusts (else refused by name)."""
    import skops.io as sio

    untrusted = sio.get_untrusted_types(file=file)
    refused = sorted(set(untrusted) - SKLEARN_TRUSTED)
    if refused:
        raise ModelError(f"{file}: refusing types that skops does not trust: {', '.join(refused)}. "
                         "Submit a model built from scikit-learn's own estimators.")
    return list(untrusted)


def _safetensors_files(path: Path) -> list[Path]:
    return sorted(p for p in walk(path) if p.suffix == ".safetensors")


def skops_file(path: Path) -> Path:
    if path.is_file():
        return path
    files = sorted(path.glob("*.skops"))
    if len(files) != 1:
        raise ModelError(f"{path}: expected one .skops file, found {len(files)}")
    return files[0]


def skops_parameter_count(file: Path) -> int:
    """Numbers in a skops file's numeric arrays (object arrays, which would need pickle, are skipped)."""
    import io
    import zipfile

    import numpy as np

    count = 0
    with zipfile.ZipFile(file) as archive:
        for name in archive.namelist():
            if name.endswith(".npy"):
                try:
                    count += int(np.load(io.BytesIO(archive.read(name)), allow_pickle=False).size)
                except ValueError:
                    continue
    return count


def _pickle_refusal(files: list[Path]) -> str:
    names = ", ".join(p.name for p in files[:5])
    return (f"refusing pickle-based weights ({names}): loading them can run arbitrary code. "
            "Convert the weights to safetensors (safetensors.torch.save_file, or "
            "save_pretrained(safe_serialization=True)), or save a scikit-learn model with skops.")


def read_json(path: Path) -> dict[str, Any]:
    """A JSON config as a dict ({} when the file is absent or not an object); bounded and regular only."""
    if not path.exists() and not path.is_symlink():
        return {}
    try:
        data = json.loads(read_text(path, limit("json"), what="model config"))
    except json.JSONDecodeError as exc:
        raise ModelError(f"{path}: not valid JSON: {exc}") from None
    return data if isinstance(data, dict) else {}



def _family(path: Path, framework: str) -> str | None:
    if framework == "torch":
        return read_json(path / CONFIG_NAME).get("architecture")
    if framework == "sentence-transformers":
        return read_json(path / "config.json").get("model_type")
    return None


def _architecture(path: Path, framework: str, config: dict[str, Any]) -> str | None:
    if framework == "diffusers":
        return read_json(path / "model_index.json").get("_class_name") or config.get("_class_name")
    if framework == "sklearn":
        schema = _skops_schema(skops_file(path))
        return schema.get("__class__")
    if framework == "torch":
        cls = ARCHITECTURES.get(read_json(path / CONFIG_NAME).get("architecture"))
        return cls.__name__ if cls else None
    architectures = config.get("architectures")
    return architectures[0] if isinstance(architectures, list) and architectures else None


def _skops_schema(file: Path) -> dict[str, Any]:
    import zipfile

    with zipfile.ZipFile(file) as archive:
        return json.loads(archive.read("schema.json"))


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True
