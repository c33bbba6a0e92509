"""Running a reader's SQL so that it can neither change the catalogue nor reach outside it,
and ends within a time and a memory limit.

Three layers, each enough on its own for writes:
1. only SELECT and EXPLAIN statements are run; anything else is refused with its kind named;
2. the database is opened read-only;
3. file access is switched off except for the artifact files the query names (exact paths,
   regular files inside ``artifacts/`` with one hard link), and the configuration is locked so
   SQL cannot turn it back on. An exact list rather than ``allowed_directories``: a directory
   prefix lets ``COPY ... TO`` write into it and follows ``..`` out of it. One hard link: a
   second name would be a file linked in from elsewhere, whatever its name says.

And two limits, because a reader holds the database's lock while it runs, and every writer
waits for it (DuckDB: one process writes or many read):
- time (``timeout``, 60 s unless ``$MODELSCI_SQL_TIMEOUT`` says otherwise): a timer thread
  interrupts the connection, which stops the query wherever it is, fetching included;
- memory (``memory_limit``, a quarter of the machine's memory unless
  ``$MODELSCI_SQL_MEMORY_LIMIT`` says otherwise): DuckDB's ``memory_limit`` bounds what the
  query works in, with spilling to disk off (a reader writes nothing, and a spill to disk would
  only make the query slower before it fails), and the result is fetched in batches and stopped
  once it is larger than the limit: DuckDB's limit does not count the Arrow result it hands over.
"""

from __future__ import annotations

import math
import os
import re
import stat
import threading
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa

from modelsci.schemas.errors import ModelsciError

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "QueryLimitError",
    "QueryMemoryError",
    "QueryTimeoutError",
    "ReadOnlySQLError",
    "ReaderLimits",
    "check_read_only",
    "lock_down",
    "plain_file",
    "run_bounded",
]

DEFAULT_TIMEOUT_S = 60.0
DEFAULT_MEMORY_FRACTION = 0.25
TIMEOUT_ENV = "MODELSCI_SQL_TIMEOUT"
MEMORY_ENV = "MODELSCI_SQL_MEMORY_LIMIT"
_BATCH_ROWS = 65_536  # rows per fetched Arrow batch: the result is checked against the limit after each

_ALLOWED = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}
_ARTIFACT_PATH = re.compile(r"artifacts/([0-9a-f]{64})\.parquet")
_RELATIVE_ARTIFACT = re.compile(r"'(artifacts/[0-9a-f]{64}\.parquet)'")
_SIZE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(%|b|kb|mb|gb|tb|kib|mib|gib|tib)\s*", re.IGNORECASE)
_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


class ReadOnlySQLError(ModelsciError, ValueError):
    """The SQL would write, or is not a query."""


class QueryLimitError(ModelsciError, RuntimeError):
    """A reader's query ran past one of its limits and was stopped; nothing else happened."""


class QueryTimeoutError(QueryLimitError):
    """The query ran longer than its time limit."""


class QueryMemoryError(QueryLimitError):
    """The query, or its result, needed more memory than its limit."""


class ReaderLimitSettingError(ModelsciError, ValueError):
    """A time or memory limit that is not a positive number (with a unit, for memory)."""


@dataclass(frozen=True)
class ReaderLimits:
    """How long a reader's query may run and how much memory it may use (its result included)."""

    timeout_s: float
    memory_bytes: int

    @classmethod
    def resolve(cls, timeout: float | None = None, memory_limit: int | str | None = None) -> ReaderLimits:
        """The limits given, else ``$MODELSCI_SQL_TIMEOUT`` / ``$MODELSCI_SQL_MEMORY_LIMIT``, else
        60 s and a quarter of the machine's memory (its cgroup's limit, if lower)."""
        if timeout is None:
            timeout = os.environ.get(TIMEOUT_ENV) or DEFAULT_TIMEOUT_S
        if memory_limit is None:
            memory_limit = os.environ.get(MEMORY_ENV) or f"{DEFAULT_MEMORY_FRACTION * 100:g}%"
        return cls(_seconds(timeout), _bytes(memory_limit))


def _seconds(value: float | str) -> float:
    try:
        seconds = math.nan if isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        seconds = math.nan
    if not (0 < seconds < math.inf):
        raise ReaderLimitSettingError(f"the query time limit must be a positive number of seconds, not {value!r} "
                                      f"(--timeout, timeout=, ${TIMEOUT_ENV})")
    return seconds


def _bytes(value: int | str) -> int:
    """Bytes from an int, or from text such as ``512MB``, ``2GiB`` or ``25%`` (of the machine's memory)."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    match = _SIZE.fullmatch(value) if isinstance(value, str) else None
    size = 0
    if match:
        number, unit = float(match[1]), match[2].lower()
        size = int(number / 100 * machine_memory()) if unit == "%" else int(number * _UNITS[unit])
    if size <= 0:
        raise ReaderLimitSettingError(
            f"the query memory limit must be a positive size with a unit (512MB, 2GB, 1.5GiB) or a share of "
            f"the machine's memory (25%), not {value!r} (--memory-limit, memory_limit=, ${MEMORY_ENV})")
    return size


def machine_memory() -> int:
    """Physical memory, or the memory limit of this process' cgroup when that is lower."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit_file).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return total


def describe_size(size: int) -> str:
    """``1.5 GB``, ``200 MB``: a size as people read (and type) it."""
    for unit, factor in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if size >= factor:
            return f"{size / factor:.3g} {unit}"
    return f"{size} bytes"


def check_read_only(query: str) -> None:
    """Refuse anything but queries: INSERT, COPY, ATTACH, SET, PRAGMA, INSTALL, ..."""
    try:
        statements = duckdb.extract_statements(query)
    except duckdb.Error as exc:
        raise ReadOnlySQLError(f"could not parse the SQL: {one_line(str(exc))}") from None
    if not statements:
        raise ReadOnlySQLError("no SQL statement given")
    for statement in statements:
        if statement.type not in _ALLOWED:
            kind = statement.type.name.replace("_", " ")
            raise ReadOnlySQLError(
                f"refused: {kind} statements are not allowed; the catalogue is read-only "
                "here and only SELECT (or EXPLAIN) queries run")


def one_line(message: str) -> str:
    """A DuckDB error message in one line: its lines joined, the caret lines that point into
    the query (meaningless once joined) left out."""
    lines = [line.strip() for line in message.splitlines()]
    return "; ".join(line for line in lines if line and set(line) - {"^", " "})


def lock_down(con: duckdb.DuckDBPyConnection, root: Path, query: str,
              limits: ReaderLimits | None = None, views_read: list[str] | None = None) -> str:
    """Turn off file access but for the artifacts ``query`` names (and those its artifact views
    read, ``views_read``), set the memory limit (no spilling to disk), and lock the settings.

    Returns the query with relative artifact paths (``'artifacts/<sha256>.parquet'``, as the
    ``artifacts`` table gives them) made absolute, since DuckDB checks allowed paths as given.
    """
    limits = limits or ReaderLimits.resolve()
    artifacts_dir = (root / "artifacts").resolve()
    allowed = []
    for sha in sorted(set(_ARTIFACT_PATH.findall(" ".join([query, *(views_read or [])])))):
        path = artifacts_dir / f"{sha}.parquet"
        if plain_file(path):
            allowed.append(str(path))
    con.execute("SET temp_directory = ''")  # no spilling: DuckDB would write <catalogue>.duckdb.tmp/
    con.execute("SET memory_limit = ?", [f"{limits.memory_bytes}b"])
    con.execute("SET enable_progress_bar = false")  # DuckDB's bar would go to stdout, into the output
    con.execute("SET allowed_paths = ?", [allowed])
    con.execute("SET enable_external_access = false")
    con.execute("SET autoinstall_known_extensions = false")
    con.execute("SET autoload_known_extensions = false")
    con.execute("SET lock_configuration = true")
    return _RELATIVE_ARTIFACT.sub(lambda m: "'" + str(root.resolve() / m[1]) + "'", query)


def plain_file(path: Path) -> bool:
    """A regular file with one name: not a symlink, a device or a file hard-linked from elsewhere."""
    try:
        st = path.lstat()
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_nlink == 1


def run_bounded(con: duckdb.DuckDBPyConnection, query: str, limits: ReaderLimits) -> pa.Table:
    """Run ``query`` on a locked-down connection, stopped at the time limit or when its result
    passes the memory limit, each with a ``QueryLimitError`` that says which limit and how to
    raise it. Other errors of the query are DuckDB's (``duckdb.Error``)."""
    watchdog = _Watchdog(con, limits.timeout_s)
    batches: list[pa.RecordBatch] = []
    size = 0
    try:
        with watchdog:
            reader = con.sql(query).to_arrow_reader(_BATCH_ROWS)
            try:
                for batch in reader:
                    size += batch.nbytes
                    if size > limits.memory_bytes:
                        raise _memory_error(limits, result=True)
                    batches.append(batch)
                schema = reader.schema
            finally:
                reader.close()
    except QueryLimitError:
        raise
    except Exception as exc:  # DuckDB's own errors, or pyarrow's OSError carrying one from the stream
        if watchdog.fired:
            raise QueryTimeoutError(
                f"the query ran past its time limit of {limits.timeout_s:g} s and was stopped; narrow it, "
                f"or raise the limit (--timeout SECONDS, timeout= in Python, ${TIMEOUT_ENV})") from None
        if isinstance(exc, duckdb.OutOfMemoryException) or "Out of Memory Error" in str(exc):
            raise _memory_error(limits, result=False) from None
        if isinstance(exc, duckdb.Error):
            raise
        raise duckdb.Error(str(exc)) from None  # an error met while fetching: still the query's
    return pa.Table.from_batches(batches, schema)


def _memory_error(limits: ReaderLimits, *, result: bool) -> QueryMemoryError:
    what = "its result grew larger than" if result else "it needed more memory than"
    return QueryMemoryError(
        f"the query was stopped: {what} its limit of {describe_size(limits.memory_bytes)}; narrow it "
        f"(fewer rows or columns, a LIMIT, no cross join), or raise the limit (--memory-limit SIZE, "
        f"memory_limit= in Python, ${MEMORY_ENV})")


class _Watchdog:
    """Interrupts a connection once ``seconds`` have passed, unless the block ended first."""

    def __init__(self, con: duckdb.DuckDBPyConnection, seconds: float) -> None:
        self.con = con
        self.fired = False
        self._lock = threading.Lock()
        self._done = False
        self._timer = threading.Timer(seconds, self._interrupt)
        self._timer.daemon = True

    def _interrupt(self) -> None:
        with self._lock:  # never interrupt a connection whose query has ended (it may be closing)
            if not self._done:
                self.fired = True
                self.con.interrupt()

    def __enter__(self) -> _Watchdog:
        self._timer.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        with self._lock:
            self._done = True
        self._timer.cancel()
