"""Two models' findings, or the catalogue at two commits, side by side (``modelsci compare``).

Both sides come from ``findings_summary`` (seeds aggregated) and are matched on a finding's
replication key without its model: (``dataset_id``, ``analysis_name``, ``params_hash``, ``kind``,
``subject``); comparing commits matches on ``model_id`` too. A key only one side has is listed
with the other side's columns null. The columns:

- the key's columns, then ``unit`` (either side's);
- ``mean_a``, ``ci_low_a``, ``ci_high_a``, ``n_seeds_a``, ``finding_a`` (the first seed's finding id)
  for side a, and the same ending in ``_b`` for side b;
- ``difference``: ``mean_b - mean_a``;
- ``overlap``: whether the two 95% intervals share a point (a value without an interval counts as
  the interval [value, value]); null where either side has no value.
"""

from __future__ import annotations

import duckdb
import pyarrow as pa

from modelsci.catalogue import Catalogue

__all__ = ["COMMITS_SQL", "KEY_COLUMNS", "MODELS_SQL", "SIDE_SQL", "compare_commits", "compare_models", "side_by_side_sql"]

KEY_COLUMNS = ("dataset_id", "analysis_name", "params_hash", "kind", "subject")
"""What two models' findings are matched on."""

_SIDE = ("SELECT model_id, dataset_id, analysis_name, params_hash, kind, subject, unit, n_seeds, mean, ci_low, "
         "ci_high, first_id FROM findings_summary")


def compare_models(cat: Catalogue, a: str, b: str, *, as_of: str | int | None = None) -> pa.Table:
    """Findings of model ``a`` beside those of model ``b`` (ids or unique id prefixes), one row per key."""
    id_a, id_b = cat.model_id(a, as_of=as_of), cat.model_id(b, as_of=as_of)
    side_a = cat.query(f"{_SIDE} WHERE model_id = $id", {"id": id_a}, as_of=as_of)
    side_b = cat.query(f"{_SIDE} WHERE model_id = $id", {"id": id_b}, as_of=as_of)
    return _side_by_side(side_a, side_b, KEY_COLUMNS)


def compare_commits(cat: Catalogue, c1: str | int, c2: str | int) -> pa.Table:
    """The findings as the catalogue stood after commit ``c1`` beside those after ``c2`` (id, prefix or seq)."""
    side_a = cat.query(_SIDE, as_of=c1)
    side_b = cat.query(_SIDE, as_of=c2)
    return _side_by_side(side_a, side_b, ("model_id", *KEY_COLUMNS))


def side_by_side_sql(key: tuple[str, ...] = KEY_COLUMNS) -> str:
    """The SELECT joining two sides, relations ``side_a`` and ``side_b`` of ``findings_summary``'s columns,
    on ``key``: the columns listed in the module docstring."""
    keys = ", ".join(f"coalesce(a.{k}, b.{k}) AS {k}" for k in key)
    match = " AND ".join(f"a.{k} IS NOT DISTINCT FROM b.{k}" for k in key)
    lo_a, hi_a = "coalesce(a.ci_low, a.mean)", "coalesce(a.ci_high, a.mean)"
    lo_b, hi_b = "coalesce(b.ci_low, b.mean)", "coalesce(b.ci_high, b.mean)"
    return f"""
        SELECT {keys}, coalesce(a.unit, b.unit) AS unit,
               a.mean AS mean_a, a.ci_low AS ci_low_a, a.ci_high AS ci_high_a,
               b.mean AS mean_b, b.ci_low AS ci_low_b, b.ci_high AS ci_high_b,
               b.mean - a.mean AS difference,
               CASE WHEN a.mean IS NOT NULL AND b.mean IS NOT NULL
                    THEN {lo_a} <= {hi_b} AND {lo_b} <= {hi_a} END AS overlap,
               a.n_seeds AS n_seeds_a, b.n_seeds AS n_seeds_b, a.first_id AS finding_a, b.first_id AS finding_b
        FROM side_a a FULL JOIN side_b b ON {match}
        ORDER BY {", ".join(f"{k} NULLS FIRST" for k in key)}"""


SIDE_SQL = _SIDE
"""One side's rows: ``findings_summary``'s columns that a comparison reads (filter it on ``model_id``)."""
MODELS_SQL = side_by_side_sql(KEY_COLUMNS)
"""Two models' sides joined: what ``compare_models`` runs, and the site's Compare page in the browser."""
COMMITS_SQL = side_by_side_sql(("model_id", *KEY_COLUMNS))
"""The catalogue at two commits joined: what ``compare_commits`` runs, and the Compare page too."""


def _side_by_side(side_a: pa.Table, side_b: pa.Table, key: tuple[str, ...]) -> pa.Table:
    # Both sides are already in memory (each read under its own as_of), so they are joined apart
    # from the catalogue: this works the same for a local and a published one.
    con = duckdb.connect()
    try:
        con.register("side_a", side_a)
        con.register("side_b", side_b)
        return con.sql(side_by_side_sql(key)).to_arrow_table()
    finally:
        con.close()
