"""Versions of a finding key, replications across seeds, verifications, and the judgments that link them.

Three relations between the findings of one replication key (a finding key without the seed):

- **Versions** share a key (the same seed). A new finding whose key the catalogue holds becomes
  the key's next version and ``supersedes`` the current one; when it came from another run, it
  is also judged against it.
- **Seeds** are replications. Each seed's current finding stays current. The *first* seed of a
  replication key is the lowest seed that has a current finding; every other seed's current
  finding is judged against the first seed's current finding (the link goes from the other seed
  to the first). When a commit changes either end of such a pair (a new seed, a new version, or
  a seed lower than the first), the pair is judged as the commit lands, so the current findings
  of a key always have their judgment against the current first.
- **Verifications**: the findings of a verification run (``runs.verifies_run_id``) are no version
  and never current; each is judged against the finding of the verified run with the same key.

A judgment is ``replicates`` when the two values agree (within the analysis' tolerance, else
with overlapping 95% CIs), ``contradicts`` when they do not; the evidence records both values,
their CIs, the difference, the rule applied and what was compared (``between``). A verification
re-ran the same inputs with the same seed, so overlapping CIs would be too lax a test there:
without a declared tolerance, its value and CI must equal the original's up to floating-point
precision (``numpy.isclose``'s default tolerances, ``VERIFY_RTOL`` and ``VERIFY_ATOL``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from modelsci.schemas.identity import canonical_json

__all__ = ["VERIFY_ATOL", "VERIFY_RTOL", "StoredFinding", "judgment", "stored_findings", "version_findings"]

Link = tuple[str, str, str, str]
VERIFY_RTOL, VERIFY_ATOL = 1e-5, 1e-8
"""How far a verification's numbers may be from the original's when the analysis declares no tolerance."""


@dataclass(frozen=True)
class StoredFinding:
    """A finding the catalogue holds that shares a replication key with a finding being landed."""

    id: str
    key_id: str
    replication_key: str
    seed: int
    version: int | None
    run_id: str
    analysis_id: str
    value: float | None
    ci_low: float | None
    ci_high: float | None
    current: bool
    verification: bool


def stored_findings(con: duckdb.DuckDBPyConnection, findings: pa.Table,
                    hits: list[int]) -> dict[str, list[StoredFinding]]:
    """Every stored finding of the bundle's replication keys whose ``key_bits`` the probe found, by
    replication key."""
    if not hits:
        return {}
    keys = set(findings.column("replication_key").to_pylist())
    rows = con.execute("SELECT id, key_id, replication_key, seed, version, run_id, analysis_id, value, ci_low, "
                       "ci_high, superseded_seq IS NULL AND NOT verification, verification "
                       "FROM store.findings WHERE key_bits IN (SELECT unnest(?::BIGINT[]))", [hits]).fetchall()
    stored: dict[str, list[StoredFinding]] = {}
    for row in rows:
        finding = StoredFinding(*row)
        if finding.replication_key in keys:  # not merely a key that shares the bits
            stored.setdefault(finding.replication_key, []).append(finding)
    return stored


def version_findings(tables: dict[str, pa.Table], stored: dict[str, list[StoredFinding]],
                     held_analyses: dict[str, float | None],
                     verifying: dict[str, str]) -> tuple[pa.Table, list[Link]]:
    """The new findings, each numbered after its key's current version (or marked a verification
    when its run is one of ``verifying``: run id -> the run it verifies), and the links that judge
    them (module docstring)."""
    findings = tables["findings"]
    held = {f.id for fs in stored.values() for f in fs}
    if held:
        findings = findings.filter(pc.invert(pc.is_in(findings.column("id"), pa.array(list(held), pa.string()))))
    replications = findings.column("replication_key")
    if not stored and not verifying and pc.count_distinct(replications).as_py() == findings.num_rows:
        return findings, []  # every key new, no two seeds of one key: the usual first landing
    tolerance = dict(zip(tables["analyses"].column("id").to_pylist(),
                         tables["analyses"].column("tolerance").to_pylist()))
    tolerance.update(held_analyses)
    current = {f.key_id: f for fs in stored.values() for f in fs if f.current}
    numbers, previous, verification, links = [], [], [], []
    landed: dict[str, dict[int, dict[str, Any]]] = {}  # replication key -> seed -> new current finding
    columns = ["id", "key_id", "replication_key", "seed", "analysis_id", "run_id", "value", "ci_low", "ci_high"]
    for f in findings.select(columns).to_pylist():
        verified_run = verifying.get(f["run_id"])
        if verified_run is not None:
            numbers.append(None)
            previous.append(None)
            verification.append(True)
            original = next((s for s in stored.get(f["replication_key"], []) if s.key_id == f["key_id"]
                             and s.run_id == verified_run and not s.verification), None)
            if original is not None:
                links += _judged(f, asdict(original), tolerance, "verification")
            continue
        verification.append(False)
        before = current.get(f["key_id"])
        numbers.append(before.version + 1 if before else 1)
        previous.append(before.id if before else None)
        landed.setdefault(f["replication_key"], {})[f["seed"]] = f
        if before is None:
            continue
        links.append((f["id"], before.id, "supersedes",
                      canonical_json({"previous_version": before.version, "version": before.version + 1})))
        if f["run_id"] != before.run_id:
            links += _judged(f, asdict(before), tolerance, "versions")
    for key, new in landed.items():
        links += _judge_seeds(key, new, stored.get(key, []), tolerance)
    findings = findings.set_column(findings.schema.get_field_index("version"), "version", pa.array(numbers, pa.int64()))
    findings = findings.set_column(findings.schema.get_field_index("verification"), "verification",
                                   pa.array(verification, pa.bool_()))
    return findings.set_column(findings.schema.get_field_index("previous_id"), "previous_id",
                               pa.array(previous, pa.string())), links


def _judge_seeds(key: str, new: dict[int, dict[str, Any]], stored: list[StoredFinding],
                 tolerance: dict[str, float | None]) -> list[Link]:
    """Judge each other seed's current finding against the first seed's, where the commit changed
    either of the two."""
    seeds: dict[int, dict[str, Any]] = {f.seed: asdict(f) for f in stored if f.current}
    seeds.update(new)
    if len(seeds) < 2:
        return []
    first = min(seeds)
    links = []
    for seed, finding in sorted(seeds.items()):
        if seed != first and (seed in new or first in new):
            links += _judged(finding, seeds[first], tolerance, "seeds")
    return links


def _judged(new: Mapping[str, Any], old: Mapping[str, Any], tolerance: dict[str, float | None],
            between: str) -> list[Link]:
    """The judgment of ``new`` against ``old``, or none when either has no value."""
    if new["value"] is None or old["value"] is None:
        return []
    return [judgment(new, old, tolerance.get(new["analysis_id"]), between=between)]


def judgment(new: Mapping[str, Any], old: Mapping[str, Any], tolerance: float | None, *,
             between: str = "versions") -> Link:
    """``replicates`` or ``contradicts`` (a link from ``new`` to ``old``, each a mapping with ``id``,
    ``value``, ``ci_low``, ``ci_high`` and ``seed``): within the analysis' tolerance, else
    overlapping CIs (a value without a CI is the interval of itself)."""
    difference = new["value"] - old["value"]
    if tolerance is not None:
        agrees, rule = abs(difference) <= tolerance, f"absolute difference <= {tolerance}"
    elif between == "verification":
        pairs = [(new[k], old[k]) for k in ("value", "ci_low", "ci_high")]
        agrees = all((a is None and b is None) or (a is not None and b is not None and _close(a, b)) for a, b in pairs)
        rule = f"value and CI equal within |a - b| <= {VERIFY_ATOL} + {VERIFY_RTOL} |b| (same inputs and seed)"
    else:
        low = max(_or(new["ci_low"], new["value"]), _or(old["ci_low"], old["value"]))
        high = min(_or(new["ci_high"], new["value"]), _or(old["ci_high"], old["value"]))
        agrees, rule = low <= high, "overlapping 95% CIs (equality without a CI)"
    evidence = {"value": new["value"], "ci": [new["ci_low"], new["ci_high"]], "previous_value": old["value"],
                "previous_ci": [old["ci_low"], old["ci_high"]], "difference": difference, "rule": rule,
                "between": between}
    if between == "seeds":
        evidence["seeds"] = [new["seed"], old["seed"]]
    return new["id"], old["id"], "replicates" if agrees else "contradicts", canonical_json(evidence)


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= VERIFY_ATOL + VERIFY_RTOL * abs(b)


def _or(value: float | None, default: float) -> float:
    return default if value is None else value
