"""The submission manifest: what a contributor asks modelsci to study, as YAML.

    submitter: "Ada Lovelace <ada@example.org>"
    model:
      source: hf://sentence-transformers/all-MiniLM-L6-v2   # or a local folder, or a file
      revision: main
      task: sentence-similarity
    dataset:
      source: sklearn://breast_cancer
      split: test
      columns: {label: target}
      limit: 200
      train: {source: sklearn://breast_cancer, split: train}   # what retraining analyses fit on
    analyses:
      - name: evaluation.performance
        params: {n_bootstrap: 500}
        seeds: [0, 1]

Every problem is reported at once, each at its place in the YAML
(``analyses[1].params.n_steps: Input should be greater than or equal to 1``).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from modelsci.schemas.errors import ModelsciError
from modelsci.schemas.untrusted_files import load_yaml

__all__ = ["AnalysisRequest", "DataSource", "DatasetSpec", "Manifest", "ManifestError", "ModelSpec", "TASKS",
           "parse_manifest", "problem_at"]

TASKS = (
    "text-classification", "sentence-similarity", "feature-extraction", "image-classification",
    "tabular-classification", "tabular-regression", "unconditional-image-generation",
    "text-generation",
    "zero-shot-image-classification",  # vision-language dual encoders: zero-shot classes and image-text pairs
    "text-to-image",  # conditional diffusion pipelines: prompts, or class labels
)
Task = Literal[
    "text-classification", "sentence-similarity", "feature-extraction", "image-classification",
    "tabular-classification", "tabular-regression", "unconditional-image-generation",
    "text-generation",
    "zero-shot-image-classification",
    "text-to-image",
]
ROLES = ("features", "label", "text", "text_pair", "image",
         "prompt", "target", "messages",  # these three: text-generation
         "boxes")  # zero-shot-image-classification: regions named by spans of the text
"""What a model reads from a dataset: each role names one column (``features`` a list of them)."""


class ManifestError(ModelsciError, ValueError):
    """A manifest that cannot be accepted; ``problems`` lists each one with its place."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"the manifest has {len(problems)} problem(s):\n{lines}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSpec(_Strict):
    """Where the model comes from and what it is used for."""

    source: str = Field(min_length=1, description="`hf://org/name[@rev]`, a local folder or a file.")
    name: str | None = Field(default=None, min_length=1, max_length=200, description="Name to show; defaults to the hub id or the folder or file name.")
    revision: str | None = Field(default=None, description="Hub revision (branch, tag or sha); hub sources only.")
    task: Task = Field(description="What the model does, e.g. `tabular-classification`.")


class DataSource(_Strict):
    """Where rows come from, which of them are used, and which columns the model reads."""

    source: str = Field(min_length=1, description="`sklearn://NAME`, `hf://org/name`, a `save_to_disk` folder, a .parquet or .csv file.")
    name: str | None = Field(default=None, min_length=1, max_length=200, description="Name to show; defaults to the hub id, the scikit-learn dataset's name or the file or folder name.")
    revision: str | None = Field(default=None, description="Hub revision; hub sources only (recorded as the commit sha it resolved to).")
    config: str | None = Field(default=None, description="Dataset configuration name (hub datasets).")
    split: str = Field(default="test", description="Split to use; `sklearn://` sources make a seeded train/test split.")
    columns: dict[str, str | list[str]] = Field(default_factory=dict, description="Role (features, label, text, text_pair, image; for text-generation prompt, target (the continuation) and messages (chat turns); for zero-shot-image-classification image-text pairs boxes (per row a list of `{span: [start_char, end_char], box: [x0, y0, x1, y1]}` in pixels of the original image)) to column(s); a model that knows its feature names reads those, by name.")
    limit: int | None = Field(default=None, ge=1, description="Use at most this many rows (the first ones).")
    test_size: float = Field(default=0.25, gt=0, lt=1, description="Test share of the split made for `sklearn://` sources.")
    split_seed: int = Field(default=0, description="Seed of the split made for `sklearn://` sources.")
    template: str | None = Field(default=None, description="zero-shot-image-classification: the prompt each label becomes, with `{label}` where the label goes (e.g. `a photo of a {label}`); given, the rows are classified by their label, else matched with their text.")

    @field_validator("columns")
    @classmethod
    def _known_roles(cls, columns: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(columns) - set(ROLES))
        if unknown:
            raise ValueError(f"unknown role(s) {unknown}; roles are {list(ROLES)}")
        for role, value in columns.items():
            if (role == "features") != isinstance(value, list):
                want = "a list of column names" if role == "features" else "one column name"
                raise ValueError(f"{role} must be {want}")
        features = columns.get("features") or []
        repeated = sorted({c for c in features if features.count(c) > 1})
        if repeated:
            raise ValueError(f"features lists {repeated} more than once")
        return columns


class DatasetSpec(DataSource):
    """The rows to study the model on, which columns it reads, and the data it was trained on."""

    train: DataSource | None = Field(default=None, description="Training data, for analyses that retrain the model (Rashomon sets, preprocessing, TreeFARMS); same forms as `dataset`, its split `train` unless given, its columns the dataset's unless given. `sklearn://` datasets default to their seeded train split.")

    @model_validator(mode="after")
    def _train_split(self) -> DatasetSpec:
        # A training source's split is ``train`` unless the manifest says otherwise.
        if self.train is not None and "split" not in self.train.model_fields_set:
            self.train = self.train.model_copy(update={"split": "train"})
        return self


class AnalysisRequest(_Strict):
    """One analysis to run, with its parameters and seeds."""

    name: str = Field(min_length=1, description="Registered analysis name; see `modelsci analyses`.")
    params: dict[str, Any] = Field(default_factory=dict, description="Parameters; omitted ones take their defaults.")
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1, description="One run per seed.")


class Manifest(_Strict):
    """A submission: one model, the dataset to study it on, and the analyses to run."""

    submitter: str = Field(min_length=1, description="Who submits, e.g. `Ada Lovelace <ada@example.org>`.")
    model: ModelSpec
    dataset: DatasetSpec | None = None
    analyses: list[AnalysisRequest] = Field(min_length=1)


def problem_at(loc: tuple[Any, ...], message: str) -> str:
    """``analyses[1].params.n_steps: message`` from a location tuple."""
    path = ""
    for part in loc:
        if isinstance(part, str) and not part.isprintable():
            part = ascii(part)  # a key with control characters would break the one-line message
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return f"{path or '(top level)'}: {message}"


def parse_manifest(text: str, params_models: Mapping[str, type[BaseModel]] | None = None,
                   not_installed: Mapping[str, str] | None = None) -> Manifest:
    """Parse and validate a manifest; with ``params_models`` (analysis name to its parameter
    model) also check each analysis name and its parameters, where ``not_installed`` maps the
    names of analyses whose extras are missing to their install line. Raises ManifestError
    listing all problems."""
    try:
        data = load_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ManifestError([f"(top level): not valid YAML{where}: "
                             f"{' '.join(str(getattr(exc, 'problem', None) or exc).split())}"]) from None
    if not isinstance(data, dict):
        raise ManifestError([f"(top level): a manifest is a YAML mapping with submitter, model, "
                             f"dataset and analyses; got {type(data).__name__}"])
    problems: list[str] = []
    manifest: Manifest | None = None
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as exc:
        problems += [problem_at(e["loc"], e["msg"]) for e in exc.errors()]
    if params_models is not None:
        problems += _analysis_problems(data.get("analyses"), params_models, not_installed or {})
    if problems:
        raise ManifestError(problems)
    assert manifest is not None
    return manifest


def _analysis_problems(requests: Any, params_models: Mapping[str, type[BaseModel]],
                       not_installed: Mapping[str, str]) -> list[str]:
    """Unknown or uninstalled analysis names, and parameters that do not fit the analysis' parameter model."""
    if not isinstance(requests, list):
        return []
    problems = []
    for i, request in enumerate(requests):
        if not isinstance(request, dict) or not isinstance(request.get("name"), str):
            continue
        name = request["name"]
        if name in not_installed:
            problems.append(problem_at(("analyses", i, "name"), f"{name} is not installed here (what it "
                                       f"needs is missing): {not_installed[name]}"))
            continue
        if name not in params_models:
            close = difflib.get_close_matches(name, list(params_models), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            problems.append(problem_at(("analyses", i, "name"),
                                       f"no analysis named {name!r}{hint} (see `modelsci analyses`)"))
            continue
        params = request.get("params") or {}
        if not isinstance(params, dict):
            continue  # reported by the manifest's own validation
        try:
            params_models[name].model_validate(params)
        except ValidationError as exc:
            problems += [problem_at(("analyses", i, "params", *e["loc"]), e["msg"]) for e in exc.errors()]
    return problems
