"""The Ray executor: queued runs as Ray tasks, one committer.

This process claims runs from the queue, submits each as a Ray task (asking Ray for a GPU
when the run's device is CUDA), and commits each returned bundle itself: no worker writes
the catalogue, through the same ``Committer`` as the local executor (and so the same spool
while the catalogue is busy). Without ``address`` it starts a local Ray; with one it joins
that cluster, whose workers need modelsci installed and the models' files reachable at the
same paths. Ctrl-C, or a lost worker, puts the unfinished runs back in the queue.
"""

from __future__ import annotations

from modelsci.catalogue.queue import worker_name
from modelsci.catalogue.store import Catalogue
from modelsci.executors.committer import Committer, claim_unless_busy, release
from modelsci.executors.execution import QueueSummary, Reporter, execute, failed_bundle
from modelsci.schemas.errors import MissingExtraError
from modelsci.schemas.queued_run import QueuedRun

__all__ = ["run_queue_on_ray"]


def _execute_with_threads(queued: QueuedRun, device: str, threads: int):  # noqa: ANN202 - a ResultBundle
    """``execute`` with the driver's torch thread count: Ray gives each worker one thread, and a
    different count changes the last bits of torch's reductions, and so the finding ids."""
    import torch

    torch.set_num_threads(threads)
    return execute(queued, device)


def run_queue_on_ray(cat: Catalogue, *, device: str, address: str | None, reporter: Reporter,
                     max_in_flight: int | None = None) -> QueueSummary:
    try:
        import ray
    except ImportError:
        raise MissingExtraError("the Ray executor needs Ray: pip install 'modelsci[ray]'") from None

    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 configure_logging=False, ignore_reinit_error=True)
    use_gpu = device.startswith("cuda") or (device == "auto" and ray.cluster_resources().get("GPU", 0) > 0)
    remote = ray.remote(num_gpus=1 if use_gpu else 0, max_retries=0)(_execute_with_threads)
    import torch

    threads = torch.get_num_threads()
    capacity = max_in_flight or max(int(ray.cluster_resources().get("CPU", 1)), 1)
    worker = worker_name()
    summary = QueueSummary()
    committer = Committer(cat, reporter, summary)
    in_flight: dict = {}
    try:
        committer.flush()  # what an earlier run left in the spool, before its runs are claimed again
        while True:
            while (len(in_flight) < capacity and not committer.waiting
                   and (queued := claim_unless_busy(cat, worker, busy_ok=bool(in_flight)))):
                committer.started(queued)
                run_device = "cuda" if use_gpu else ("cpu" if device == "auto" else device)
                in_flight[remote.remote(queued, run_device, threads)] = queued
            if not in_flight:
                if not committer.waiting:
                    break
                committer.flush(patient=True)  # nothing runs: wait for the lock, then claim more
                continue
            done, _ = ray.wait(list(in_flight), num_returns=1)
            for ref in done:
                queued: QueuedRun = in_flight.pop(ref)
                try:
                    bundle = ray.get(ref)
                except Exception as exc:  # the task's worker died
                    bundle = failed_bundle(queued, device, exc)
                committer.land(queued, bundle)
    except BaseException:
        release(cat, list(in_flight.values()))
        if (kept := committer.kept()) is not None:
            reporter.note(kept)
        raise
    finally:
        if started_here:
            ray.shutdown()
    return summary
