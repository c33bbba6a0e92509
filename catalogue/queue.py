"""The run queue: planned runs waiting for an executor, kept in the catalogue's database.

Each queued run moves queued -> running -> succeeded | failed. Claiming is one short write
transaction, so two ``modelsci run`` processes never take the same run. A run's result
lands in the same transaction that marks it done (see ``landing``), so a kill at any point
leaves either a queued/running entry (run again) or a landed run, never both or neither.
A running entry whose worker process is gone is put back in the queue by the next claim.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import asdict
from datetime import UTC, datetime

import duckdb

from modelsci.schemas.queued_run import QueuedRun

__all__ = ["QUEUE_DDL", "claim", "enqueue", "release", "worker_name"]

QUEUE_DDL = """CREATE TABLE IF NOT EXISTS store.queue (
    run_id VARCHAR PRIMARY KEY, run_key VARCHAR NOT NULL, attempt BIGINT NOT NULL,
    submission_id VARCHAR, model_id VARCHAR NOT NULL, dataset_id VARCHAR,
    analysis_id VARCHAR NOT NULL, params JSON, seed BIGINT NOT NULL,
    model_spec JSON NOT NULL, dataset_spec JSON, status VARCHAR NOT NULL, worker VARCHAR,
    queued_at TIMESTAMP NOT NULL, claimed_at TIMESTAMP, finished_at TIMESTAMP, error VARCHAR,
    train_dataset_id VARCHAR, train_spec JSON);
ALTER TABLE store.queue ADD COLUMN IF NOT EXISTS train_dataset_id VARCHAR;
ALTER TABLE store.queue ADD COLUMN IF NOT EXISTS train_spec JSON"""
# The ALTERs bring a queue made by an earlier modelsci up to date (runs for training data).


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


def claim(con: duckdb.DuckDBPyConnection, worker: str) -> QueuedRun | None:
    """Take the oldest queued run for ``worker`` (after requeueing runs of dead workers)."""
    con.execute("BEGIN TRANSACTION")
    try:
        for run_id, owner in con.execute(
                "SELECT run_id, worker FROM store.queue WHERE status = 'running'").fetchall():
            if not _alive(owner):
                con.execute("UPDATE store.queue SET status = 'queued', worker = NULL, claimed_at = NULL "
                            "WHERE run_id = ?", [run_id])
        rows = con.sql("SELECT * FROM store.queue WHERE status = 'queued' "
                       "ORDER BY queued_at, run_id LIMIT 1").to_arrow_table().to_pylist()
        if not rows:
            con.execute("COMMIT")
            return None
        run = QueuedRun.from_row(rows[0])
        con.execute("UPDATE store.queue SET status = 'running', worker = ?, claimed_at = ? WHERE run_id = ?",
                    [worker, datetime.now(UTC).replace(tzinfo=None), run.run_id])
        con.execute("COMMIT")
        run.status, run.worker = "running", worker
        return run
    except BaseException:
        con.execute("ROLLBACK")
        raise


def release(con: duckdb.DuckDBPyConnection, run_ids: list[str]) -> None:
    """Put interrupted runs back in the queue (Ctrl-C), unless they landed meanwhile."""
    for run_id in run_ids:
        con.execute("UPDATE store.queue SET status = 'queued', worker = NULL, claimed_at = NULL "
                    "WHERE run_id = ? AND status = 'running'", [run_id])


def worker_name() -> str:
    """``host:pid:start-time`` of this process; the start time tells a reused pid apart."""
    return f"{socket.gethostname()}:{os.getpid()}:{_start_time(os.getpid())}"


def _start_time(pid: int) -> str:
    """Field 22 of /proc/PID/stat (start time in clock ticks); "zombie" for an exited process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return "?"
    return "zombie" if fields[0] == "Z" else fields[19]


def _alive(worker: str | None) -> bool:
    """Whether a claim's worker still runs; workers on other hosts are presumed alive."""
    if not worker:
        return False
    host, _, rest = worker.partition(":")
    pid_text, _, started = rest.partition(":")
    if host != socket.gethostname():
        return True
    try:
        pid = int(pid_text)
        os.kill(pid, 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    now = _start_time(pid)
    return now != "zombie" and started in ("?", now)
