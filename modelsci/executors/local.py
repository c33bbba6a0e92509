"""The local executor: claim queued runs and execute them here or in worker processes.

Analyses run in this process (``jobs=1``) or in a pool of worker processes (``jobs>1``);
either way workers only return bundles and this process alone commits them, and the queue
goes on past a failed run. Ctrl-C puts the runs in flight back in the queue; a kill leaves
them claimed by a dead process, and the next ``modelsci run`` takes them again.
"""

from __future__ import annotations

from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from multiprocessing import get_context

from modelsci.catalogue.queue import worker_name
from modelsci.catalogue.store import Catalogue
from modelsci.executors.execution import QueueSummary, Reporter, execute, failed_bundle, land
from modelsci.ingest.loading import resolve_device
from modelsci.schemas.bundle import ResultBundle
from modelsci.schemas.queued_run import QueuedRun

__all__ = ["run_queue_locally"]


def run_queue_locally(cat: Catalogue, *, device: str, jobs: int, reporter: Reporter) -> QueueSummary:
    """Execute queued runs until the queue is empty; returns which succeeded and which failed."""
    device = resolve_device(device)
    worker = worker_name()
    summary = QueueSummary()
    in_flight: dict[Future[ResultBundle], QueuedRun] = {}
    current: list[QueuedRun] = []
    try:
        if jobs <= 1:
            while (queued := cat.claim(worker)) is not None:
                current[:] = [queued]
                land(cat, queued, execute(queued, device, reporter.started(queued)), reporter, summary)
                current.clear()
        else:
            with ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) as pool:
                while True:
                    while len(in_flight) < jobs and (queued := cat.claim(worker)) is not None:
                        reporter.started(queued)
                        in_flight[pool.submit(execute, queued, device)] = queued
                    if not in_flight:
                        break
                    done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                    for future in done:
                        queued = in_flight.pop(future)
                        try:
                            bundle = future.result()
                        except Exception as exc:  # the worker process itself died
                            bundle = failed_bundle(queued, device, exc)
                        land(cat, queued, bundle, reporter, summary)
    except BaseException:
        cat.release([q.run_id for q in [*current, *in_flight.values()]])
        raise
    return summary
