"""Landing finished runs from the one process that claimed them, through the spool when the
catalogue is busy.

A finished run's bundle is committed at once. When the commit cannot get the write lock within
the lock timeout (a long reader, an import), the bundle goes to the catalogue's spool
(``<catalogue>/spool/``, see ``modelsci.catalogue.spool``) instead of being thrown away, and the
committer lands the spool, oldest first, as soon as the lock frees: before it commits anything
else, before the executor claims another run, and, with nothing else to do, by waiting for the
lock as long as it takes. A ``modelsci run`` that was killed or interrupted leaves its spool to
the next one, which lands it before claiming anything, so the run is not executed again.

A spool file is removed only after its commit; a bundle that landed already (a kill came
between the commit and the removal) adds nothing the second time, since its ids are content ids.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

from modelsci.catalogue.connection import CatalogueBusyError
from modelsci.catalogue.queue import worker_name
from modelsci.catalogue.store import Catalogue
from modelsci.executors.execution import Progress, QueueSummary, Reporter, failed_bundle
from modelsci.executors.leases import LeaseKeeper
from modelsci.schemas.bundle import ResultBundle
from modelsci.schemas.entities import Run
from modelsci.schemas.queued_run import QueuedRun

__all__ = ["Committer", "claim_unless_busy", "release"]

_RETRY_S = 0.25


class Committer:
    """Lands the bundles of one executor's finished runs; keeps those the catalogue is too busy
    for in its spool until they land."""

    def __init__(self, cat: Catalogue, reporter: Reporter, summary: QueueSummary,
                 keeper: LeaseKeeper | None = None) -> None:
        self.cat = cat
        self.keeper = keeper  # the claims' leases: a result whose lease another claim took is dropped
        self.reporter = reporter
        self.summary = summary
        self._started: set[str] = set()  # runs this process executed (the reporter knows them)
        self._spooled: dict[Path, tuple[QueuedRun, Run]] = {}  # ours, waiting in the spool
        self._landed: set[str] = set()  # runs counted as landed (a run may be in the spool twice)

    def started(self, queued: QueuedRun) -> Progress:
        """Tell the reporter a run starts here; returns its progress callback."""
        self._started.add(queued.run_id)
        return self.reporter.started(queued)

    @property
    def waiting(self) -> bool:
        """Whether bundles wait in the spool (this process', or one left by another)."""
        return bool(self.cat.spool.pending())

    def land(self, queued: QueuedRun, bundle: ResultBundle) -> None:
        """Land a finished run's bundle after what waits in the spool, or spool it when the
        catalogue stays busy past the lock timeout (or the wait for it is interrupted).

        While bundles wait in the spool, the catalogue was busy a moment ago: this one joins them
        at once, so that a kill while waiting for the lock cannot lose it, and lands with them."""
        path = self._spool(queued, bundle) if self.waiting else None
        try:
            if path is not None:
                self.flush()
            else:
                self._commit(queued, bundle)
        except CatalogueBusyError as busy:
            path = path or self._spool(queued, bundle)
            self.reporter.note(f"the catalogue is busy ({busy.holder} holds it); kept the finished run "
                               f"{queued.run_id} in {path}, to land when the lock frees")
        except KeyboardInterrupt:
            if path is None:
                self._spool(queued, bundle)  # landed or not, it is safe in the spool
            raise

    def spill(self, queued: QueuedRun, bundle: ResultBundle) -> Path:
        """Keep a finished run's bundle in the spool, to land with the others waiting there."""
        return self._spool(queued, bundle)

    def flush(self, *, patient: bool = False) -> None:
        """Land the spooled bundles, oldest first. Impatient, a lock not got within the lock
        timeout raises ``CatalogueBusyError``; patient, it waits for the lock as long as it takes."""
        announced = False
        for path in self.cat.spool.pending():
            try:
                bundle, meta = self.cat.spool.read(path)
            except FileNotFoundError:  # another process landed it meanwhile
                self._gone(path)
                continue
            queued = _queued_from_json(meta["queued"])
            while True:
                try:
                    self._commit(queued, bundle, from_spool=path)
                    break
                except CatalogueBusyError as busy:
                    if not patient:
                        raise
                    if not announced:
                        self.reporter.note(f"waiting for {busy.holder} to let go of the catalogue, to land "
                                           f"{len(self.cat.spool.pending())} finished run(s) kept in "
                                           f"{self.cat.spool.folder}")
                        announced = True
                    time.sleep(_RETRY_S)  # the lock wait itself may be short (MODELSCI_LOCK_TIMEOUT=0)
            self.cat.spool.remove(path)

    def kept(self) -> str | None:
        """What waits in the spool, in words, if anything (for an interrupted run's last message)."""
        pending = self.cat.spool.pending()
        if not pending:
            return None
        return (f"{len(pending)} finished run(s) are kept in {self.cat.spool.folder}; the next "
                "`modelsci run` lands them")

    def _commit(self, queued: QueuedRun, bundle: ResultBundle, *, from_spool: Path | None = None) -> None:
        """Commit a run's bundle; a bundle the catalogue refuses lands as a failed run instead."""
        clock = time.perf_counter()
        with self.keeper.catalogue if self.keeper is not None else nullcontext():
            self._commit_held(queued, bundle, from_spool)
        # the lease check and the transaction, and any wait for a claim on the other thread
        self.summary.timings.add("commit", time.perf_counter() - clock)

    def _commit_held(self, queued: QueuedRun, bundle: ResultBundle, from_spool: Path | None) -> None:
        run = bundle.runs[-1]
        if self.keeper is not None and (state := self.keeper.state(queued)) != "held":
            self.reporter.note(f"dropped a late result of run {queued.run_id}: its lease expired and "
                               + ("another claim runs it now" if state == "taken" else "it has landed already"))
            self.keeper.settle(queued.run_id)
            if from_spool is not None:
                self._spooled.pop(from_spool, None)
            return
        name = queued.model_spec.get("name")
        message = f"{queued.analysis_id} on {f'{name} ' if name else ''}{queued.model_id[:19]}: {run.status}"
        # the process that commits, which may not be the one that claimed the run (a spooled
        # bundle is landed by whichever `modelsci run` finds it): "author" is who committed
        author = f"modelsci run ({worker_name()})"
        try:
            landed = self.cat.commit(bundle, author=author, message=message)
        except (ValueError, LookupError) as exc:  # BundleError and friends: the analysis' output is bad
            bundle = failed_bundle(queued, run.device or "cpu", exc, run.started_at)
            run = bundle.runs[-1]
            landed = self.cat.commit(bundle, author=author, message=f"{message} -> failed")
        if from_spool is not None:
            self._spooled.pop(from_spool, None)
            if landed is None and queued.run_id not in self._started:
                return  # landed before (a kill came between its commit and the spool file's removal)
        self._done(queued, run)

    def _spool(self, queued: QueuedRun, bundle: ResultBundle) -> Path:
        path = self.cat.spool.put(bundle, {"queued": _queued_to_json(queued)})
        self._spooled[path] = (queued, bundle.runs[-1])
        return path

    def _gone(self, path: Path) -> None:
        """A spool file of ours that another process landed: count its run as landed."""
        if path in self._spooled:
            self._done(*self._spooled.pop(path))

    def _done(self, queued: QueuedRun, run: Run) -> None:
        if self.keeper is not None:
            self.keeper.settle(queued.run_id)
        if run.id in self._landed:
            return
        self._landed.add(run.id)
        (self.summary.succeeded if run.status == "succeeded" else self.summary.failed).append(run.id)
        if queued.run_id in self._started:
            self.reporter.finished(queued, run)
        else:
            self.reporter.note(f"landed run {run.id} ({run.status}), kept in the spool by another modelsci run")


def release(cat: Catalogue, runs: list[QueuedRun]) -> None:
    """Put interrupted runs back in the queue; if the catalogue is busy, leave them claimed by this
    process, which the next ``modelsci run`` takes back once it has ended."""
    try:
        cat.release([q.run_id for q in runs])
    except CatalogueBusyError:
        pass


def claim_unless_busy(cat: Catalogue, worker: str, *, busy_ok: bool) -> QueuedRun | None:
    """The next queued run; None when the queue is empty, or (``busy_ok``: runs are in flight,
    so there is something else to do) when the catalogue is too busy to claim one now."""
    try:
        return cat.claim(worker)
    except CatalogueBusyError:
        if busy_ok:
            return None
        raise


def _queued_to_json(queued: QueuedRun) -> dict[str, Any]:
    row = asdict(queued)
    row["queued_at"] = queued.queued_at.isoformat()
    return row


def _queued_from_json(row: dict[str, Any]) -> QueuedRun:
    return QueuedRun(**{**row, "queued_at": datetime.fromisoformat(row["queued_at"])})
