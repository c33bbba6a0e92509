"""The catalogue's tables and views, derived from the SQLModel entities in ``schemas``.

Rows live in the schema ``store`` and are never deleted or rewritten: each carries the
sequence number of the commit that added it (``commit_seq``), and a finding also records the
commit that superseded it (``superseded_seq``) and 60 bits of its key as a number
(``key_bits``) for the version lookup of every commit. The public names (``models``, ``findings``,
``findings_current``, ...) are views over ``store`` that a reader queries; the same view
definitions, cut off at a commit's sequence number, answer ``--as-of`` queries.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from functools import cached_property

import duckdb
import pyarrow as pa
from sqlmodel import SQLModel

from modelsci.catalogue.queue import QUEUE_DDL
from modelsci.schemas.entities import ENTITIES

__all__ = ["KEY_BITS_SQL", "SCHEMA_VERSION", "TABLES", "VIEWS", "TableSpec", "create_schema", "create_views",
           "key_bits", "set_by_catalogue", "upgrade_store"]

SCHEMA_VERSION = 1

_SQL_TYPES = {
    "AutoString": "VARCHAR", "String": "VARCHAR", "Enum": "VARCHAR", "Integer": "BIGINT",
    "Float": "DOUBLE", "Boolean": "BOOLEAN", "DateTime": "TIMESTAMP", "UTCDateTime": "TIMESTAMP",
    "JSON": "JSON",
}
_ARROW_TYPES = {
    "VARCHAR": pa.string(), "JSON": pa.string(), "BIGINT": pa.int64(), "DOUBLE": pa.float64(),
    "BOOLEAN": pa.bool_(), "TIMESTAMP": pa.timestamp("us"),
}


@dataclass(frozen=True)
class ColumnSpec:
    name: str
    sql_type: str
    nullable: bool
    description: str
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class TableSpec:
    """One entity's table: columns as a reader sees them, plus the store's bookkeeping."""

    name: str
    entity: type[SQLModel]
    columns: tuple[ColumnSpec, ...]
    primary_key: tuple[str, ...]
    description: str

    @cached_property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @cached_property
    def json_columns(self) -> frozenset[str]:
        return frozenset(c.name for c in self.columns if c.sql_type == "JSON")

    @cached_property
    def arrow_schema(self) -> pa.Schema:
        return pa.schema([pa.field(c.name, _ARROW_TYPES[c.sql_type], c.nullable) for c in self.columns])

    def bookkeeping(self) -> list[str]:
        """Internal columns of the store table, hidden from the public views."""
        if self.name == "commits":
            return []
        extra = ["commit_seq BIGINT NOT NULL"]
        if self.name == "findings":
            extra += ["superseded_seq BIGINT", "key_bits BIGINT"]
        return extra


def _enum_values(annotation: object) -> tuple[str, ...]:
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return tuple(member.value for member in annotation)
    return ()


def _table_spec(entity: type[SQLModel]) -> TableSpec:
    table = entity.__table__  # type: ignore[attr-defined]
    columns = tuple(
        ColumnSpec(
            name=col.name,
            sql_type=_SQL_TYPES[type(col.type).__name__],
            nullable=bool(col.nullable),
            description=entity.model_fields[col.name].description or "",
            choices=_enum_values(entity.model_fields[col.name].annotation),
        )
        for col in table.columns
    )
    primary_key = tuple(col.name for col in table.primary_key.columns)
    return TableSpec(table.name, entity, columns, primary_key, (entity.__doc__ or "").strip())


TABLES: dict[str, TableSpec] = {spec.name: spec for spec in map(_table_spec, ENTITIES)}

VIEWS: dict[str, str] = {
    "findings_current": "The current version of every finding key: `findings` where `status` is `current`.",
}


def set_by_catalogue(table: str) -> set[str]:
    """Columns the catalogue fills in when it commits; a bundle leaves them empty."""
    return {"commit_id", "version"} if table == "findings" else {"commit_id"}


def key_bits(key_id: str) -> int:
    """Hex digits 1-15 of a finding key's sha256 as a number: what commits join versions on."""
    return int(key_id[7:22], 16)


KEY_BITS_SQL = "TRY_CAST('0x' || key_id[8:22] AS BIGINT)"
"""``key_bits`` in SQL, over a findings row's ``key_id``."""


def upgrade_store(con: duckdb.DuckDBPyConnection) -> None:
    """Bring a catalogue made by an earlier modelsci up to date: the queue, the findings' key_bits."""
    con.execute(QUEUE_DDL)
    has_bits = con.execute("SELECT count(*) FROM duckdb_columns() WHERE schema_name = 'store' "
                           "AND table_name = 'findings' AND column_name = 'key_bits'").fetchone()[0]
    if not has_bits:
        con.execute("BEGIN")
        con.execute("ALTER TABLE store.findings ADD COLUMN key_bits BIGINT")
        con.execute(f"UPDATE store.findings SET key_bits = {KEY_BITS_SQL}")
        con.execute("COMMIT")


def create_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create the store tables, the public views and the schema version, in one transaction."""
    con.execute("BEGIN")
    con.execute("CREATE SCHEMA store")
    con.execute("CREATE TABLE store.meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
    con.execute("INSERT INTO store.meta VALUES ('schema_version', ?)", [str(SCHEMA_VERSION)])
    for spec in TABLES.values():
        cols = [f'"{c.name}" {c.sql_type}{"" if c.nullable else " NOT NULL"}' for c in spec.columns]
        cols += spec.bookkeeping()
        cols.append(f"PRIMARY KEY ({', '.join(spec.primary_key)})")
        con.execute(f"CREATE TABLE store.{spec.name} ({', '.join(cols)})")
    con.execute(QUEUE_DDL)
    create_views(con, as_of_seq=None, temporary=False)
    con.execute("COMMIT")


def create_views(con: duckdb.DuckDBPyConnection, *, as_of_seq: int | None, temporary: bool) -> None:
    """Create the public views; cut off at ``as_of_seq`` when given (temporary ones shadow the stored)."""
    kind = "TEMP VIEW" if temporary else "VIEW"
    for name, select in _view_selects(as_of_seq).items():
        con.execute(f"CREATE OR REPLACE {kind} {name} AS {select}")


def _view_selects(as_of_seq: int | None) -> dict[str, str]:
    upto = "" if as_of_seq is None else f" WHERE commit_seq <= {int(as_of_seq)}"
    selects: dict[str, str] = {}
    for spec in TABLES.values():
        cols = ", ".join(f'"{c}"' for c in spec.column_names)
        if spec.name == "commits":
            where = "" if as_of_seq is None else f" WHERE seq <= {int(as_of_seq)}"
            selects[spec.name] = f"SELECT {cols} FROM store.commits{where}"
        elif spec.name == "findings":
            superseded = "superseded_seq IS NOT NULL" + (
                "" if as_of_seq is None else f" AND superseded_seq <= {int(as_of_seq)}")
            selects[spec.name] = (
                f"SELECT {cols}, CASE WHEN {superseded} THEN 'superseded' ELSE 'current' END AS status "
                f"FROM store.findings{upto}")
        else:
            selects[spec.name] = f"SELECT {cols} FROM store.{spec.name}{upto}"
    selects["findings_current"] = "SELECT * FROM findings WHERE status = 'current'"
    return selects
