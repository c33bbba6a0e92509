"""Opening the DuckDB file: briefly, with a bounded wait for a lock another process holds.

DuckDB lets one process open a file for writing, or many for reading, never both. So every
reader and the writer open the file only for the moment they need it and retry a held lock
until a deadline, then fail with an error that names the holder.
"""

from __future__ import annotations

import os
import random
import re
import sys
import time
from pathlib import Path

import duckdb

from modelsci.schemas.errors import ModelsciError

__all__ = ["CatalogueBusyError", "connect", "lock_timeout"]

_HOLDER = re.compile(r"held in (?P<program>.*?) \(PID (?P<pid>\d+)\)")


class CatalogueBusyError(ModelsciError, RuntimeError):
    """Another process held the catalogue for longer than we were willing to wait."""

    def __init__(self, message: str, holder: str = "another process") -> None:
        super().__init__(message)
        self.holder = holder  # "process 123 (python)", as DuckDB's lock error names it


def lock_timeout(default: float) -> float:
    """Seconds to wait for a held lock: ``$MODELSCI_LOCK_TIMEOUT`` or ``default``."""
    value = os.environ.get("MODELSCI_LOCK_TIMEOUT")
    return float(value) if value else default


def connect(db_path: Path, *, read_only: bool, timeout: float, quiet: bool = False) -> duckdb.DuckDBPyConnection:
    """Open the catalogue's database, waiting up to ``timeout`` seconds for a held lock."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    announced = False
    while True:
        try:
            return duckdb.connect(str(db_path), read_only=read_only)
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower():
                raise
            holder = _describe_holder(str(exc))
            if time.monotonic() >= deadline:
                raise CatalogueBusyError(
                    f"the catalogue {db_path.parent} is locked by {holder}; gave up after "
                    f"{timeout:g} s (set MODELSCI_LOCK_TIMEOUT to wait longer)", holder) from None
            if not announced and not quiet:
                print(f"waiting for the catalogue lock, held by {holder} ...", file=sys.stderr)
                announced = True
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())) * random.uniform(0.5, 1.0))
            delay = min(delay * 2, 0.25)


def _describe_holder(message: str) -> str:
    match = _HOLDER.search(message)
    if not match:
        return "another process"
    return f"process {match['pid']} ({Path(match['program']).name})"
