"""Versions of a finding key, and the judgments that link a new version to the current one.

A new finding whose key the catalogue holds becomes the key's next version and ``supersedes``
the current one. When it came from another run, it is also judged against it: ``replicates``
when the two values agree (within the analysis' tolerance, else with overlapping 95% CIs),
``contradicts`` when they do not; the evidence records both values and the rule applied.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa

from modelsci.schemas.identity import canonical_json

__all__ = ["StoredVersion", "judgment", "stored_versions", "version_findings"]


@dataclass(frozen=True)
class StoredVersion:
    """A version of a finding key that the catalogue holds."""

    id: str
    version: int
    run_id: str
    value: float | None
    ci_low: float | None
    ci_high: float | None
    current: bool


def stored_versions(con: duckdb.DuckDBPyConnection, findings: pa.Table,
                     hits: list[int]) -> dict[str, list[StoredVersion]]:
    """Every stored version of the bundle's finding keys whose ``key_bits`` the probe found, by key."""
    if not hits:
        return {}
    keys = set(findings.column("key_id").to_pylist())
    rows = con.execute("SELECT key_id, id, version, run_id, value, ci_low, ci_high, superseded_seq IS NULL "
                       "FROM store.findings WHERE key_bits IN (SELECT unnest(?::BIGINT[]))", [hits]).fetchall()
    versions: dict[str, list[StoredVersion]] = {}
    for key, *fields in rows:
        if key in keys:  # not merely a key that shares the bits
            versions.setdefault(key, []).append(StoredVersion(*fields))
    return versions


def version_findings(tables: dict[str, pa.Table], versions: dict[str, list[StoredVersion]],
                      held_analyses: dict[str, float | None]) -> tuple[pa.Table, list[tuple[str, str, str, str]]]:
    """The new findings, each numbered after its key's current version, and the links that
    judge them against it: ``supersedes`` always, ``replicates`` or ``contradicts`` when the
    new version came from another run."""
    findings = tables["findings"]
    if not versions:
        return findings, []
    held = {v.id for vs in versions.values() for v in vs}
    keep = [i for i, f in enumerate(findings.column("id").to_pylist()) if f not in held]
    if len(keep) < findings.num_rows:
        findings = findings.take(pa.array(keep, pa.int64()))
    tolerance = dict(zip(tables["analyses"].column("id").to_pylist(),
                         tables["analyses"].column("tolerance").to_pylist()))
    tolerance.update(held_analyses)
    numbers, previous, links = [], [], []
    for f in findings.select(["id", "key_id", "analysis_id", "run_id", "value", "ci_low", "ci_high"]).to_pylist():
        current = next((v for v in versions.get(f["key_id"], []) if v.current), None)
        numbers.append(current.version + 1 if current else 1)
        previous.append(current.id if current else None)
        if current is None:
            continue
        links.append((f["id"], current.id, "supersedes",
                      canonical_json({"previous_version": current.version, "version": current.version + 1})))
        if f["run_id"] != current.run_id and f["value"] is not None and current.value is not None:
            links.append(judgment(f, current, tolerance.get(f["analysis_id"])))
    findings = findings.set_column(findings.schema.get_field_index("version"), "version", pa.array(numbers, pa.int64()))
    return findings.set_column(findings.schema.get_field_index("previous_id"), "previous_id",
                               pa.array(previous, pa.string())), links


def judgment(new: dict[str, Any], old: StoredVersion, tolerance: float | None) -> tuple[str, str, str, str]:
    """``replicates`` or ``contradicts``: within the analysis' tolerance, else overlapping CIs
    (a value without a CI is the interval of itself)."""
    difference = new["value"] - old.value
    if tolerance is not None:
        agrees, rule = abs(difference) <= tolerance, f"absolute difference <= {tolerance}"
    else:
        low = max(_or(new["ci_low"], new["value"]), _or(old.ci_low, old.value))
        high = min(_or(new["ci_high"], new["value"]), _or(old.ci_high, old.value))
        agrees, rule = low <= high, "overlapping 95% CIs (equality without a CI)"
    evidence = {"value": new["value"], "ci": [new["ci_low"], new["ci_high"]], "previous_value": old.value,
                "previous_ci": [old.ci_low, old.ci_high], "difference": difference, "rule": rule}
    return new["id"], old.id, "replicates" if agrees else "contradicts", canonical_json(evidence)


def _or(value: float | None, default: float) -> float:
    return default if value is None else value
