"""The catalogue's entities as SQLModel tables; every field says what it holds.

These classes are the single source of the schema: the DuckDB tables, the Arrow schemas that
bundles are checked against, and the README's table reference are all derived from them.
Columns marked "set by the catalogue" are filled in when a bundle is committed.
"""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any

from sqlalchemy import JSON, Column
from sqlmodel import Field, SQLModel

__all__ = [
    "ENTITIES",
    "Analysis",
    "Artifact",
    "Commit",
    "Dataset",
    "Finding",
    "FindingLink",
    "FindingStatus",
    "LinkRelation",
    "ModelInstance",
    "Pillar",
    "Run",
    "RunStatus",
    "source_name",
]


class Pillar(str, Enum):
    """What an analysis does to a model instance."""

    verify = "verify"
    explore = "explore"
    steer = "steer"
    refine = "refine"


class RunStatus(str, Enum):
    succeeded = "succeeded"
    failed = "failed"


class FindingStatus(str, Enum):
    """A finding's standing, as the ``findings`` view derives it (not stored)."""

    current = "current"
    superseded = "superseded"
    verification = "verification"


class LinkRelation(str, Enum):
    supersedes = "supersedes"
    replicates = "replicates"
    contradicts = "contradicts"
    extends = "extends"
    derived_from = "derived_from"


def source_name(source: str) -> str:
    """The name a model or dataset gets when its manifest gives none: the hub id (``org/name``) of
    an ``hf://`` source, else the last part of its path or URI (a folder or file name, the
    scikit-learn dataset of ``sklearn://NAME``; ``local:NAME`` gives ``NAME``)."""
    if source.startswith("hf://"):
        return source.removeprefix("hf://").split("@")[0].strip("/") or source
    tail = source.split("://", 1)[-1].removeprefix("local:").replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    return tail or source


def _json(description: str, default_factory: Any = dict) -> Any:
    return Field(default_factory=default_factory, sa_column=Column(JSON), description=description)


def _commit_id() -> Any:
    return Field(default=None, description="Commit that added this row (set by the catalogue).")


class ModelInstance(SQLModel, table=True):
    """One exact set of weights."""

    __tablename__ = "models"
    id: str = Field(primary_key=True, description="Tensor hash: `sha256:` over every tensor's name, dtype, shape and bytes.")
    name: str | None = Field(default=None, description="Name to show: the manifest's `model.name`, else the hub id (`org/name`), else the folder or file name. Not unique and not part of the id.")
    origin: str = Field(default="submitted", description="`submitted` (registered from a manifest) or `derived` (made by an analysis, e.g. a Rashomon set member, with `base_model_id` the model it was derived from).")
    source_uri: str = Field(description="Where the weights came from: `hf://org/name`, a path relative to the manifest's folder, or `local:NAME` for a local folder or file outside it.")
    revision: str | None = Field(default=None, description="Pinned revision (the hub's commit sha) when the source has one.")
    family: str | None = Field(default=None, description="Model family, e.g. `bert`, `logistic_regression`.")
    architecture: str | None = Field(default=None, description="Architecture class name, e.g. `BertModel`.")
    task: str | None = Field(default=None, description="Task the model is used for, e.g. `text-classification`.")
    modality: str | None = Field(default=None, description="`text`, `image`, `tabular` or `generative`.")
    framework: str | None = Field(default=None, description="`transformers`, `sentence-transformers`, `diffusers`, `torch` or `sklearn`.")
    parameter_count: int | None = Field(default=None, description="Number of scalar parameters.")
    base_model: str | None = Field(default=None, description="Base model as the card names it (lineage).")
    base_model_id: str | None = Field(default=None, description="Id of the base model's instance, when it is in the catalogue.")
    license: str | None = Field(default=None, description="License named by the model card.")
    pipeline_tag: str | None = Field(default=None, description="The card's `pipeline_tag`.")
    tags: list[str] = _json("The card's tags.", list)
    card: dict[str, Any] = _json("Other model card metadata.")
    commit_id: str | None = _commit_id()


class Dataset(SQLModel, table=True):
    """The rows a model was studied on."""

    __tablename__ = "datasets"
    id: str = Field(primary_key=True, description="`sha256:` over what the model reads: the role columns in the order fed (Arrow IPC stream of the rows as used), the roles, split and row limit.")
    name: str | None = Field(default=None, description="Name to show: the manifest's `dataset.name`, else the hub id, the scikit-learn dataset's name or the file or folder name. Not unique and not part of the id.")
    source_uri: str = Field(description="`sklearn://breast_cancer`, `hf://org/name`, a path relative to the manifest's folder, or `local:NAME` for a local file or folder outside it.")
    revision: str | None = Field(default=None, description="Pinned revision, when the source has one.")
    config: str | None = Field(default=None, description="Dataset configuration name, when the source has several.")
    split: str | None = Field(default=None, description="Split used, e.g. `test`.")
    row_limit: int | None = Field(default=None, description="Row limit applied, if any.")
    rows: int = Field(description="Number of rows as used.")
    features: dict[str, Any] = _json("Column name to type, and which columns the model reads.")
    license: str | None = Field(default=None, description="License of the data.")
    commit_id: str | None = _commit_id()


class Analysis(SQLModel, table=True):
    """A registered analysis at one version."""

    __tablename__ = "analyses"
    id: str = Field(primary_key=True, description="`name@version`.")
    name: str = Field(description="Dotted name, e.g. `attribution.integrated_gradients`.")
    version: str = Field(description="Version; a change in results means a new version.")
    family: str = Field(description="`evaluation`, `attribution`, `interactions`, `multiplicity`, `hallucination`, ...")
    pillar: Pillar = Field(description="`verify`, `explore`, `steer` or `refine`.")
    description: str = Field(default="", description="What the analysis computes.")
    params_schema: dict[str, Any] = _json("JSON schema of its parameters.")
    tolerance: float | None = Field(default=None, description="Absolute difference within which two runs replicate; null means overlapping 95% CIs (or equality without CIs).")
    commit_id: str | None = _commit_id()


class Run(SQLModel, table=True):
    """One execution of an analysis on a model and a dataset."""

    __tablename__ = "runs"
    id: str = Field(primary_key=True, description="Run id.")
    model_id: str = Field(description="Model instance studied.")
    dataset_id: str | None = Field(default=None, description="Dataset it was studied on (null for data-free analyses).")
    train_dataset_id: str | None = Field(default=None, description="Dataset a retraining analysis fitted on (null for the others).")
    analysis_id: str = Field(description="`name@version` of the analysis.")
    params: dict[str, Any] = _json("Parameters, with defaults filled in.")
    params_hash: str = Field(description="`sha256:` of the canonical JSON of `params`.")
    seed: int = Field(default=0, description="Random seed.")
    status: RunStatus = Field(description="`succeeded` or `failed`.")
    device: str | None = Field(default=None, description="`cpu`, `cuda`, ... and the GPU's name when there is one.")
    environment: dict[str, Any] = _json("Package versions, python, platform, modelsci commit.")
    started_at: datetime | None = Field(default=None, description="Start time (UTC).")
    finished_at: datetime | None = Field(default=None, description="End time (UTC).")
    wall_s: float | None = Field(default=None, description="Wall-clock seconds.")
    peak_memory_bytes: int | None = Field(default=None, description="Peak memory of the run (device memory on a GPU).")
    verifies_run_id: str | None = Field(default=None, description="For a verification run (`modelsci verify`): the run it re-ran; its findings never change which version is current.")
    error: str | None = Field(default=None, description="Error message of a failed run.")
    traceback: str | None = Field(default=None, description="Traceback of a failed run.")
    commit_id: str | None = _commit_id()


class Finding(SQLModel, table=True):
    """One thing learned about a model instance, with its value and where it came from."""

    __tablename__ = "findings"
    id: str = Field(primary_key=True, description="`sha256:` of (key, run id, payload).")
    key_id: str = Field(description="`sha256:` of the key (model, dataset, analysis name, params hash, seed, kind, subject) that versions share.")
    replication_key: str = Field(description="`sha256:` of the key without the seed: the findings of every seed that share it are replications of each other (see `findings_summary`).")
    seed: int = Field(description="Random seed of the run that produced it (part of the key).")
    model_id: str = Field(description="Model instance the finding is about.")
    dataset_id: str | None = Field(default=None, description="Dataset it was found on.")
    analysis_id: str = Field(description="`name@version` of the analysis that found it.")
    analysis_name: str = Field(description="Analysis name (part of the key; the version is not).")
    params_hash: str = Field(description="Hash of the run's parameters (part of the key).")
    kind: str = Field(description="What sort of finding, e.g. `accuracy`, `feature_importance`.")
    subject: str = Field(default="", description="What within the model it is about, e.g. a feature name; empty for the whole model.")
    run_id: str = Field(description="Run that produced it.")
    statement: str = Field(description="One-line statement in words.")
    value: float | None = Field(default=None, description="The main metric's value.")
    ci_low: float | None = Field(default=None, description="Lower end of the 95% confidence interval.")
    ci_high: float | None = Field(default=None, description="Upper end of the 95% confidence interval.")
    n: int | None = Field(default=None, description="Number of examples or samples behind the value.")
    unit: str | None = Field(default=None, description="Unit or scale of the value, e.g. `fraction`, `nats`.")
    exact: bool | None = Field(default=None, description="True when computed exactly, false when estimated.")
    metrics: dict[str, Any] = _json("Further named metrics (budget, value_full, value_empty, ...).")
    version: int | None = Field(default=None, description="Version within the key, from 1 (set by the catalogue); null for a verification run's finding, which is no version.")
    commit_id: str | None = _commit_id()


class FindingLink(SQLModel, table=True):
    """A typed relation between two findings."""

    __tablename__ = "finding_links"
    src_id: str = Field(primary_key=True, description="Finding the relation starts from: the newer version (supersedes, and its judgment), a later seed's finding (judged against the lowest seed's), or a verification run's finding.")
    dst_id: str = Field(primary_key=True, description="Finding it points to.")
    relation: LinkRelation = Field(primary_key=True, description="`supersedes`, `replicates`, `contradicts`, `extends` or `derived_from`.")
    evidence: dict[str, Any] = _json("Why: for replication judgments the two values and CIs, their difference, the rule applied and what was compared (`between`: versions, seeds or verification).")
    commit_id: str | None = _commit_id()


class Artifact(SQLModel, table=True):
    """A Parquet table attached to a finding, stored under `artifacts/` by its content hash."""

    __tablename__ = "artifacts"
    id: str = Field(primary_key=True, description="`sha256:` of (finding id, name, file hash).")
    finding_id: str = Field(description="Finding the artifact belongs to.")
    name: str = Field(description="Name within the finding, e.g. `attributions`.")
    path: str = Field(description="Path relative to the catalogue: `artifacts/<sha256>.parquet`; query it with `SELECT * FROM '<path>'`.")
    rows: int = Field(description="Number of rows.")
    sha256: str = Field(description="Hex sha256 of the file's bytes.")
    bytes: int = Field(description="File size in bytes.")
    commit_id: str | None = _commit_id()


class Commit(SQLModel, table=True):
    """One landing of a bundle: the catalogue's own history, for as-of queries."""

    __tablename__ = "commits"
    id: str = Field(primary_key=True, description="`sha256:` of (parent, time, author, message, what was added).")
    seq: int = Field(description="Position in the catalogue's history, from 1.")
    parent_id: str | None = Field(default=None, description="Previous commit.")
    created_at: datetime = Field(description="When it landed (UTC).")
    author: str = Field(description="Who committed.")
    message: str = Field(description="What and why.")
    n_models: int = Field(default=0, description="Model instances added.")
    n_datasets: int = Field(default=0, description="Datasets added.")
    n_analyses: int = Field(default=0, description="Analyses added.")
    n_runs: int = Field(default=0, description="Runs added.")
    n_findings: int = Field(default=0, description="Findings added.")
    n_links: int = Field(default=0, description="Finding links added (including supersedes/replicates/contradicts).")
    n_artifacts: int = Field(default=0, description="Artifacts added.")


ENTITIES: tuple[type[SQLModel], ...] = (
    ModelInstance, Dataset, Analysis, Run, Finding, FindingLink, Artifact, Commit,
)
"""In dependency order: what a row references comes before it."""
