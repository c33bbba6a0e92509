"""Executors: claim queued runs, execute them, and land each result bundle from one process."""

from __future__ import annotations

from modelsci.catalogue.store import Catalogue
from modelsci.executors.execution import QueueSummary, Reporter
from modelsci.executors.local import run_queue_locally
from modelsci.executors.on_ray import run_queue_on_ray

__all__ = ["QueueSummary", "Reporter", "run_queue"]


def run_queue(cat: Catalogue, *, device: str = "auto", jobs: int = 1, executor: str = "local",
              address: str | None = None, reporter: Reporter | None = None) -> QueueSummary:
    """Execute queued runs until the queue is empty; returns which succeeded and which failed.

    ``executor="ray"`` runs them as Ray tasks (a local Ray, or the cluster at ``address``);
    workers return bundles and this process alone commits them. A bundle the catalogue is too
    busy for waits in ``<catalogue>/spool/`` and lands when the lock frees (or, if this process
    is killed first, in the next ``run_queue``, before it claims anything).
    """
    reporter = reporter or Reporter()
    if executor == "ray":
        return run_queue_on_ray(cat, device=device, address=address, reporter=reporter)
    if executor != "local":
        raise ValueError(f"--executor must be local or ray, not {executor!r}")
    return run_queue_locally(cat, device=device, jobs=jobs, reporter=reporter)
