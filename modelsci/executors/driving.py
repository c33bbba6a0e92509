"""The loop every executor shares: claim runs, hand them to a backend, land what comes back.

A ``Backend`` executes runs somewhere (this process, a pool of worker processes, Ray tasks) and
says which finished; ``drive`` claims runs while the backend has room, keeps their leases
renewed while their executors are alive (``LeaseKeeper``), gives back the runs of executors that
died, and lands each bundle through the ``Committer``. With ``bound``, bundles land on a thread
of their own while claiming goes on, at most ``bound`` of them wait in memory, and the rest wait
in the spool (``_Streaming``), so that a slow commit neither stalls the workers nor grows memory.
"""

from __future__ import annotations

import queue
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Hashable

from modelsci.catalogue.connection import CatalogueBusyError
from modelsci.catalogue.queue import worker_name
from modelsci.catalogue.store import Catalogue
from modelsci.executors.committer import Committer, claim_unless_busy, release
from modelsci.executors.execution import Progress, QueueSummary, Reporter, Timings, failed_bundle
from modelsci.executors.leases import LeaseKeeper
from modelsci.schemas.bundle import ResultBundle
from modelsci.schemas.queued_run import QueuedRun

__all__ = ["Backend", "drive"]

_GIVE_BACKS = 2  # a run whose executor dies this often in one `modelsci run` lands failed


class Backend(ABC):
    """Where runs execute: ``submit`` one, ``wait`` for some to finish."""

    capacity: int
    """How many runs may execute at once."""
    timings: Timings
    """Where the backend adds its runs' stages (``drive`` sets it to the summary's)."""

    @abstractmethod
    def submit(self, queued: QueuedRun, progress: Progress, keeper: LeaseKeeper) -> Hashable:
        """Start executing ``queued`` (``progress`` for a run executed here, ``keeper`` to renew
        its lease while it does); returns a handle for ``wait``."""

    @abstractmethod
    def wait(self, handles: list[Hashable], timeout: float) -> list[tuple[Hashable, ResultBundle | BaseException]]:
        """The handles that finished within ``timeout`` seconds, each with its bundle, or the error
        that says its executor failed (a worker process or node that died)."""

    def dead(self, running: dict[Hashable, QueuedRun]) -> set[Hashable]:
        """The handles whose executor is presumed dead (no heartbeat for a lease)."""
        return set()

    def lost(self, error: BaseException) -> bool:
        """Whether ``error`` means the executor was lost (the run goes back to the queue), rather
        than that executing it failed (it lands failed)."""
        return False

    def forget(self, handle: Hashable) -> None:
        """Stop caring about a handle whose run was given back (cancel it, where one can)."""


def drive(cat: Catalogue, backend: Backend, reporter: Reporter, *, device: str, lease_s: float | None = None,
          bound: int | None = None) -> QueueSummary:
    """Execute queued runs on ``backend`` until the queue is empty; returns which succeeded and which failed."""
    summary = QueueSummary()
    backend.timings = summary.timings
    keeper = LeaseKeeper(cat, lease_s)
    committer = Committer(cat, reporter, summary, keeper)
    worker = worker_name()
    in_flight: dict[Hashable, QueuedRun] = {}
    stale: dict[Hashable, QueuedRun] = {}  # given back: a late result is landed only if its lease allows
    give_backs: dict[str, int] = {}
    streaming = _Streaming(committer, keeper, bound, summary) if bound else None
    submitting: QueuedRun | None = None
    try:
        committer.flush()  # what an earlier run left in the spool, before its runs are claimed again
        while True:
            while (len(in_flight) < backend.capacity and (streaming is not None or not committer.waiting)
                   and (queued := _claim(cat, keeper, worker, summary, busy_ok=bool(in_flight)))):
                progress = committer.started(queued)
                keeper.hold(queued)
                submitting = queued  # an in-process backend executes it before ``submit`` returns
                in_flight[backend.submit(queued, progress, keeper)] = queued
                submitting = None
            if not in_flight:
                if streaming is not None:
                    streaming.close()
                    streaming = None
                if not committer.waiting:
                    break
                committer.flush(patient=True)  # nothing runs: wait for the lock, then claim more
                continue
            for handle, outcome in backend.wait([*in_flight, *stale], timeout=keeper.interval):
                if handle in stale:
                    queued = stale.pop(handle)
                    if isinstance(outcome, ResultBundle):
                        _land(committer, streaming, queued, outcome)  # dropped unless its lease allows
                    continue
                queued = in_flight.pop(handle)
                if isinstance(outcome, BaseException):
                    if backend.lost(outcome) and give_backs.get(queued.run_id, 0) < _GIVE_BACKS:
                        give_backs[queued.run_id] = give_backs.get(queued.run_id, 0) + 1
                        reporter.note(f"the executor of run {queued.run_id} was lost ({type(outcome).__name__}); "
                                      "it goes back to the queue")
                        keeper.give_back(queued)
                        continue
                    outcome = failed_bundle(queued, device, outcome)
                _land(committer, streaming, queued, outcome)
            if keeper.due():
                for handle in backend.dead(in_flight):
                    queued = in_flight.pop(handle)
                    reporter.note(f"no heartbeat from the executor of run {queued.run_id} for {keeper.lease_s:g} s; "
                                  "it goes back to the queue")
                    keeper.give_back(queued)
                    stale[handle] = queued
                keeper.renew()
        for handle in stale:
            backend.forget(handle)
    except BaseException:
        if streaming is not None:
            streaming.abort()
        with keeper.catalogue:
            release(cat, [*in_flight.values(), *([submitting] if submitting else [])])
        if (kept := committer.kept()) is not None:
            reporter.note(kept)
        raise
    return summary


def _claim(cat: Catalogue, keeper: LeaseKeeper, worker: str, summary: QueueSummary, *,
           busy_ok: bool) -> QueuedRun | None:
    clock = time.perf_counter()
    with keeper.catalogue:  # not while the committer's thread is landing
        queued = claim_unless_busy(cat, worker, busy_ok=busy_ok)
    if queued is not None:
        summary.timings.add("claim", time.perf_counter() - clock)
    return queued


def _land(committer: Committer, streaming: _Streaming | None, queued: QueuedRun, bundle: ResultBundle) -> None:
    if streaming is None:
        committer.land(queued, bundle)
    else:
        streaming.put(queued, bundle)


class _Streaming:
    """Lands bundles on a thread of its own; at most ``bound`` wait in memory, the rest in the spool.

    ``summary.peak_in_memory`` records the most bundles that waited in memory at once."""

    def __init__(self, committer: Committer, keeper: LeaseKeeper, bound: int, summary: QueueSummary) -> None:
        self.committer = committer
        self.bound = bound
        self.summary = summary
        self.in_memory = 0
        self._lock = threading.Lock()
        self._items: queue.Queue[tuple[QueuedRun, ResultBundle | None] | None] = queue.Queue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="modelsci-committer", daemon=True)
        self._thread.start()

    def put(self, queued: QueuedRun, bundle: ResultBundle) -> None:
        """Queue a finished run's bundle for landing: in memory while there is room, else in the spool."""
        if self._error is not None:
            raise self._error
        with self._lock:
            room = self.in_memory < self.bound
            if room:
                self.in_memory += 1
                self.summary.peak_in_memory = max(self.summary.peak_in_memory, self.in_memory)
        if not room:
            self.committer.spill(queued, bundle)
            self.summary.spilled += 1
        self._items.put((queued, bundle if room else None))

    def close(self) -> None:
        """Land what is queued, then end the thread; raises what landing raised."""
        self._items.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error

    def abort(self) -> None:
        """Keep the bundles still in memory in the spool, and end the thread."""
        while True:
            try:
                item = self._items.get_nowait()
            except queue.Empty:
                break
            if item is not None and item[1] is not None:
                self.committer.spill(*item)  # type: ignore[arg-type]
        self._items.put(None)
        self._thread.join(timeout=60)

    def _work(self) -> None:
        while (item := self._items.get()) is not None:
            queued, bundle = item
            try:
                if bundle is not None:
                    self.committer.land(queued, bundle)
                    with self._lock:
                        self.in_memory -= 1
                else:
                    self.committer.flush()  # the spilled bundles, oldest first
            except CatalogueBusyError:  # the spilled bundles wait; the claiming thread lands them at the end
                continue
            except BaseException as exc:  # noqa: BLE001 - raised again in the claiming thread
                self._error = exc
                return
