"""Submissions: manifest -> validated, resolved, registered model and dataset -> queued runs.

Everything that can be known at submit is checked there, and every problem is reported at once
at its place in the manifest, before anything is registered: the manifest and each analysis'
parameters; the model's files and (plain PyTorch) its architecture against the weights' shapes;
the columns the model reads, taken by name (a missing one is named) and their count against
the model's (``n_features_in_``, the first layer); the training data of analyses that retrain
the model; each analysis' applicability; several seeds of an analysis whose result does not
depend on the seed (they could not fail to replicate).

A run is keyed by (model id, dataset id, analysis name@version, params hash, seed, and for an
analysis that retrains the model the id of the data it fits on). Submitting
the same manifest again plans nothing for keys that are queued, running or succeeded. A failed
key is planned again, as its next attempt, only when the failure can change:

- the run itself raised (loading the model or data, or the analysis): the same inputs and the
  same code fail again, so it is planned again only with ``retry_failed`` (``--retry-failed``),
  or when modelsci's version or commit differs from the one that failed;
- the run failed outside itself (its worker process died, the catalogue refused the bundle it
  made, the analysis at that version was not installed): it is planned again automatically.

``rerun`` plans a new attempt of every key, whose findings become new versions of the earlier ones.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from modelsci.analyses.base import AnalysisPlugin, registry, unavailable
from modelsci.catalogue.store import Catalogue
from modelsci.ingest.datasets import DatasetHandle, resolve_dataset, resolve_training
from modelsci.ingest.models import ModelHandle, ModelInputs, model_inputs, resolve_model
from modelsci.provenance import environment
from modelsci.schemas.bundle import ResultBundle, params_hash, run_id, run_key
from modelsci.schemas.errors import ModelsciError
from modelsci.schemas.identity import content_id
from modelsci.schemas.manifest import DatasetSpec, Manifest, ManifestError, ModelSpec, parse_manifest, problem_at
from modelsci.schemas.queued_run import QueuedRun
from modelsci.schemas.untrusted_files import RefusedFileError, limit, load_yaml, read_text

__all__ = ["Submission", "plan_runs", "read_manifest", "submit"]


@dataclass
class Submission:
    """What a submission registered and queued."""

    id: str
    model: ModelHandle
    dataset: DatasetHandle | None
    queued: list[str] = field(default_factory=list)
    already_planned: list[str] = field(default_factory=list)
    failed_before: list[str] = field(default_factory=list)
    """Runs that failed for a reason that cannot change, not queued again (``retry_failed`` queues them)."""
    train: DatasetHandle | None = None
    """The data the retraining analyses fit on, when one of them is asked for."""


def read_manifest(path: str | Path) -> str:
    """A manifest file's text: a regular UTF-8 file within the manifest size limit."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        raise ManifestError([f"(top level): no manifest file {path}"])
    try:
        return read_text(path, limit("manifest"), what="manifest")
    except RefusedFileError as exc:
        raise ManifestError([f"(top level): {exc}"]) from None


def submit(cat: Catalogue, manifest_text: str, *, rerun: bool = False, retry_failed: bool = False,
           base_dir: Path | None = None) -> Submission:
    """Validate everything (reporting all problems at once), register, plan and queue.

    Relative local sources are taken relative to ``base_dir`` (the manifest's folder).
    """
    plugins = registry()
    problems: list[str] = []
    try:
        manifest: Manifest | None = parse_manifest(manifest_text, {n: p.Params for n, p in plugins.items()},
                                                   {n: u.install for n, u in unavailable().items()})
    except ManifestError as exc:
        problems, manifest = exc.problems, None
    # Resolve what is valid even when other parts are not, so every problem shows at once.
    model_spec = manifest.model if manifest else _section(manifest_text, "model", ModelSpec)
    dataset_spec = manifest.dataset if manifest else _section(manifest_text, "dataset", DatasetSpec)
    # Local sources are recorded relative to the manifest's folder (``local:NAME`` outside it); where
    # their files are here stays in the queue, which is never exported.
    (model_spec, model_at), (dataset_spec, data_at) = _recorded(model_spec, base_dir), _recorded(dataset_spec, base_dir)
    train_at = None
    if dataset_spec is not None and dataset_spec.train is not None:
        train_spec, train_at = _recorded(dataset_spec.train, base_dir)
        dataset_spec = dataset_spec.model_copy(update={"train": train_spec})
    requests = manifest.analyses if manifest else []
    retraining = [i for i, r in enumerate(requests) if plugins[r.name].needs_training_data]
    model = dataset = train = None
    inputs: ModelInputs | None = None
    if model_spec is not None:
        try:
            model = resolve_model(model_spec, location=model_at)
            inputs = model_inputs(model)
        except ModelsciError as exc:
            problems.append(_at("model.source", str(exc)))
        if dataset_spec is not None:
            try:
                dataset = resolve_dataset(dataset_spec, model_spec.task, inputs, location=data_at)
            except ModelsciError as exc:
                problems.append(_at("dataset.source", str(exc)))
        if dataset is not None and dataset_spec is not None and (retraining or dataset_spec.train is not None):
            try:
                train = resolve_training(dataset_spec, dataset, model_spec.task, inputs, location=train_at)
            except ModelsciError as exc:
                problems.append(_at("dataset.train.source", str(exc)))
    if manifest is not None and model is not None:
        problems += _analysis_refusals(plugins, manifest, model, dataset, train)
    if problems:
        raise ManifestError(problems)
    assert manifest is not None and model is not None
    if not retraining:
        train = None  # checked, but no run fits on it: nothing to register

    manifest = manifest.model_copy(update={"model": model_spec, "dataset": dataset_spec})
    _link_base_model(cat, model)
    analyses = [plugins[r.name].entity() for r in manifest.analyses]
    datasets = [d.entity for d in (dataset, train) if d is not None]
    cat.commit(ResultBundle(models=[model.instance], datasets=list({d.id: d for d in datasets}.values()),
                            analyses=list({a.id: a for a in analyses}.values())),
               author=manifest.submitter,
               message=f"register {manifest.model.source}"
                       + (f" and {manifest.dataset.source}" if manifest.dataset else "")
                       + (f" (trained on {train.entity.source_uri})" if train else ""))
    submission_id = content_id({"manifest": manifest.model_dump(mode="json"), "rerun": rerun})
    locations = {entity_id: str(at) for entity_id, at in ((dataset.id if dataset else None, data_at),
                                                          (train.id if train else None, train_at)) if entity_id and at}
    planned, failed_before = plan_runs(cat, manifest, model, dataset, submission_id, train=train, rerun=rerun,
                                       retry_failed=retry_failed, locations=locations,
                                       base_dir=(base_dir or Path.cwd()).absolute())
    queued = cat.enqueue(planned)
    return Submission(submission_id, model, dataset, queued,
                      [r.run_id for r in planned if r.run_id not in queued], failed_before, train)


def _analysis_refusals(plugins: dict[str, type[AnalysisPlugin]], manifest: Manifest, model: ModelHandle,
                       dataset: DatasetHandle | None, train: DatasetHandle | None) -> list[str]:
    """Each analysis that cannot run here, at its place: not applicable, no training data, seeds that cannot differ."""
    problems = []
    for i, request in enumerate(manifest.analyses):
        plugin = plugins[request.name]
        refusal = plugin.refusal(manifest.model.task, model.framework, manifest.dataset is not None)
        if refusal:
            problems.append(problem_at(("analyses", i, "name"), refusal))
        elif plugin.needs_training_data and dataset is not None and train is None and (
                manifest.dataset is None or manifest.dataset.train is None):  # a broken one is reported as such
            problems.append(problem_at(("analyses", i, "name"), (
                f"{plugin.name} retrains the model, so it needs the data the model was trained on: add it to "
                "the manifest as `dataset.train: {source: train.parquet}` (same forms as `dataset`; "
                "sklearn:// datasets use their seeded train split)")))
        seeds = sorted(set(request.seeds))
        if not plugin.seed_dependent and len(seeds) > 1:
            problems.append(problem_at(("analyses", i, "seeds"), (
                f"{plugin.name}'s values do not depend on the seed, so its seeds {seeds} could not fail to "
                "replicate each other; give one seed")))
    return problems


def plan_runs(cat: Catalogue, manifest: Manifest, model: ModelHandle, dataset: DatasetHandle | None,
              submission_id: str, *, train: DatasetHandle | None = None, rerun: bool = False,
              retry_failed: bool = False, locations: dict[str, str] | None = None,
              base_dir: Path | None = None) -> tuple[list[QueuedRun], list[str]]:
    """One run per (analysis, params, seed), skipping keys already planned unless ``rerun``, and
    keys whose run failed for a reason that cannot change unless ``retry_failed`` (see the module
    docstring). Returns the runs and the ids of the failed runs not planned again.

    ``locations`` (dataset id to the local path its rows are read from) and ``base_dir`` (the
    manifest's folder) go into each queued run's ``model_spec``: local-only state, never exported."""
    local = {"locations": locations or {}, **({"base_dir": str(base_dir)} if base_dir else {})}
    plugins = registry()
    rows = cat.query(
        "SELECT q.run_key, q.attempt, q.status, q.run_id, json_extract_string(r.environment, '$.failure') AS failure, "
        "json_extract_string(r.environment, '$.packages.modelsci') AS version, "
        "json_extract_string(r.environment, '$.modelsci_commit') AS code "
        "FROM store.queue q LEFT JOIN store.runs r ON r.id = q.run_id "
        "QUALIFY row_number() OVER (PARTITION BY q.run_key ORDER BY q.attempt DESC) = 1").to_pylist()
    latest = {r["run_key"]: r for r in rows}
    here = environment()
    runs: list[QueuedRun] = []
    failed_before: list[str] = []
    for request in manifest.analyses:
        plugin = plugins[request.name]
        params = plugin.Params.model_validate(request.params).model_dump(mode="json")
        analysis_id = f"{plugin.name}@{plugin.version}"
        fits_on = train if plugin.needs_training_data else None
        for seed in dict.fromkeys(request.seeds):
            key = run_key(model.id, dataset.id if dataset else None, analysis_id, params_hash(params), seed,
                          fits_on.id if fits_on else None)
            attempt = 0
            if key in latest:
                last = latest[key]
                if last["status"] != "failed" and not rerun:
                    runs.append(_queued(key, last["attempt"], model, dataset, fits_on, analysis_id, params, seed,
                                        manifest, submission_id, local))
                    continue
                lasting = last["failure"] == "run" and (last["version"], last["code"]) == (
                    here["packages"].get("modelsci"), here.get("modelsci_commit"))
                if last["status"] == "failed" and lasting and not (rerun or retry_failed):
                    failed_before.append(last["run_id"])
                    continue
                attempt = last["attempt"] + 1
            runs.append(_queued(key, attempt, model, dataset, fits_on, analysis_id, params, seed, manifest,
                                submission_id, local))
    return runs, failed_before


def _queued(key: str, attempt: int, model: ModelHandle, dataset: DatasetHandle | None,
            train: DatasetHandle | None, analysis_id: str, params: dict, seed: int, manifest: Manifest,
            submission_id: str, local: dict[str, Any]) -> QueuedRun:
    return QueuedRun(
        run_id=run_id(key, attempt), run_key=key, attempt=attempt,
        model_id=model.id, dataset_id=dataset.id if dataset else None, analysis_id=analysis_id,
        params=params, seed=seed,
        # ``source`` and ``name`` as recorded; ``path``, ``locations`` and ``base_dir`` where the files are here.
        model_spec={**manifest.model.model_dump(mode="json"), **model.spec(), **local,
                    "name": model.instance.name, "revision": model.instance.revision or manifest.model.revision},
        # The resolved sources (columns explicit, in the model's order; hub revisions pinned):
        # the executor reads exactly the rows identified here.
        dataset_spec=dataset.spec if dataset else None,
        submission_id=submission_id,
        train_dataset_id=train.id if train else None, train_spec=train.spec if train else None,
    )


def _link_base_model(cat: Catalogue, model: ModelHandle) -> None:
    """Lineage: point ``base_model_id`` at the base model's instance when the catalogue has it."""
    base = model.instance.base_model
    if not base:
        return
    rows = cat.query("SELECT id FROM models WHERE source_uri IN ($a, $b) ORDER BY commit_id LIMIT 1",
                     {"a": f"hf://{base}", "b": base}).to_pylist()
    if rows:
        model.instance.base_model_id = rows[0]["id"]


def _recorded(spec: Any, base_dir: Path | None) -> tuple[Any, Path | None]:
    """``spec`` with a local ``source`` in the form the catalogue records, and where its files are.

    A source inside the manifest's folder (``base_dir``, else the working directory) is recorded
    relative to it (``models/rf``); one outside it as ``local:`` and its folder or file name
    (``local:rf``), so that no local absolute path reaches the catalogue. Hub and ``sklearn://``
    sources are kept as given, with no location.
    """
    if spec is None or "://" in spec.source:
        return spec, None
    base = Path(os.path.normpath((base_dir or Path.cwd()).expanduser().absolute()))
    at = Path(os.path.normpath(base / Path(spec.source).expanduser()))
    inside = at != base and at.is_relative_to(base)
    recorded = at.relative_to(base).as_posix() if inside else f"local:{at.name or 'root'}"
    return spec.model_copy(update={"source": recorded}), at


def _section(text: str, name: str, spec: type[BaseModel]) -> Any:
    """One section of a manifest that failed validation elsewhere, if this section is valid."""
    try:
        data = load_yaml(text)
        return spec.model_validate(data[name]) if isinstance(data, dict) and data.get(name) else None
    except (yaml.YAMLError, ValidationError):
        return None


def _at(place: str, message: str) -> str:
    """Prefix a resolution error with its place in the manifest unless it names one already."""
    return message if message.startswith(("model.", "dataset.")) else f"{place}: {message}"
