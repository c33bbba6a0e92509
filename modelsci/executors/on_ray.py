"""The Ray executor: queued runs as Ray tasks, on one machine or a cluster without shared files.

This process claims runs, submits each as a Ray task asking for the CPUs and GPU (or GPU
fraction) its analysis declares (``Analysis.num_cpus``, ``Analysis.num_gpus``; one CPU, and one
GPU on CUDA, by default), and lands each returned bundle itself, through the same loop
(``driving.drive``) and ``Committer`` as the local executor: no worker writes the catalogue.

- **No shared filesystem.** On a cluster of more than one node, a local model's or dataset's
  files are read here once and put in Ray's object store (``_Shipment``); a worker that cannot
  see them at the recorded path writes them to its own temporary folder once per node, keyed by
  the model or dataset id, and loads them from there, checked against that id as any run is.
  Hub sources load through the worker's own cache, at the pinned revision. A bundle returns as
  data (its artifacts as Parquet bytes), and landing checks each artifact's hash.
- **Leases.** Each task sends a heartbeat to an actor on this process's node every quarter lease;
  this process renews the leases of the tasks that beat, and gives back to the queue the run of a
  task that stopped beating for a lease (its node died) or that Ray reports lost. A late result
  of a given-back run lands only if no other claim holds the run (``Committer``).
- **Bounded commits.** Bundles land on their own thread while tasks go on; at most ``max_waiting``
  wait in memory, the rest in the spool (``QueueSummary.peak_in_memory`` says how many did).

Without ``address`` it starts a local Ray; with one it joins that cluster, whose nodes need
modelsci (and the analyses' packages) installed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Hashable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from modelsci.analyses.base import registry
from modelsci.catalogue.queue import lease_seconds
from modelsci.catalogue.store import Catalogue
from modelsci.executors.driving import Backend, drive
from modelsci.executors.execution import Progress, QueueSummary, Reporter, execute
from modelsci.executors.leases import LeaseKeeper
from modelsci.ingest.hub import is_hub
from modelsci.schemas.bundle import ResultBundle
from modelsci.schemas.errors import MissingExtraError, ModelsciError
from modelsci.schemas.queued_run import QueuedRun

__all__ = ["run_queue_on_ray"]


class ShipmentError(ModelsciError, ValueError):
    """Files shipped to a worker that cannot be written where they belong."""


class TransferError(ModelsciError, OSError):
    """A bundle's artifact arrived with other bytes than its worker made (the run executes again)."""


def run_queue_on_ray(cat: Catalogue, *, device: str, address: str | None, reporter: Reporter,
                     max_in_flight: int | None = None, max_waiting: int | None = None,
                     lease_s: float | None = None) -> QueueSummary:
    """Execute queued runs as Ray tasks until the queue is empty; returns which succeeded and which failed."""
    try:
        import ray
    except ImportError:
        raise MissingExtraError("the Ray executor needs Ray: pip install 'modelsci[ray]'") from None

    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 configure_logging=False, ignore_reinit_error=True)
    try:
        backend = _RayBackend(ray, device, max_in_flight, lease_s if lease_s is not None else lease_seconds())
        bound = max_waiting or max(2, backend.capacity)
        return drive(cat, backend, reporter, device=backend.run_device, lease_s=backend.lease_s, bound=bound)
    finally:
        if started_here:
            ray.shutdown()


class _RayBackend(Backend):
    def __init__(self, ray: Any, device: str, max_in_flight: int | None, lease_s: float) -> None:  # noqa: ANN401 - the ray module
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        self.ray = ray
        self.lease_s = lease_s
        resources = ray.cluster_resources()
        self.use_gpu = device.startswith("cuda") or (device == "auto" and resources.get("GPU", 0) > 0)
        self.run_device = "cuda" if self.use_gpu else ("cpu" if device == "auto" else device)
        self.capacity = max_in_flight or max(int(resources.get("CPU", 1)), 1)
        # Ray gives each worker one thread; a different count changes the last bits of torch's
        # reductions, and so the finding ids: the workers use this process's count.
        self.threads = torch.get_num_threads()
        self.ship = sum(1 for node in ray.nodes() if node.get("Alive")) > 1
        self.shipments: dict[str, _Shipment] = {}
        self.task = ray.remote(max_retries=0)(_run_task)
        # on this process's node, so that the heartbeats outlive any worker node
        here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)
        self.beats = ray.remote(num_cpus=0)(_Heartbeats).options(scheduling_strategy=here).remote()
        self.leases: dict[Hashable, str] = {}
        self.submitted: dict[Hashable, float] = {}  # wall clock: a task's start is stamped on its node

    def submit(self, queued: QueuedRun, progress: Progress, keeper: LeaseKeeper) -> Hashable:
        plugin = registry().get(queued.analysis_id.split("@")[0])
        cpus = getattr(plugin, "num_cpus", 1)
        gpus = getattr(plugin, "num_gpus", 1) if self.use_gpu else 0
        shipped = self._shipments(queued) if self.ship else []
        ref = self.task.options(num_cpus=cpus, num_gpus=gpus).remote(
            queued, self.run_device, self.threads, shipped, self.beats, self.lease_s / 4)
        self.leases[ref] = queued.lease or ""
        self.submitted[ref] = time.time()
        return ref

    def wait(self, handles: list[Hashable], timeout: float) -> list[tuple[Hashable, ResultBundle | BaseException]]:
        ready, _ = self.ray.wait(handles, num_returns=1, timeout=timeout)
        if ready:  # and whatever else finished meanwhile
            ready, _ = self.ray.wait(handles, num_returns=len(handles), timeout=0)
        done: list[tuple[Hashable, ResultBundle | BaseException]] = []
        for ref in ready:
            self.leases.pop(ref, None)
            submitted = self.submitted.pop(ref, 0.0)
            try:
                bundle, digests, stamps = self.ray.get(ref)
            except Exception as exc:  # noqa: BLE001 - the task's worker or node died, or the task raised
                done.append((ref, exc))
                continue
            self.timings.add_stamps(stamps, submitted, time.time())
            try:
                verify_artifacts(bundle, digests)
            except TransferError as exc:
                done.append((ref, exc))
            else:
                done.append((ref, bundle))
        return done

    def dead(self, running: dict[Hashable, QueuedRun]) -> set[Hashable]:
        ages = self.ray.get(self.beats.ages.remote())
        # a task that has not beaten yet waits for a worker: Ray reschedules or fails it itself
        return {ref for ref in running if ages.get(self.leases.get(ref), 0.0) > self.lease_s}

    def lost(self, error: BaseException) -> bool:
        # RayTaskError: the task itself raised (execute catches an analysis' errors); any other
        # RayError: the worker, its node or the result was lost
        if isinstance(error, TransferError):
            return True
        return isinstance(error, self.ray.exceptions.RayError) and not isinstance(error, self.ray.exceptions.RayTaskError)

    def forget(self, handle: Hashable) -> None:
        self.leases.pop(handle, None)
        self.submitted.pop(handle, None)
        try:
            self.ray.cancel(handle, force=True)
        except Exception:  # noqa: BLE001, S110 - a task on a dead node cannot be cancelled, nor need be
            pass

    def _shipments(self, queued: QueuedRun) -> list[_Shipment]:
        """The local files ``queued`` reads (model, data), each put in the object store once."""
        found = []
        for key, path in _local_files(queued).items():
            if key not in self.shipments:
                self.shipments[key] = _Shipment(key, path, Path(path).is_dir(), self.ray.put(_read_tree(Path(path))))
            found.append(self.shipments[key])
        return found


@dataclass(frozen=True)
class _Shipment:
    """A local model's or dataset's files: the id they were recorded under, their path on the
    driver, and a reference to ``{relative path: bytes}`` in Ray's object store."""

    key: str
    path: str
    folder: bool
    files: Any  # a ray.ObjectRef, resolved only by a worker that cannot see ``path``


def _local_files(queued: QueuedRun) -> dict[str, str]:
    """id -> local path of each local (not hub) file or folder that ``queued`` reads."""
    spec = queued.model_spec
    found = {}
    if spec.get("path") and not is_hub(spec.get("source", "")):
        found[queued.model_id] = str(spec["path"])
    for dataset_id, path in (spec.get("locations") or {}).items():
        found[dataset_id] = str(path)
    for dataset_id, data in ((queued.dataset_id, queued.dataset_spec), (queued.train_dataset_id, queued.train_spec)):
        source = (data or {}).get("source", "")
        if dataset_id and dataset_id not in found and "://" not in source and os.path.isabs(source):
            found[dataset_id] = source  # recorded as an absolute path (a queue made before relative sources)
    return found


def _read_tree(path: Path) -> dict[str, bytes]:
    """The files of a file or folder, by path relative to it (a file: its own name)."""
    if path.is_file():
        return {path.name: path.read_bytes()}
    return {str(f.relative_to(path)): f.read_bytes() for f in sorted(path.rglob("*")) if f.is_file()}


class _Heartbeats:
    """A Ray actor: when each lease's task last beat, as ages in seconds on this actor's clock."""

    def __init__(self) -> None:
        self.last: dict[str, float] = {}

    def beat(self, lease: str) -> None:
        self.last[lease] = time.monotonic()

    def ages(self) -> dict[str, float]:
        now = time.monotonic()
        return {lease: now - at for lease, at in self.last.items()}


def verify_artifacts(bundle: ResultBundle, digests: list[str]) -> None:
    """Raise ``TransferError`` unless the bundle's artifacts hash to ``digests``, their worker's sha256s."""
    arrived = [artifact.sha256 for artifact in bundle.artifacts]
    if arrived != digests:
        changed = sum(a != b for a, b in zip(arrived, digests, strict=False)) + abs(len(arrived) - len(digests))
        raise TransferError(f"{changed} artifact(s) of the bundle of run {bundle.runs[-1].id if bundle.runs else '?'} "
                            "arrived with other bytes than their worker made")


def _run_task(queued: QueuedRun, device: str, threads: int, shipped: list[_Shipment],
              beats: Any, interval: float) -> tuple[ResultBundle, list[str], dict[str, float]]:  # noqa: ANN401 - a Ray actor handle
    """A Ray task: beat while executing ``queued`` on files found here or written from ``shipped``;
    returns the bundle, the sha256 of each of its artifacts, which the driver checks, and the
    run's stamps (``execution.Timings``)."""
    stamps = {"began": time.time()}
    done = threading.Event()

    def beat() -> None:
        while True:
            beats.beat.remote(queued.lease or "")
            if done.wait(interval):
                return

    thread = threading.Thread(target=beat, name="modelsci-heartbeat", daemon=True)
    thread.start()
    try:
        torch.set_num_threads(threads)
        clock = time.perf_counter()
        here = _here(queued, shipped)
        stamps["transfer_in"] = time.perf_counter() - clock
        bundle = execute(here, device, stamps=stamps)
        digests = [artifact.sha256 for artifact in bundle.artifacts]
        stamps["ended"] = time.time()
        return bundle, digests, stamps
    finally:
        done.set()


def _here(queued: QueuedRun, shipped: list[_Shipment]) -> QueuedRun:
    """``queued`` reading the shipped files from this node's copy where their paths do not exist here."""
    moved = {s.key: _materialise(s) for s in shipped if not os.path.exists(s.path)}
    if not moved:
        return queued
    spec = dict(queued.model_spec)
    if queued.model_id in moved:
        spec["path"] = moved[queued.model_id]
    if spec.get("locations"):
        spec["locations"] = {k: moved.get(k, v) for k, v in spec["locations"].items()}
    data = {}
    for field, dataset_id in (("dataset_spec", queued.dataset_id), ("train_spec", queued.train_dataset_id)):
        value = getattr(queued, field)
        if value and dataset_id in moved and os.path.isabs(value.get("source", "")):
            data[field] = {**value, "source": moved[dataset_id]}
    return replace(queued, model_spec=spec, **data)


def _materialise(shipment: _Shipment) -> str:
    """Write a shipment's files under this node's temporary folder once; returns the path that
    stands for the driver's (a folder, or the file inside one)."""
    import ray

    root = Path(tempfile.gettempdir()) / "modelsci-shipped" / hashlib.sha256(shipment.key.encode()).hexdigest()[:32]
    name = os.path.basename(shipment.path.rstrip("/\\")) or "files"
    target = root / name
    if not root.is_dir():
        files: dict[str, bytes] = ray.get(shipment.files)
        tmp = root.with_name(f".{root.name}-{uuid.uuid4().hex}")
        try:
            base = tmp / name if shipment.folder else tmp  # a file's one entry is its own name
            for rel, data in files.items():
                dest = (base / rel).resolve()
                if not dest.is_relative_to(tmp.resolve()):
                    raise ShipmentError(f"a shipped file {rel!r} of {shipment.key[:19]}... would be written outside "
                                        f"{tmp}")
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(data)
            try:
                os.rename(tmp, root)  # another worker of this node may have written it first
            except OSError:
                if not root.is_dir():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return str(target)
