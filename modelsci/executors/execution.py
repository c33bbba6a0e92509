"""Executing one queued run: what every executor shares.

A worker only executes (load the model and data, run the analysis, return a bundle); the
process that claimed the run lands the bundle (``committer.Committer``), so one process
commits. A run that raises lands as a failed Run with its error and traceback, and with
``environment.failure``: ``run`` when loading or the analysis raised (the same inputs and code
fail again), ``executor`` when it failed outside itself (``failed_bundle``); the planner plans
only the latter again on its own.

Peak memory is the run's own: on CUDA ``torch.cuda.max_memory_allocated`` after resetting
the peak at the start of the run; on CPU the largest resident set size of the process while
the run executes, sampled every 20 ms by a background thread from ``/proc/self/statm`` (the
process's peak ``ru_maxrss`` would report, for every run after the first in one process, the
largest of all runs so far). It includes what the process already held (models and data
cached by earlier runs), which the run records as ``rss_at_start_bytes``; a spike shorter than
the sampling interval can be missed.
"""

from __future__ import annotations

import os
import resource
import statistics
import sys
import threading
import time
import traceback
from collections import deque
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
from modelsci.schemas.entities import ModelInstance, Run, source_name
from modelsci.schemas.manifest import DatasetSpec, ModelSpec
from modelsci.schemas.queued_run import QueuedRun

__all__ = ["STAGES", "Progress", "QueueSummary", "Reporter", "Timings", "execute", "failed_bundle", "scrub_paths",
           "timed_execute"]

Progress = Callable[[float, float], None]

STAGES = ("claim", "start", "transfer_in", "load", "analysis", "transfer_out", "commit")
"""Where a run's time goes, in order: its claim from the queue, submitted until it begins on its
worker, the shipped files written there, model and data loaded (or reused), the analysis, done
until the claiming process has its bundle (the transfer, and any wait for that process to look),
and its commit. Stamps across processes use the wall clock (hosts' clocks must agree)."""


@dataclass
class Timings:
    """Seconds per stage (``STAGES``) summed over an executor's runs; ``loads`` of them loaded
    their model, the others reused the one their worker process kept."""

    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STAGES, 0))
    loads: int = 0
    recent: dict[str, deque[float]] = field(default_factory=lambda: {s: deque(maxlen=1000) for s in STAGES})
    """The last 1,000 runs' seconds per stage (for medians: a long queue's memory stays bounded)."""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, stage: str, seconds: float) -> None:
        """Count ``seconds`` (never below 0: clocks of two processes) for one run's ``stage``."""
        with self._lock:  # the committer's thread adds too
            self.seconds[stage] += max(seconds, 0.0)
            self.counts[stage] += 1
            self.recent[stage].append(max(seconds, 0.0))

    def add_stamps(self, stamps: dict[str, float], submitted: float, arrived: float) -> None:
        """Add one run's stages from its worker's ``stamps`` (``execute``'s, and ``began``/``ended``
        on the wall clock) and the claiming process' wall clock at submission and arrival."""
        if "began" in stamps:
            self.add("start", stamps["began"] - submitted)
        if "ended" in stamps:
            self.add("transfer_out", arrived - stamps["ended"])
        for stage in ("transfer_in", "load", "analysis"):
            if stage in stamps:
                self.add(stage, stamps[stage])
        self.loads += int(stamps.get("loaded", 0))

    def per_run_ms(self) -> dict[str, float]:
        """Mean milliseconds per run of each stage that was measured (first loads and starts included)."""
        return {stage: round(1000 * self.seconds[stage] / self.counts[stage], 2)
                for stage in STAGES if self.counts[stage]}

    def median_ms(self) -> dict[str, float]:
        """Median milliseconds of each measured stage over the last 1,000 runs (a typical run's)."""
        return {stage: round(1000 * statistics.median(self.recent[stage]), 2) for stage in STAGES if self.recent[stage]}


@dataclass
class QueueSummary:
    succeeded: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    peak_in_memory: int = 0
    """The most finished bundles that waited in memory to land at once (executors with a bound)."""
    spilled: int = 0
    """How many finished bundles waited in the spool instead, memory's bound being reached."""
    timings: Timings = field(default_factory=Timings)
    """Where the runs' time went, per stage (``STAGES``)."""


class Reporter:
    """How the executor tells its caller what happens; the CLI draws progress bars from it."""

    def started(self, run: QueuedRun) -> Progress:
        return lambda done, total: None

    def finished(self, run: QueuedRun, result: Run) -> None:
        pass

    def note(self, message: str) -> None:
        """Something the person running the queue should know (the catalogue is busy, say)."""
        print(f"note: {message}", file=sys.stderr, flush=True)


def execute(queued: QueuedRun, device: str, progress: Progress | None = None,
            stamps: dict[str, float] | None = None) -> ResultBundle:
    """Run one queued run; the bundle holds its Run (succeeded or failed) and its findings.

    ``stamps`` receives the seconds spent loading (``load``; ``loaded`` is 1 when the model was
    loaded rather than reused) and in the analysis (``analysis``)."""
    started = datetime.now(UTC).replace(tzinfo=None)
    clock = time.perf_counter()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    with _ResidentPeak() as peak:
        return _execute(queued, device, progress, started, clock, peak, {} if stamps is None else stamps)


def timed_execute(queued: QueuedRun, device: str) -> tuple[ResultBundle, dict[str, float]]:
    """``execute`` in a worker process: the bundle, and its stamps with ``began`` and ``ended`` on the wall clock."""
    stamps = {"began": time.time()}
    bundle = execute(queued, device, stamps=stamps)
    stamps["ended"] = time.time()
    return bundle, stamps


def _execute(queued: QueuedRun, device: str, progress: Progress | None, started: datetime, clock: float,
             peak: _ResidentPeak, stamps: dict[str, float]) -> ResultBundle:
    try:
        plugin_cls = registry().get(queued.analysis_id.split("@")[0])
        if plugin_cls is None or f"{plugin_cls.name}@{plugin_cls.version}" != queued.analysis_id:
            have = f"{plugin_cls.name}@{plugin_cls.version}" if plugin_cls else "nothing"
            raise LookupError(f"analysis {queued.analysis_id} is not installed (have {have}); "
                              "resubmit the manifest to plan it with the installed version")
        plugin = plugin_cls()
    except Exception as exc:  # installing the analysis (at that version) can change this: planned again
        return _failed(queued, device, exc, started, failure="executor")
    try:
        loading = time.perf_counter()
        stamps["loaded"] = float((queued.model_id, device) not in _MODELS)
        model = _load(queued, device)
        dataset = _dataset(queued.dataset_spec, queued.dataset_id, queued)
        train = _train(queued, dataset) if plugin_cls.needs_training_data else None
        stamps["load"] = (analysing := time.perf_counter()) - loading
        torch.manual_seed(queued.seed)
        run = _run_row(queued, device, started)
        run.train_dataset_id = train.id if train is not None else None
        ctx = RunContext(run=run, model=model, dataset=dataset, train=train,
                         params=plugin_cls.Params.model_validate(queued.params), device=device,
                         seed=queued.seed, progress=progress or (lambda done, total: None))
        # One BLAS thread: summation order, and so the last bits of every regression, must not
        # depend on the executor's thread count, or the same run would make other finding ids.
        with threadpool_limits(limits=1, user_api="blas"):
            plugin.run(ctx)
        stamps["analysis"] = time.perf_counter() - analysing
    except Exception as exc:
        return _failed(queued, device, exc, started, failure="run")
    run.status = "succeeded"
    _finish(run, clock, device, peak)
    bundle = ctx.bundle
    _mark_derived(bundle, queued)
    bundle.analyses.append(plugin_cls.entity())
    bundle.runs.append(run)
    return bundle


def _run_row(queued: QueuedRun, device: str, started: datetime | None) -> Run:
    return Run(
        id=queued.run_id, model_id=queued.model_id, dataset_id=queued.dataset_id,
        train_dataset_id=queued.train_dataset_id, analysis_id=queued.analysis_id, params=queued.params, params_hash=params_hash(queued.params),
        seed=queued.seed, status="failed", device=device_name(device),
        environment={**environment(), "attempt": queued.attempt, "run_key": queued.run_key,
                     "submission_id": queued.submission_id},
        started_at=started,
    )


def failed_bundle(queued: QueuedRun, device: str, exc: BaseException,
                  started: datetime | None = None) -> ResultBundle:
    """The bundle of a run that failed outside its analysis: its worker died before it could
    report, or the catalogue refused the bundle it made (planned again on resubmission)."""
    return _failed(queued, device, exc, started, failure="executor")


def _failed(queued: QueuedRun, device: str, exc: BaseException, started: datetime | None, *,
            failure: str) -> ResultBundle:
    """A failed run; ``failure`` is ``run`` when the run itself raised (the same inputs and code
    fail again, so resubmitting does not plan it again without --retry-failed), else ``executor``."""
    run = _run_row(queued, device, started)
    run.environment["failure"] = failure
    run.error = scrub_paths(f"{type(exc).__name__}: {exc}", queued)
    run.traceback = scrub_paths("".join(traceback.format_exception(exc)), queued)
    run.finished_at = datetime.now(UTC).replace(tzinfo=None)
    if started is not None:
        run.wall_s = (run.finished_at - started).total_seconds()
    return ResultBundle(runs=[run])


def scrub_paths(text: str, queued: QueuedRun) -> str:
    """``text`` with the local paths of the run's model, data and manifest folder in the forms the
    catalogue records (``models/rf``, ``local:rf``, ``.``) and the home folder as ``~``: a run's error
    is published with the catalogue, where the files are on this machine is not."""
    spec = queued.model_spec
    places: dict[str, str] = {}
    if spec.get("path") and not is_hub(spec.get("source", "")):
        places[str(spec["path"])] = spec["source"]
    located = spec.get("locations") or {}
    for entity_id, data in ((queued.dataset_id, queued.dataset_spec), (queued.train_dataset_id, queued.train_spec)):
        if entity_id in located and data:
            places[located[entity_id]] = data["source"]
    if spec.get("base_dir"):
        places[str(spec["base_dir"])] = "."
    home = os.path.expanduser("~")
    if home not in ("", "/", "~"):
        places.setdefault(home, "~")
    for path in sorted(places, key=len, reverse=True):  # the longest first: a data file inside the manifest folder
        text = text.replace(path, places[path])
    return text


def _mark_derived(bundle: ResultBundle, queued: QueuedRun) -> None:
    """Models an analysis made from the studied one (Rashomon set members) are ``derived``, and named after it."""
    parent = queued.model_spec.get("name") or source_name(queued.model_spec.get("source", ""))
    for model in bundle.models:
        if model.id == queued.model_id:
            continue
        model.origin = "derived"
        if not model.name:
            index = model.source_uri.rstrip("/").rsplit("/", 1)[-1]
            what = "Rashomon member" if "rashomon-member" in (model.tags or []) else "derived"
            model.name = f"{parent} {what} {index}"


def _finish(run: Run, clock: float, device: str, peak: _ResidentPeak) -> None:
    run.finished_at = datetime.now(UTC).replace(tzinfo=None)
    run.wall_s = time.perf_counter() - clock
    if device.startswith("cuda"):
        run.peak_memory_bytes = int(torch.cuda.max_memory_allocated())
        run.environment["peak_memory"] = "torch.cuda.max_memory_allocated during the run"
    elif peak.start is not None:
        run.peak_memory_bytes = peak.stop()
        run.environment["peak_memory"] = ("largest resident set size of the executing process during the run, "
                                          f"sampled every {_SAMPLE_S * 1000:.0f} ms from /proc/self/statm")
        run.environment["rss_at_start_bytes"] = peak.start
    else:  # no /proc (macOS): the process's peak, which earlier runs in this process may have set
        scale = 1 if sys.platform == "darwin" else 1024
        run.peak_memory_bytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
        run.environment["peak_memory"] = "peak resident set size of the executing process (ru_maxrss)"


_SAMPLE_S = 0.02
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _resident_bytes() -> int | None:
    """The process's resident set size now, or None without /proc."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


class _ResidentPeak:
    """The largest resident set size seen while the block runs, sampled by a daemon thread."""

    def __init__(self) -> None:
        self.start = _resident_bytes()
        self.peak = self.start or 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="modelsci-peak-memory", daemon=True)

    def __enter__(self) -> _ResidentPeak:
        if self.start is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _sample(self) -> None:
        while not self._done.wait(_SAMPLE_S):
            self.peak = max(self.peak, _resident_bytes() or 0)

    def stop(self) -> int:
        """Stop sampling (once; later calls return the same peak) and return the peak in bytes."""
        if not self._done.is_set():
            self._done.set()
            if self._thread.is_alive():
                self._thread.join()
            self.peak = max(self.peak, _resident_bytes() or 0)
        return self.peak


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
        instance = ModelInstance(id=model_id, name=spec.get("name"), source_uri=spec["source"], framework=framework,
                                 task=spec["task"], parameter_count=count)
        handle = ModelHandle(instance, path, framework, spec["task"])
    else:
        handle = resolve_model(ModelSpec(source=spec["source"], name=spec.get("name"), revision=spec.get("revision"),
                                         task=spec["task"]))
    if handle.id != queued.model_id:
        raise ModelError(f"the weights at {handle.path} changed since the run was queued "
                         f"(now {handle.id[:19]}..., queued {queued.model_id[:19]}...)")
    return handle


def _dataset(spec: dict | None, dataset_id: str | None, queued: QueuedRun) -> DatasetHandle | None:
    """The dataset a queued run names, read again from its resolved spec and checked against its id."""
    if spec is None:
        return None
    if dataset_id not in _DATASETS:
        at = (queued.model_spec.get("locations") or {}).get(dataset_id)  # a local source's files here
        handle = resolve_dataset(DatasetSpec.model_validate(spec), queued.model_spec["task"],
                                 location=Path(at) if at else None)
        if handle.id != dataset_id:
            raise ValueError(f"the dataset {handle.entity.source_uri} changed since the run was queued")
        if len(_DATASETS) >= 2:  # keep the last dataset and training data in memory
            _DATASETS.pop(next(iter(_DATASETS)))
        _DATASETS[handle.id] = handle
    return _DATASETS[dataset_id]


def _train(queued: QueuedRun, dataset: DatasetHandle | None) -> DatasetHandle | None:
    """The training data of a retraining analysis: as planned (``dataset.train`` or an sklearn://
    train split); a run queued by an earlier modelsci takes its sklearn:// train split."""
    if queued.train_spec is not None:
        return _dataset(queued.train_spec, queued.train_dataset_id, queued)
    return training_split(dataset, queued.model_spec["task"]) if dataset is not None else None
