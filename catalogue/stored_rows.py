"""Stored rows back into what made them: one commit's bundle, and the numbers a finding's id hashed.

An import (an export's rows) and an upgrade (a catalogue's own rows of an older id format) both
land commits again from rows; they share these pieces.
"""

from __future__ import annotations

import itertools
from typing import Any

from modelsci.catalogue.schema import TABLES, set_by_catalogue
from modelsci.schemas.bundle import finding_id

__all__ = ["GIVEN_LINKS", "entities", "finding_id_of", "hashed_numbers", "rows_by_commit"]

GIVEN_LINKS = frozenset({"extends", "derived_from"})
"""Links a bundle gives; the others (supersedes, replicates, contradicts) are judged again as commits land."""

Numbers = tuple[Any, Any, Any]


def rows_by_commit(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Rows grouped by the commit that added them, in their order."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        grouped.setdefault(row["commit_id"], []).append(row)
    return grouped


def entities(name: str, rows: list[dict[str, Any]]) -> list[Any]:
    """Rows of table ``name`` as its entities, without what the catalogue sets when it commits
    (a column the row lacks, added after it was written, is None)."""
    spec = TABLES[name]
    columns = [c for c in spec.column_names if c not in set_by_catalogue(name)]
    return [spec.entity(**{c: row.get(c) for c in columns}) for row in rows]


def finding_id_of(row: dict[str, Any], key_id: str, numbers: Numbers, artifacts: dict[str, str]) -> str:
    """The id of the finding ``row`` under ``key_id``, its value and CI hashed as ``numbers``."""
    value, low, high = numbers
    ci_given = row["ci_low"] is not None or row["ci_high"] is not None
    return finding_id(key_id, row["run_id"], analysis_id=row["analysis_id"], statement=row["statement"], value=value,
                      ci=(low, high) if ci_given else None, n=row["n"], unit=row["unit"], exact=row["exact"],
                      metrics=row["metrics"], artifacts=artifacts)


def hashed_numbers(row: dict[str, Any], key_id: str, artifacts: dict[str, str]) -> Numbers | None:
    """The value and CI as the finding's id hashed them, if ``row``'s id recomputes under ``key_id``
    (else None): a number stored as 1.0 may have been hashed as the integer 1."""
    for numbers in itertools.product(*map(_forms, (row["value"], row["ci_low"], row["ci_high"]))):
        if finding_id_of(row, key_id, numbers, artifacts) == row["id"]:
            return numbers
    return None


def _forms(x: Any) -> list[Any]:
    return [x, int(x)] if isinstance(x, float) and x.is_integer() else [x]
