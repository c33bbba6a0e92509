"""The local executor: claim queued runs and execute them here or in worker processes.

Analyses run in this process (``jobs=1``) or in a pool of worker processes (``jobs>1``);
either way workers only return bundles and this process alone commits them (``Committer``,
which keeps a bundle in the spool while the catalogue is busy), and the queue goes on past a
failed run. Ctrl-C puts the runs in flight back in the queue; a kill leaves them claimed by a
dead process, and the next ``modelsci run`` takes them again.
"""

from __future__ import annotations

import ctypes
import os
import signal
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from multiprocessing import get_context

from modelsci.catalogue.queue import worker_name
from modelsci.catalogue.store import Catalogue
from modelsci.executors.committer import Committer, claim_unless_busy, release
from modelsci.executors.execution import QueueSummary, Reporter, execute, failed_bundle
from modelsci.ingest.loading import resolve_device
from modelsci.schemas.bundle import ResultBundle
from modelsci.schemas.queued_run import QueuedRun

__all__ = ["run_queue_locally"]


def run_queue_locally(cat: Catalogue, *, device: str, jobs: int, reporter: Reporter) -> QueueSummary:
    """Execute queued runs until the queue is empty; returns which succeeded and which failed."""
    device = resolve_device(device)
    worker = worker_name()
    summary = QueueSummary()
    committer = Committer(cat, reporter, summary)
    in_flight: dict[Future[ResultBundle], QueuedRun] = {}
    current: list[QueuedRun] = []
    try:
        committer.flush()  # what an earlier run left in the spool, before its runs are claimed again
        if jobs <= 1:
            while (queued := cat.claim(worker)) is not None:
                current[:] = [queued]
                bundle = execute(queued, device, committer.started(queued))
                current.clear()  # from here on the committer keeps it: landed, or in the spool
                committer.land(queued, bundle)
                committer.flush(patient=True)  # nothing else to do until it has landed
        else:
            with ProcessPoolExecutor(jobs, mp_context=get_context("spawn"), initializer=_die_with_parent,
                                     initargs=(os.getpid(),)) as pool:
                while True:
                    while (len(in_flight) < jobs and not committer.waiting
                           and (queued := claim_unless_busy(cat, worker, busy_ok=bool(in_flight)))):
                        committer.started(queued)
                        in_flight[pool.submit(execute, queued, device)] = queued
                    if not in_flight:
                        if not committer.waiting:
                            break
                        committer.flush(patient=True)  # nothing runs: wait for the lock, then claim more
                        continue
                    done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                    for future in done:
                        queued = in_flight.pop(future)
                        try:
                            bundle = future.result()
                        except Exception as exc:  # the worker process itself died
                            bundle = failed_bundle(queued, device, exc)
                        committer.land(queued, bundle)
    except BaseException:
        release(cat, [*current, *in_flight.values()])
        if (kept := committer.kept()) is not None:
            reporter.note(kept)
        raise
    return summary



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
