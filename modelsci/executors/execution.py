"""Executing one queued run: what every executor shares.

A worker only executes (load the model and data, run the analysis, return a bundle); the
process that claimed the run lands the bundle (``committer.Committer``), so one process
commits. A run that raises lands as a failed Run with its error and traceback.
"""

from __future__ import annotations

import resource
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import torch
from threadpoolctl import threadpool_limits

from modelsci.analyses.base import RunContext, registry
from modelsci.ingest.datasets import DatasetHandle, resolve_dataset, training_split
from modelsci.ingest.hub import is_hub
from modelsci.ingest.loading import LoadedModel, load_model
from modelsci.ingest.models import (
    ModelError,
    ModelHandle,
    check_files,
    detect_framework,
    resolve_model,
    weights_identity,
)
from modelsci.provenance import device_name, environment
from modelsci.schemas.bundle import ResultBundle, params_hash
from modelsci.schemas.entities import ModelInstance, Run
from modelsci.schemas.manifest import DatasetSpec, ModelSpec
from modelsci.schemas.queued_run import QueuedRun

__all__ = ["Progress", "QueueSummary", "Reporter", "execute", "failed_bundle"]

Progress = Callable[[float, float], None]


@dataclass
class QueueSummary:
    succeeded: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


class Reporter:
    """How the executor tells its caller what happens; the CLI draws progress bars from it."""

    def started(self, run: QueuedRun) -> Progress:
        return lambda done, total: None

    def finished(self, run: QueuedRun, result: Run) -> None:
        pass

    def note(self, message: str) -> None:
        """Something the person running the queue should know (the catalogue is busy, say)."""
        print(f"note: {message}", file=sys.stderr, flush=True)


def execute(queued: QueuedRun, device: str, progress: Progress | None = None) -> ResultBundle:
    """Run one queued run; the bundle holds its Run (succeeded or failed) and its findings."""
    started = datetime.now(UTC).replace(tzinfo=None)
    clock = time.perf_counter()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    try:
        plugin_cls = registry().get(queued.analysis_id.split("@")[0])
        if plugin_cls is None or f"{plugin_cls.name}@{plugin_cls.version}" != queued.analysis_id:
            have = f"{plugin_cls.name}@{plugin_cls.version}" if plugin_cls else "nothing"
            raise LookupError(f"analysis {queued.analysis_id} is not installed (have {have}); "
                              "resubmit the manifest to plan it with the installed version")
        plugin = plugin_cls()
        model = _load(queued, device)
        dataset = _dataset(queued)
        train = _training_split(dataset, queued) if plugin_cls.needs_training_data and dataset else None
        torch.manual_seed(queued.seed)
        run = _run_row(queued, device, started)
        ctx = RunContext(run=run, model=model, dataset=dataset, train=train,
                         params=plugin_cls.Params.model_validate(queued.params), device=device,
                         seed=queued.seed, progress=progress or (lambda done, total: None))
        # One BLAS thread: summation order, and so the last bits of every regression, must not
        # depend on the executor's thread count, or the same run would make other finding ids.
        with threadpool_limits(limits=1, user_api="blas"):
            plugin.run(ctx)
    except Exception as exc:
        return _failed(queued, device, exc, started)
    run.status = "succeeded"
    _finish(run, clock, device)
    bundle = ctx.bundle
    bundle.analyses.append(plugin_cls.entity())
    bundle.runs.append(run)
    return bundle


def _run_row(queued: QueuedRun, device: str, started: datetime | None) -> Run:
    return Run(
        id=queued.run_id, model_id=queued.model_id, dataset_id=queued.dataset_id,
        analysis_id=queued.analysis_id, params=queued.params, params_hash=params_hash(queued.params),
        seed=queued.seed, status="failed", device=device_name(device),
        environment={**environment(), "attempt": queued.attempt, "run_key": queued.run_key,
                     "submission_id": queued.submission_id},
        started_at=started,
    )


def failed_bundle(queued: QueuedRun, device: str, exc: BaseException,
                  started: datetime | None = None) -> ResultBundle:
    """The bundle of a run that failed outside its analysis: its worker died before it could
    report, or the catalogue refused the bundle it made."""
    return _failed(queued, device, exc, started)


def _failed(queued: QueuedRun, device: str, exc: BaseException, started: datetime | None) -> ResultBundle:
    run = _run_row(queued, device, started)
    run.error = f"{type(exc).__name__}: {exc}"
    run.traceback = "".join(traceback.format_exception(exc))
    run.finished_at = datetime.now(UTC).replace(tzinfo=None)
    if started is not None:
        run.wall_s = (run.finished_at - started).total_seconds()
    return ResultBundle(runs=[run])


def _finish(run: Run, clock: float, device: str) -> None:
    run.finished_at = datetime.now(UTC).replace(tzinfo=None)
    run.wall_s = time.perf_counter() - clock
    if device.startswith("cuda"):
        run.peak_memory_bytes = int(torch.cuda.max_memory_allocated())
        run.environment["peak_memory"] = "torch.cuda.max_memory_allocated during the run"
    else:
        run.peak_memory_bytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        run.environment["peak_memory"] = "peak resident set size of the executing process"


# Loaded models and datasets are reused by the next runs of the same process.
_MODELS: dict[tuple[str, str], LoadedModel] = {}
_DATASETS: dict[str, DatasetHandle] = {}


def _load(queued: QueuedRun, device: str) -> LoadedModel:
    key = (queued.model_id, device)
    if key not in _MODELS:
        _MODELS.clear()  # keep one model in memory
        _MODELS[key] = load_model(_reopen(queued), device)
    return _MODELS[key]


def _reopen(queued: QueuedRun) -> ModelHandle:
    """The queued model from its recorded folder (or its source), checked against its id."""
    spec = queued.model_spec
    path = Path(spec.get("path", ""))
    if path.exists():
        # The files are read again: they must still be regular files inside the model's folder
        # (for a hub source, the repository's cache folder, whose snapshots link into blobs/).
        check_files(path, path.parent.parent if is_hub(spec["source"]) else path if path.is_dir() else path.parent)
        framework = detect_framework(path)
        model_id, count = weights_identity(path, framework)
        instance = ModelInstance(id=model_id, source_uri=spec["source"], framework=framework,
                                 task=spec["task"], parameter_count=count)
        handle = ModelHandle(instance, path, framework, spec["task"])
    else:
        handle = resolve_model(ModelSpec(source=spec["source"], revision=spec.get("revision"),
                                         task=spec["task"]))
    if handle.id != queued.model_id:
        raise ModelError(f"the weights at {handle.path} changed since the run was queued "
                         f"(now {handle.id[:19]}..., queued {queued.model_id[:19]}...)")
    return handle


def _dataset(queued: QueuedRun) -> DatasetHandle | None:
    if queued.dataset_spec is None:
        return None
    if queued.dataset_id not in _DATASETS:
        handle = resolve_dataset(DatasetSpec.model_validate(queued.dataset_spec), queued.model_spec["task"])
        if handle.id != queued.dataset_id:
            raise ValueError(f"the dataset {handle.entity.source_uri} changed since the run was queued")
        _DATASETS.clear()
        _DATASETS[handle.id] = handle
    return _DATASETS[queued.dataset_id]


def _training_split(dataset: DatasetHandle, queued: QueuedRun) -> DatasetHandle | None:
    return training_split(dataset, queued.model_spec["task"])

