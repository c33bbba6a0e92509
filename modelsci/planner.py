"""Submissions: manifest -> validated, resolved, registered model and dataset -> queued runs.

A run is keyed by (model id, dataset id, analysis name@version, params hash, seed). Submitting
the same manifest again plans nothing for keys that are queued, running or succeeded; a
failed key is planned again as its next attempt, and ``rerun`` plans a new attempt of every
key, whose findings become new versions of the earlier ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from modelsci.analyses.base import registry, unavailable
from modelsci.catalogue.store import Catalogue
from modelsci.ingest.datasets import DatasetHandle, resolve_dataset
from modelsci.ingest.models import ModelHandle, resolve_model
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


def read_manifest(path: str | Path) -> str:
    """A manifest file's text: a regular UTF-8 file within the manifest size limit."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        raise ManifestError([f"(top level): no manifest file {path}"])
    try:
        return read_text(path, limit("manifest"), what="manifest")
    except RefusedFileError as exc:
        raise ManifestError([f"(top level): {exc}"]) from None


def submit(cat: Catalogue, manifest_text: str, *, rerun: bool = False,
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
    model_spec, dataset_spec = _relative_to(model_spec, base_dir), _relative_to(dataset_spec, base_dir)
    model = dataset = None
    if model_spec is not None:
        try:
            model = resolve_model(model_spec)
        except ModelsciError as exc:
            problems.append(_at("model.source", str(exc)))
        if dataset_spec is not None:
            try:
                dataset = resolve_dataset(dataset_spec, model_spec.task)
            except ModelsciError as exc:
                problems.append(_at("dataset.source", str(exc)))
    for i, request in enumerate(manifest.analyses if manifest and model else []):
        refusal = plugins[request.name].refusal(manifest.model.task, model.framework, manifest.dataset is not None)
        if refusal:
            problems.append(problem_at(("analyses", i, "name"), refusal))
    if problems:
        raise ManifestError(problems)
    assert manifest is not None and model is not None

    manifest = manifest.model_copy(update={"model": model_spec, "dataset": dataset_spec})
    _link_base_model(cat, model)
    analyses = [plugins[r.name].entity() for r in manifest.analyses]
    cat.commit(ResultBundle(models=[model.instance], datasets=[dataset.entity] if dataset else [],
                            analyses=list({a.id: a for a in analyses}.values())),
               author=manifest.submitter,
               message=f"register {manifest.model.source}"
                       + (f" and {manifest.dataset.source}" if manifest.dataset else ""))
    submission_id = content_id({"manifest": manifest.model_dump(mode="json"), "rerun": rerun})
    planned = plan_runs(cat, manifest, model, dataset, submission_id, rerun=rerun)
    queued = cat.enqueue(planned)
    return Submission(submission_id, model, dataset, queued,
                      [r.run_id for r in planned if r.run_id not in queued])


def plan_runs(cat: Catalogue, manifest: Manifest, model: ModelHandle, dataset: DatasetHandle | None,
              submission_id: str, *, rerun: bool = False) -> list[QueuedRun]:
    """One run per (analysis, params, seed), skipping keys already planned unless ``rerun``."""
    plugins = registry()
    rows = cat.query("SELECT run_key, max(attempt) AS attempt, arg_max(status, attempt) AS status "
                     "FROM store.queue GROUP BY run_key").to_pylist()
    latest = {r["run_key"]: (r["attempt"], r["status"]) for r in rows}
    runs: list[QueuedRun] = []
    for request in manifest.analyses:
        plugin = plugins[request.name]
        params = plugin.Params.model_validate(request.params).model_dump(mode="json")
        analysis_id = f"{plugin.name}@{plugin.version}"
        for seed in dict.fromkeys(request.seeds):
            key = run_key(model.id, dataset.id if dataset else None, analysis_id, params_hash(params), seed)
            attempt = 0
            if key in latest:
                last_attempt, status = latest[key]
                if status != "failed" and not rerun:
                    runs.append(_queued(key, last_attempt, model, dataset, analysis_id, params, seed,
                                        manifest, submission_id))
                    continue
                attempt = last_attempt + 1
            runs.append(_queued(key, attempt, model, dataset, analysis_id, params, seed, manifest,
                                submission_id))
    return runs


def _queued(key: str, attempt: int, model: ModelHandle, dataset: DatasetHandle | None,
            analysis_id: str, params: dict, seed: int, manifest: Manifest, submission_id: str) -> QueuedRun:
    return QueuedRun(
        run_id=run_id(key, attempt), run_key=key, attempt=attempt,
        model_id=model.id, dataset_id=dataset.id if dataset else None, analysis_id=analysis_id,
        params=params, seed=seed,
        model_spec={**manifest.model.model_dump(mode="json"), **model.spec(),
                    "revision": model.instance.revision or manifest.model.revision},
        dataset_spec=manifest.dataset.model_dump(mode="json") if manifest.dataset else None,
        submission_id=submission_id,
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


def _relative_to(spec: Any, base_dir: Path | None) -> Any:
    """``spec`` with a relative local ``source`` made absolute against ``base_dir``."""
    if spec is None or base_dir is None or "://" in spec.source or Path(spec.source).expanduser().is_absolute():
        return spec
    return spec.model_copy(update={"source": str((base_dir / spec.source).absolute())})


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
