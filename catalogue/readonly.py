"""Running a reader's SQL so that it can neither change the catalogue nor reach outside it.

Three layers, each enough on its own for writes:
1. only SELECT and EXPLAIN statements are run; anything else is refused with its kind named;
2. the database is opened read-only;
3. file access is switched off except for the artifact files the query names (exact paths,
   regular files inside ``artifacts/``), and the configuration is locked so SQL cannot turn
   it back on. An exact list rather than ``allowed_directories``: a directory prefix lets
   ``COPY ... TO`` write into it and follows ``..`` out of it.
"""

from __future__ import annotations

import re
from pathlib import Path

import duckdb

from modelsci.schemas.errors import ModelsciError

__all__ = ["ReadOnlySQLError", "check_read_only", "lock_down"]

_ALLOWED = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}
_ARTIFACT_PATH = re.compile(r"artifacts/([0-9a-f]{64})\.parquet")
_RELATIVE_ARTIFACT = re.compile(r"'(artifacts/[0-9a-f]{64}\.parquet)'")


class ReadOnlySQLError(ModelsciError, ValueError):
    """The SQL would write, or is not a query."""


def check_read_only(query: str) -> None:
    """Refuse anything but queries: INSERT, COPY, ATTACH, SET, PRAGMA, INSTALL, ..."""
    try:
        statements = duckdb.extract_statements(query)
    except duckdb.Error as exc:
        raise ReadOnlySQLError(f"could not parse the SQL: {exc}") from None
    if not statements:
        raise ReadOnlySQLError("no SQL statement given")
    for statement in statements:
        if statement.type not in _ALLOWED:
            kind = statement.type.name.replace("_", " ")
            raise ReadOnlySQLError(
                f"refused: {kind} statements are not allowed; the catalogue is read-only "
                "here and only SELECT (or EXPLAIN) queries run")


def lock_down(con: duckdb.DuckDBPyConnection, root: Path, query: str) -> str:
    """Turn off file access but for the artifacts ``query`` names, and lock the settings.

    Returns the query with relative artifact paths (``'artifacts/<sha256>.parquet'``, as the
    ``artifacts`` table gives them) made absolute, since DuckDB checks allowed paths as given.
    """
    artifacts_dir = (root / "artifacts").resolve()
    allowed = []
    for sha in sorted(set(_ARTIFACT_PATH.findall(query))):
        path = artifacts_dir / f"{sha}.parquet"
        if path.is_file() and not path.is_symlink():
            allowed.append(str(path))
    con.execute("SET allowed_paths = ?", [allowed])
    con.execute("SET enable_external_access = false")
    con.execute("SET autoinstall_known_extensions = false")
    con.execute("SET autoload_known_extensions = false")
    con.execute("SET lock_configuration = true")
    return _RELATIVE_ARTIFACT.sub(lambda m: "'" + str(root.resolve() / m[1]) + "'", query)
