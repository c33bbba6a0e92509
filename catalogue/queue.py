"""The run queue: planned runs waiting for an executor, kept in the catalogue's database.

Each queued run moves queued -> running -> succeeded | failed. Claiming is one short write
transaction, so two ``modelsci run`` processes never take the same run. A run's result
lands in the same transaction that marks it done (see ``landing``), so a kill at any point
leaves either a queued/running entry (run again) or a landed run, never both or neither.

A claim is a **lease**: a token (``lease``) and an expiry (``lease_until``, the claimer's clock
plus ``lease_seconds()``) that the claiming process renews (``renew``) while the run executes,
wherever it executes. The next claim puts every running entry whose lease has expired back in
the queue, whichever host its claimer was on; it does so at once for a claimer on this host
whose process is gone (a killed ``modelsci run``), without waiting for the expiry. A result
that arrives after its lease was taken over by another claim is dropped (``lease_state``), so
a run lands once. Clocks of the hosts sharing a queue must agree to well within a lease.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import uuid
from dataclasses import asdict
from datetime import UTC, datetime, timedelta

import duckdb

from modelsci.schemas.queued_run import QueuedRun

__all__ = ["QUEUE_DDL", "claim", "enqueue", "lease_seconds", "lease_state", "release", "renew", "worker_name"]

QUEUE_DDL = """CREATE TABLE IF NOT EXISTS store.queue (
    run_id VARCHAR PRIMARY KEY, run_key VARCHAR NOT NULL, attempt BIGINT NOT NULL,
    submission_id VARCHAR, model_id VARCHAR NOT NULL, dataset_id VARCHAR,
    analysis_id VARCHAR NOT NULL, params JSON, seed BIGINT NOT NULL,
    model_spec JSON NOT NULL, dataset_spec JSON, status VARCHAR NOT NULL, worker VARCHAR,
    queued_at TIMESTAMP NOT NULL, claimed_at TIMESTAMP, finished_at TIMESTAMP, error VARCHAR,
    train_dataset_id VARCHAR, train_spec JSON, lease VARCHAR, lease_until TIMESTAMP);
ALTER TABLE store.queue ADD COLUMN IF NOT EXISTS train_dataset_id VARCHAR;
ALTER TABLE store.queue ADD COLUMN IF NOT EXISTS train_spec JSON;
ALTER TABLE store.queue ADD COLUMN IF NOT EXISTS lease VARCHAR;
ALTER TABLE store.queue ADD COLUMN IF NOT EXISTS lease_until TIMESTAMP"""
# The ALTERs bring a queue made by an earlier modelsci up to date (runs for training data, leases).

DEFAULT_LEASE_S = 60.0
_REQUEUE = "status = 'queued', worker = NULL, claimed_at = NULL, lease = NULL, lease_until = NULL"


def lease_seconds() -> float:
    """How long a claim stays valid without renewal: ``$MODELSCI_LEASE_S`` or 60 seconds."""
    value = os.environ.get("MODELSCI_LEASE_S")
    return float(value) if value else DEFAULT_LEASE_S


def enqueue(con: duckdb.DuckDBPyConnection, runs: list[QueuedRun]) -> list[str]:
    """Add the runs not already in the queue, in one transaction; returns the ids added."""
    con.execute("BEGIN TRANSACTION")
    try:
        held = {r[0] for r in con.execute("SELECT run_id FROM store.queue").fetchall()}
        added = []
        for run in runs:
            if run.run_id in held:
                continue
            row = asdict(run)
            row["lease"] = None  # a planned run is not claimed
            for key in ("params", "model_spec", "dataset_spec", "train_spec"):
                row[key] = None if row[key] is None else json.dumps(row[key], sort_keys=True)
            cols = ", ".join(row)
            con.execute(f"INSERT INTO store.queue ({cols}) VALUES ({', '.join('?' * len(row))})",
                        list(row.values()))
            held.add(run.run_id)
            added.append(run.run_id)
        con.execute("COMMIT")
        return added
    except BaseException:
        con.execute("ROLLBACK")
        raise


def claim(con: duckdb.DuckDBPyConnection, worker: str, lease_s: float | None = None) -> QueuedRun | None:
    """Take the oldest queued run for ``worker`` under a new lease of ``lease_s`` seconds (default
    ``lease_seconds()``), after putting runs whose lease expired back in the queue."""
    now = _now()
    con.execute("BEGIN TRANSACTION")
    try:
        for run_id, owner, until, claimed in con.execute(
                "SELECT run_id, worker, lease_until, claimed_at FROM store.queue WHERE status = 'running'").fetchall():
            # a claim made before leases existed expires a default lease after it was made
            expiry = until or (claimed or now) + timedelta(seconds=DEFAULT_LEASE_S)
            if expiry <= now or _gone(owner):
                con.execute(f"UPDATE store.queue SET {_REQUEUE} WHERE run_id = ?", [run_id])
        rows = con.sql("SELECT * FROM store.queue WHERE status = 'queued' "
                       "ORDER BY queued_at, run_id LIMIT 1").to_arrow_table().to_pylist()
        if not rows:
            con.execute("COMMIT")
            return None
        run = QueuedRun.from_row(rows[0])
        lease = uuid.uuid4().hex
        until = now + timedelta(seconds=lease_s if lease_s is not None else lease_seconds())
        con.execute("UPDATE store.queue SET status = 'running', worker = ?, claimed_at = ?, lease = ?, "
                    "lease_until = ? WHERE run_id = ?", [worker, now, lease, until, run.run_id])
        con.execute("COMMIT")
        run.status, run.worker, run.lease = "running", worker, lease
        return run
    except BaseException:
        con.execute("ROLLBACK")
        raise


def renew(con: duckdb.DuckDBPyConnection, leases: dict[str, str], lease_s: float | None = None) -> set[str]:
    """Extend the leases ``run_id -> lease`` by ``lease_s`` seconds from now; returns the run ids
    whose lease is still held (the others expired and were claimed again, or were released)."""
    if not leases:
        return set()
    until = _now() + timedelta(seconds=lease_s if lease_s is not None else lease_seconds())
    pairs = [f"{run_id}\x1f{lease}" for run_id, lease in leases.items()]
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute("UPDATE store.queue SET lease_until = ? WHERE status = 'running' "
                    "AND list_contains(?, run_id || chr(31) || lease)", [until, pairs])
        held = {r[0] for r in con.execute(
            "SELECT run_id FROM store.queue WHERE status = 'running' AND list_contains(?, run_id || chr(31) || lease)",
            [pairs]).fetchall()}
        con.execute("COMMIT")
        return held
    except BaseException:
        con.execute("ROLLBACK")
        raise


def lease_state(con: duckdb.DuckDBPyConnection, run_id: str, lease: str | None) -> str:
    """Whether a finished run may land: ``held`` (its lease is current, or nobody holds the run now),
    ``taken`` (another claim holds it now) or ``landed`` (a result of it landed already)."""
    row = con.execute("SELECT status, lease FROM store.queue WHERE run_id = ?", [run_id]).fetchone()
    if row is None or row[0] == "queued" or (row[0] == "running" and (lease is None or row[1] in (None, lease))):
        return "held"
    return "taken" if row[0] == "running" else "landed"


def release(con: duckdb.DuckDBPyConnection, run_ids: list[str], leases: dict[str, str] | None = None) -> None:
    """Put interrupted runs back in the queue (Ctrl-C), unless they landed meanwhile; with
    ``leases`` (run id -> lease), only those still held under that lease."""
    for run_id in run_ids:
        lease = (leases or {}).get(run_id)
        con.execute(f"UPDATE store.queue SET {_REQUEUE} WHERE run_id = ? AND status = 'running' "
                    "AND (? IS NULL OR lease = ?)", [run_id, lease, lease])


_NONCE = uuid.uuid4().hex[:12]


def worker_name() -> str:
    """``host:pid:nonce`` of this process; the nonce, drawn once per process, tells a reused pid apart."""
    return f"{socket.gethostname()}:{os.getpid()}:{_NONCE}"


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _gone(worker: str | None) -> bool:
    """Whether a claim's process is known to have ended: only for a claimer on this host (its pid
    no longer exists); anything else waits for its lease to expire. A reused pid merely waits."""
    if not worker or sys.platform == "win32":  # os.kill(pid, 0) would signal, not probe, there
        return not worker
    host, _, rest = worker.partition(":")
    if host != socket.gethostname():
        return False
    try:
        os.kill(int(rest.partition(":")[0]), 0)
    except (ValueError, ProcessLookupError):
        return True
    except PermissionError:
        return False
    return False
