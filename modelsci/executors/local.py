"""The local executor: claim queued runs and execute them here or in worker processes.

Analyses run in this process (``jobs=1``) or in a pool of worker processes (``jobs>1``);
either way workers only return bundles and this process alone commits them (``Committer``,
which keeps a bundle in the spool while the catalogue is busy), and the queue goes on past a
failed run. This process renews the leases of the runs it executes; Ctrl-C puts them back in
the queue, and a kill leaves them to the next ``modelsci run`` (at once on this host, else when
their leases expire). The loop itself is ``driving.drive``, shared with the Ray executor.
"""

from __future__ import annotations

import ctypes
import os
import signal
import time
from collections.abc import Hashable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from multiprocessing import get_context

from modelsci.catalogue.store import Catalogue
from modelsci.executors.driving import Backend, drive
from modelsci.executors.execution import Progress, QueueSummary, Reporter, execute, timed_execute
from modelsci.executors.leases import LeaseKeeper
from modelsci.ingest.loading import resolve_device
from modelsci.schemas.bundle import ResultBundle
from modelsci.schemas.queued_run import QueuedRun

__all__ = ["run_queue_locally"]


def run_queue_locally(cat: Catalogue, *, device: str, jobs: int, reporter: Reporter,
                      lease_s: float | None = None) -> QueueSummary:
    """Execute queued runs until the queue is empty; returns which succeeded and which failed."""
    device = resolve_device(device)
    if jobs <= 1:
        return drive(cat, _InProcess(device), reporter, device=device, lease_s=lease_s)
    with ProcessPoolExecutor(jobs, mp_context=get_context("spawn"), initializer=_die_with_parent,
                             initargs=(os.getpid(),)) as pool:
        return drive(cat, _Pool(pool, jobs, device), reporter, device=device, lease_s=lease_s)


class _InProcess(Backend):
    """One run at a time, in this process, its lease renewed by a thread while it executes."""

    capacity = 1

    def __init__(self, device: str) -> None:
        self.device = device
        self._done: list[tuple[Hashable, ResultBundle | BaseException]] = []

    def submit(self, queued: QueuedRun, progress: Progress, keeper: LeaseKeeper) -> Hashable:
        stamps: dict[str, float] = {}
        with keeper.beating():
            self._done.append((queued.run_id, execute(queued, self.device, progress, stamps)))
        self.timings.add_stamps(stamps, 0.0, 0.0)  # nothing starts or travels: no start or transfer
        return queued.run_id

    def wait(self, handles: list[Hashable], timeout: float) -> list[tuple[Hashable, ResultBundle | BaseException]]:
        done, self._done = self._done, []
        return done


class _Pool(Backend):
    """Runs in a pool of worker processes, which end with this one."""

    def __init__(self, pool: ProcessPoolExecutor, jobs: int, device: str) -> None:
        self.pool = pool
        self.capacity = jobs
        self.device = device
        self.submitted: dict[Future, float] = {}

    def submit(self, queued: QueuedRun, progress: Progress, keeper: LeaseKeeper) -> Hashable:
        future = self.pool.submit(timed_execute, queued, self.device)
        self.submitted[future] = time.time()
        return future

    def wait(self, handles: list[Hashable], timeout: float) -> list[tuple[Hashable, ResultBundle | BaseException]]:
        futures: list[Future[tuple[ResultBundle, dict[str, float]]]] = handles  # type: ignore[assignment]
        done, _ = wait(futures, timeout=timeout, return_when=FIRST_COMPLETED)
        finished: list[tuple[Hashable, ResultBundle | BaseException]] = []
        for future in done:
            submitted = self.submitted.pop(future, 0.0)
            if (error := future.exception()) is not None:
                finished.append((future, error))
                continue
            bundle, stamps = future.result()
            self.timings.add_stamps(stamps, submitted, time.time())
            finished.append((future, bundle))
        return finished


def _die_with_parent(parent: int) -> None:
    """Make a worker process end when this one does: a ``modelsci run`` killed with SIGKILL left its
    pool's workers running (and analysing) for good. Linux only (``prctl``); elsewhere a no-op."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the prctl took effect
        os._exit(1)


_PR_SET_PDEATHSIG = 1
