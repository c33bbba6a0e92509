"""The leases of the runs one executor claimed: renewed while they execute, dropped when they land.

A claim (``catalogue.queue.claim``) is valid for a lease of ``lease_seconds()``; the process that
claimed it renews it every quarter lease for as long as the run's executor is known to be alive
(a worker process of ours, or a Ray task whose heartbeats arrive). A run whose executor died is
no longer renewed, so its lease expires and the next claim, by any process on any host, takes it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import duckdb

from modelsci.catalogue.connection import CatalogueBusyError, connect
from modelsci.catalogue.queue import lease_seconds, lease_state, release, renew
from modelsci.catalogue.store import Catalogue
from modelsci.schemas.queued_run import QueuedRun

__all__ = ["LeaseKeeper"]


class LeaseKeeper:
    """Renews this process's leases; ``hold`` a claimed run, ``settle`` it once it landed."""

    def __init__(self, cat: Catalogue, lease_s: float | None = None) -> None:
        self.cat = cat
        self.lease_s = lease_s if lease_s is not None else lease_seconds()
        self.interval = self.lease_s / 4
        self._held: dict[str, str] = {}  # run id -> lease token
        self._valid: dict[str, float] = {}  # run id -> until when (monotonic) its lease is known to hold
        self._lock = threading.Lock()  # the renewal thread and the committer's thread share ``_held``
        # Held by whatever opens the catalogue in this process (claims, renewals, commits): DuckDB
        # fails on connections that several threads of one process use at once.
        self.catalogue = threading.RLock()
        self._last = time.monotonic()

    def hold(self, queued: QueuedRun) -> None:
        """Renew ``queued``'s lease from now on."""
        if queued.lease is not None:
            with self._lock:
                self._held[queued.run_id] = queued.lease
                self._valid[queued.run_id] = time.monotonic() + self.lease_s

    def settle(self, run_id: str) -> None:
        """Stop renewing a run's lease: it landed, or its executor is gone."""
        with self._lock:
            self._held.pop(run_id, None)
            self._valid.pop(run_id, None)

    def due(self) -> bool:
        """Whether a quarter lease has passed since the last renewal."""
        return time.monotonic() - self._last >= self.interval

    def renew(self, skip: set[str] = frozenset()) -> set[str]:  # type: ignore[assignment]
        """Renew the held leases, but those of ``skip`` (executors presumed dead); returns the run
        ids whose lease another claim has taken meanwhile (settled here). A busy catalogue skips
        this round: a lease outlasts three missed rounds."""
        self._last = started = time.monotonic()
        with self._lock:
            leases = {run_id: lease for run_id, lease in self._held.items() if run_id not in skip}
        if not leases:
            return set()
        try:
            with self.catalogue, _writer(self.cat, timeout=min(1.0, self.interval)) as con:
                kept = renew(con, leases, self.lease_s)
        except (CatalogueBusyError, duckdb.TransactionException):  # tried again next round
            return set()
        lost = set(leases) - kept
        with self._lock:
            self._valid.update((run_id, started + self.lease_s) for run_id in kept if run_id in self._held)
        for run_id in lost:
            self.settle(run_id)
        return lost

    def state(self, queued: QueuedRun) -> str:
        """``held``, ``taken`` or ``landed``: whether ``queued``'s result may land (``lease_state``)."""
        if queued.lease is None:
            return "held"
        with self._lock:  # renewed by us a moment ago: no other claim can hold it (saves a connection)
            if self._held.get(queued.run_id) == queued.lease and \
                    time.monotonic() < self._valid.get(queued.run_id, 0.0) - self.interval:
                return "held"
        with self.catalogue, _writer(self.cat, timeout=self.cat.write_timeout) as con:
            return lease_state(con, queued.run_id, queued.lease)

    def give_back(self, queued: QueuedRun) -> None:
        """Put a run whose executor died back in the queue at once, if its lease is still ours."""
        self.settle(queued.run_id)
        try:
            with self.catalogue, _writer(self.cat, timeout=self.cat.write_timeout) as con:
                release(con, [queued.run_id], leases={queued.run_id: queued.lease} if queued.lease else None)
        except CatalogueBusyError:  # it returns to the queue when its lease expires
            pass

    @contextmanager
    def beating(self) -> Iterator[None]:
        """Renew the held leases from a background thread while the block runs (a run executing in
        this process's main thread, which then touches the catalogue nowhere else)."""
        done = threading.Event()

        def beat() -> None:
            while not done.wait(self.interval):
                self.renew()

        thread = threading.Thread(target=beat, name="modelsci-leases", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()


@contextmanager
def _writer(cat: Catalogue, timeout: float) -> Iterator[duckdb.DuckDBPyConnection]:
    """A short write connection. Always read-write: DuckDB refuses a read-only connection in a
    process that holds a read-write one (the committer's thread may be landing meanwhile)."""
    con = connect(cat.db_path, read_only=False, timeout=timeout, quiet=True)
    try:
        yield con
    finally:
        con.close()
