"""The catalogue's tables and views, derived from the SQLModel entities in ``schemas``.

Rows live in the schema ``store`` and are never deleted or rewritten: each carries the
sequence number of the commit that added it (``commit_seq``), and a finding also records the
commit that superseded it (``superseded_seq``), whether a verification run made it
(``verification``), and 60 bits of its replication key as a number (``key_bits``), on which
each commit finds the versions and the other seeds of its findings. The public names
(``models``, ``findings``, ``findings_current``, ``findings_summary``, ...) are views over
``store`` that a reader queries; the same view definitions, cut off at a commit's sequence
number, answer ``--as-of`` queries.

``store.meta`` records ``schema_version`` (the tables' columns) and ``id_format`` (how ids are
computed; a catalogue without it is of format 1). A catalogue of an older id format is refused
until ``modelsci upgrade`` (``catalogue.upgrade``) recomputes its ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from functools import cached_property

import duckdb
import pyarrow as pa
from sqlmodel import SQLModel

from modelsci.catalogue.queue import QUEUE_DDL
from modelsci.schemas.entities import ENTITIES, source_name
from modelsci.schemas.errors import ModelsciError

__all__ = ["ID_FORMAT", "KEY_BITS_SQL", "LINEAGE_COLUMNS", "SCHEMA_VERSION", "SUMMARY_COLUMNS", "TABLES", "VIEWS", "OldFormatError",
           "TableSpec", "add_name_columns", "create_schema", "create_tables", "create_views", "id_format", "key_bits",
           "require_current_format", "set_by_catalogue", "upgrade_store", "view_definitions"]

SCHEMA_VERSION = 3
"""The tables' columns: 2 added ``findings.seed``, ``findings.replication_key``, ``runs.train_dataset_id``
and ``runs.verifies_run_id``; 3 added ``models.name``, ``models.origin`` and ``datasets.name``."""
ID_FORMAT = 2
"""How ids are computed: 2 put the seed into finding keys (and so into finding, artifact and commit ids)."""


class OldFormatError(ModelsciError, RuntimeError):
    """A catalogue whose ids are of another format than this modelsci computes."""

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
            extra += ["superseded_seq BIGINT", "key_bits BIGINT", "verification BOOLEAN NOT NULL DEFAULT false"]
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
    "findings_current": "The current version of every finding key (one per seed): `findings` where `status` is "
                        "`current`; verification runs' findings are never current.",
    "findings_summary": "One row per replication key (a finding key without the seed) over the current findings: "
                        "the seeds' values summarised. The first seed is the lowest one with a current finding; "
                        "each other seed's finding is judged against it (`replicates` or `contradicts`). This is "
                        "what `modelsci findings` and the site show by default.",
    "findings_lineage": "Each model's current findings beside those of its relatives through `models.base_model_id`: "
                        "one row per (model, current finding of the model itself, of an ancestor (its base model, "
                        "that model's base, ...) or of a descendant (a model derived or fine-tuned from it, ...)). "
                        "Filter on `model_id` for one model's lineage; `relative_id` is the model the finding is "
                        "about. The other columns are `findings_current`'s.",
}

SUMMARY_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("replication_key", "VARCHAR", "The replication key that the summarised findings share."),
    ("model_id", "VARCHAR", "Model instance."),
    ("dataset_id", "VARCHAR", "Dataset."),
    ("analysis_name", "VARCHAR", "Analysis name."),
    ("params_hash", "VARCHAR", "Hash of the parameters."),
    ("kind", "VARCHAR", "Kind of finding."),
    ("subject", "VARCHAR", "What within the model it is about."),
    ("unit", "VARCHAR", "Unit of the value (the first seed's)."),
    ("n_seeds", "BIGINT", "Seeds with a current finding."),
    ("seeds", "BIGINT[]", "Those seeds, ascending."),
    ("mean", "DOUBLE", "Mean of the seeds' values (nulls left out)."),
    ("std", "DOUBLE", "Sample standard deviation of the seeds' values; null for one value."),
    ("min", "DOUBLE", "Smallest of the seeds' values."),
    ("max", "DOUBLE", "Largest of the seeds' values."),
    ("ci_low", "DOUBLE", "Lower end of the 95% interval: with several values the t-interval of their mean "
                         "(mean - t(0.975, n-1) std / sqrt(n)), with one seed that finding's own CI."),
    ("ci_high", "DOUBLE", "Upper end of that interval."),
    ("all_replicate", "BOOLEAN", "Whether every other seed's finding is linked `replicates` to the first seed's; "
                                 "null with one seed or when a pair could not be judged (a null value)."),
    ("first_id", "VARCHAR", "Id of the first (lowest) seed's finding."),
    ("statement", "VARCHAR", "The first seed's statement."),
)
"""``findings_summary``'s columns: name, type, description."""

LINEAGE_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("model_id", "VARCHAR", "The model whose lineage this is."),
    ("relation", "VARCHAR", "What the finding's model is to it: `self`, `ancestor` or `descendant`."),
    ("distance", "BIGINT", "Steps along `base_model_id` between the two: 0 for `self`, 1 for the base model or a "
                           "model derived directly from it, ..."),
    ("relative_id", "VARCHAR", "The model the finding is about (the finding's own `model_id`)."),
)
"""``findings_lineage``'s own columns: name, type, description; ``findings_current``'s follow them."""
_LINEAGE_MAX_DEPTH = 64  # a crafted import could make base_model_id a cycle: stop walking it somewhere

# t(0.975, df) for df 1..30, beyond which the Cornish-Fisher expansion in z below is within 2e-6.
_T_975 = (12.706205, 4.302653, 3.182446, 2.776445, 2.570582, 2.446912, 2.364624, 2.306004, 2.262157, 2.228139,
          2.200985, 2.178813, 2.160369, 2.144787, 2.131450, 2.119905, 2.109816, 2.100922, 2.093024, 2.085963,
          2.079614, 2.073873, 2.068658, 2.063899, 2.059539, 2.055529, 2.051831, 2.048407, 2.045230, 2.042272)
_Z_975 = 1.959963984540054


def set_by_catalogue(table: str) -> set[str]:
    """Columns the catalogue fills in when it commits; a bundle leaves them empty."""
    return {"commit_id", "version"} if table == "findings" else {"commit_id"}


def key_bits(key_id: str) -> int:
    """Hex digits 1-15 of a finding key's sha256 as a number: what commits join versions on."""
    return int(key_id[7:22], 16)


KEY_BITS_SQL = "TRY_CAST('0x' || replication_key[8:22] AS BIGINT)"
"""``key_bits`` in SQL, over a findings row's ``replication_key``."""


def id_format(con: duckdb.DuckDBPyConnection) -> int:
    """The id format ``store.meta`` records; 1 for a catalogue made before it was recorded."""
    rows = con.execute("SELECT value FROM store.meta WHERE key = 'id_format'").fetchall()
    return int(rows[0][0]) if rows else 1


def require_current_format(con: duckdb.DuckDBPyConnection, root: object) -> None:
    """Refuse a catalogue whose ids this modelsci does not compute, saying what to do."""
    found = id_format(con)
    if found < ID_FORMAT:
        raise OldFormatError(f"the catalogue {root} is of an older format (id format {found}; this modelsci "
                             f"computes format {ID_FORMAT}, with the seed in finding keys): run `modelsci "
                             f"--catalogue {root} upgrade` to recompute its ids in place, then try again")
    if found > ID_FORMAT:
        raise OldFormatError(f"the catalogue {root} is of id format {found}, newer than this modelsci's "
                             f"{ID_FORMAT}: upgrade modelsci to read it")


def upgrade_store(con: duckdb.DuckDBPyConnection, root: object) -> None:
    """Before a writer's first commit: refuse an older id format, add the columns of this schema
    version, and create the queue and views if missing."""
    require_current_format(con, root)
    con.execute(QUEUE_DDL)
    added = add_name_columns(con)
    stored = {row[0] for row in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT temporary").fetchall()}
    if added or not set(VIEWS) <= stored:  # a catalogue made before a view was added gets it on its next write
        create_views(con, as_of_seq=None, temporary=False)


def add_name_columns(con: duckdb.DuckDBPyConnection, *, transaction: bool = True) -> bool:
    """Schema version 3 on a catalogue of version 2: ``models.name`` and ``datasets.name`` added and,
    where empty, filled from each source's last path component (``schemas.source_name``), and
    ``models.origin`` (``derived`` for the models analyses made, whose sources are ``modelsci-...://``).
    Ids do not change (names are not part of them). In a transaction of its own unless
    ``transaction`` is false (the caller's); returns whether anything changed."""
    have = {(t, c) for t, c in con.execute(
        "SELECT table_name, column_name FROM duckdb_columns() WHERE schema_name = 'store' "
        "AND table_name IN ('models', 'datasets')").fetchall()}
    missing = [(t, c) for t, c in (("models", "name"), ("models", "origin"), ("datasets", "name")) if (t, c) not in have]
    nameless = {t: con.execute(f"SELECT id, source_uri FROM store.{t} WHERE name IS NULL").fetchall()
                for t in ("models", "datasets") if (t, "name") in have}
    if not missing and not any(nameless.values()):
        return False
    if transaction:
        con.execute("BEGIN TRANSACTION")
    try:
        for table, column in missing:
            default = " DEFAULT 'submitted'" if column == "origin" else ""
            con.execute(f"ALTER TABLE store.{table} ADD COLUMN {column} VARCHAR{default}")
        for table in ("models", "datasets"):
            rows = nameless.get(table)
            if rows is None:
                rows = con.execute(f"SELECT id, source_uri FROM store.{table}").fetchall()
            if not rows:
                continue
            derived = ", origin = CASE WHEN source_uri LIKE 'modelsci-%://%' THEN 'derived' ELSE origin END" \
                if table == "models" else ""
            con.execute(f"UPDATE store.{table} SET name = v.name{derived} FROM (SELECT unnest(?::VARCHAR[]) AS id, "
                        f"unnest(?::VARCHAR[]) AS name) v WHERE v.id = store.{table}.id",
                        [[r[0] for r in rows], [source_name(r[1]) for r in rows]])
        con.execute("INSERT OR REPLACE INTO store.meta VALUES ('schema_version', ?)", [str(SCHEMA_VERSION)])
        if transaction:
            con.execute("COMMIT")
    except BaseException:
        if transaction:
            con.execute("ROLLBACK")
        raise
    return True


def create_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create the store tables, the public views and the versions, in one transaction."""
    con.execute("BEGIN")
    con.execute("CREATE SCHEMA store")
    con.execute("CREATE TABLE store.meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
    con.execute("INSERT INTO store.meta VALUES ('schema_version', ?), ('id_format', ?)",
                [str(SCHEMA_VERSION), str(ID_FORMAT)])
    create_tables(con)
    con.execute(QUEUE_DDL)
    create_views(con, as_of_seq=None, temporary=False)
    con.execute("COMMIT")


def create_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Create the store's entity tables (in the caller's transaction)."""
    for spec in TABLES.values():
        cols = [f'"{c.name}" {c.sql_type}{"" if c.nullable else " NOT NULL"}' for c in spec.columns]
        cols += spec.bookkeeping()
        cols.append(f"PRIMARY KEY ({', '.join(spec.primary_key)})")
        con.execute(f"CREATE TABLE store.{spec.name} ({', '.join(cols)})")


def create_views(con: duckdb.DuckDBPyConnection, *, as_of_seq: int | None, temporary: bool) -> None:
    """Create the public views; cut off at ``as_of_seq`` when given (temporary ones shadow the stored)."""
    kind = "TEMP VIEW" if temporary else "VIEW"
    for name, select in _view_selects(as_of_seq).items():
        con.execute(f"CREATE OR REPLACE {kind} {name} AS {select}")


def view_definitions(as_of_seq: int | None = None) -> dict[str, str]:
    """Each public view's SELECT over ``store``, in the order they are created (later ones read earlier ones)."""
    return _view_selects(as_of_seq)


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
                f"SELECT {cols}, CASE WHEN verification THEN 'verification' WHEN {superseded} THEN 'superseded' "
                f"ELSE 'current' END AS status FROM store.findings{upto}")
        else:
            selects[spec.name] = f"SELECT {cols} FROM store.{spec.name}{upto}"
    selects["findings_current"] = "SELECT * FROM findings WHERE status = 'current'"
    selects["findings_summary"] = _SUMMARY
    selects["findings_lineage"] = _LINEAGE
    return selects


def _t_975(df: str) -> str:
    """t(0.975, df) in SQL: the table up to 30, the expansion beyond."""
    z = _Z_975
    expansion = (f"{z} + {z**3 + z} / (4 * {df}) + {5 * z**5 + 16 * z**3 + 3 * z} / (96 * {df} ^ 2) "
                 f"+ {3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z} / (384 * {df} ^ 3)")
    table = " ".join(f"WHEN {df} = {i} THEN {q}" for i, q in enumerate(_T_975, start=1))
    return f"CASE {table} ELSE {expansion} END"


# The first seed's unit and interval are the first of the seed-ordered lists (which keep nulls):
# arg_min_null would do, but the Query page's DuckDB-WASM predates it, and runs this same view.
# model_id rides along every grouping (a replication key fixes it) so that a filter on one model
# reaches each part of the view: a query on one model then reads little of a published catalogue.
_SUMMARY = f"""
WITH cur AS (SELECT * FROM findings_current),
firsts AS (SELECT replication_key, model_id, arg_min(id, seed) AS first_id, min(seed) AS first_seed
           FROM cur GROUP BY replication_key, model_id),
judged AS (
    SELECT c.replication_key, c.model_id, count(*) AS n_later, count(l.relation) AS n_judged,
           bool_and(l.relation = 'replicates') AS replicate
    FROM cur c JOIN firsts f ON f.replication_key = c.replication_key AND f.model_id = c.model_id
         AND c.seed <> f.first_seed
    LEFT JOIN finding_links l ON l.src_id = c.id AND l.dst_id = f.first_id
         AND l.relation IN ('replicates', 'contradicts')
    GROUP BY c.replication_key, c.model_id),
agg AS (
    SELECT replication_key, model_id, dataset_id, analysis_name, params_hash, kind, subject,
           (list(unit ORDER BY seed))[1] AS unit, count(*) AS n_seeds, list(seed ORDER BY seed) AS seeds,
           count(value) AS n_values, avg(value) AS mean, stddev_samp(value) AS std, min(value) AS min,
           max(value) AS max, (list(ci_low ORDER BY seed))[1] AS first_ci_low, (list(ci_high ORDER BY seed))[1] AS first_ci_high,
           arg_min(id, seed) AS first_id, arg_min(statement, seed) AS statement
    FROM cur GROUP BY replication_key, model_id, dataset_id, analysis_name, params_hash, kind, subject)
SELECT a.replication_key, a.model_id, a.dataset_id, a.analysis_name, a.params_hash, a.kind, a.subject, a.unit,
       a.n_seeds, a.seeds, a.mean, a.std, a.min, a.max,
       CASE WHEN a.n_values > 1 THEN a.mean - ({_t_975("(a.n_values - 1)")}) * a.std / sqrt(a.n_values)
            WHEN a.n_seeds = 1 THEN a.first_ci_low END AS ci_low,
       CASE WHEN a.n_values > 1 THEN a.mean + ({_t_975("(a.n_values - 1)")}) * a.std / sqrt(a.n_values)
            WHEN a.n_seeds = 1 THEN a.first_ci_high END AS ci_high,
       CASE WHEN a.n_seeds > 1 AND j.n_judged = j.n_later THEN j.replicate END AS all_replicate,
       a.first_id, a.statement
FROM agg a LEFT JOIN judged j ON j.replication_key = a.replication_key AND j.model_id = a.model_id"""


# Only public views are read, so that the definition answers under as_of (temporary views shadow
# them) and on a published catalogue (whose store tables are views over Parquet).
_LINEAGE = f"""
WITH RECURSIVE up(model_id, relative_id, distance) AS (
    SELECT id, base_model_id, 1 FROM models WHERE base_model_id IS NOT NULL
    UNION ALL
    SELECT u.model_id, m.base_model_id, u.distance + 1 FROM up u JOIN models m ON m.id = u.relative_id
    WHERE m.base_model_id IS NOT NULL AND u.distance < {_LINEAGE_MAX_DEPTH}),
rel AS (
    SELECT id AS model_id, 'self' AS relation, 0 AS distance, id AS relative_id FROM models
    UNION ALL SELECT model_id, 'ancestor', distance, relative_id FROM up
    UNION ALL SELECT relative_id, 'descendant', distance, model_id FROM up)
SELECT r.model_id, r.relation, r.distance::BIGINT AS distance, r.relative_id, f.* EXCLUDE (model_id)
FROM rel r JOIN findings_current f ON f.model_id = r.relative_id"""
