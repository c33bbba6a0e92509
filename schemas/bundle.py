"""Result bundles: what an analysis returns and the catalogue commits, whole or not at all.

A bundle is plain data. It can be built on any machine (a Ray worker, a subprocess) and
carries its artifacts as Parquet bytes, so the committer only writes files and rows.
"""

from __future__ import annotations

import hashlib
import io
import operator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from modelsci.schemas.entities import Analysis, Dataset, Finding, FindingLink, ModelInstance, Run
from modelsci.schemas.identity import canonical_json, content_id

__all__ = ["BundleArtifact", "ResultBundle", "finding_id", "finding_key", "params_hash", "replication_key", "run_id",
           "run_key", "verification_run_key"]


def params_hash(params: dict[str, Any]) -> str:
    """Hash of a parameter dict (defaults filled in), part of run and finding keys."""
    return content_id(params)


def finding_key(
    model_id: str, dataset_id: str | None, analysis_name: str, params_hash: str, kind: str, subject: str, *,
    seed: int,
) -> str:
    """The key that all versions of one finding share: its replication key's fields and the run's seed."""
    return content_id({
        "analysis": analysis_name, "dataset": dataset_id, "kind": kind,
        "model": model_id, "params": params_hash, "seed": seed, "subject": subject,
    })


def replication_key(
    model_id: str, dataset_id: str | None, analysis_name: str, params_hash: str, kind: str, subject: str
) -> str:
    """The key that the findings of every seed share (``finding_key`` without the seed): replications."""
    return content_id({
        "analysis": analysis_name, "dataset": dataset_id, "kind": kind,
        "model": model_id, "params": params_hash, "subject": subject,
    })


def finding_id(
    key_id: str, run_id: str, *, analysis_id: str, statement: str, value: float | None,
    ci: tuple[float, float] | None, n: int | None, unit: str | None, exact: bool | None,
    metrics: dict[str, Any] | None, artifacts: dict[str, str],
) -> str:
    """A finding's id: its key, its run and its payload, numbers rounded (``_rounded``) and
    ``artifacts`` as name -> hex sha256 of the file's bytes."""
    payload = {
        "analysis_id": analysis_id, "statement": statement, "value": _rounded(value),
        "ci": _rounded(list(ci)) if ci else None, "n": n, "unit": unit, "exact": exact,
        "metrics": _rounded(metrics or {}), "artifacts": artifacts,
    }
    return content_id({"key": key_id, "run": run_id, "payload": payload})


def run_key(model_id: str, dataset_id: str | None, analysis_id: str, params_hash: str, seed: int,
            train_dataset_id: str | None = None) -> str:
    """What the attempts of one planned run share: model, dataset, analysis@version, params hash,
    seed, and the dataset a retraining analysis fits on (left out of the hash when there is none)."""
    fields = {"model": model_id, "dataset": dataset_id, "analysis": analysis_id, "params": params_hash, "seed": seed}
    if train_dataset_id is not None:
        fields["train"] = train_dataset_id
    return content_id(fields)


def run_id(run_key: str, attempt: int) -> str:
    """A planned run's id: its key and attempt (0 first; a failed run planned again is the next)."""
    return content_id({"run_key": run_key, "attempt": attempt})


def verification_run_key(verified_run_id: str) -> str:
    """What the verification runs of one run share (their ids: ``run_id`` of it and an attempt)."""
    return content_id({"verifies": verified_run_id})


@dataclass(frozen=True)
class BundleArtifact:
    """A Parquet table attached to a finding, serialised once when the bundle is made."""

    finding_id: str
    name: str
    data: bytes
    rows: int

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


def _rounded(value: Any) -> Any:
    """Numbers as they enter a finding's id: 10 significant digits, |x| < 1e-12 as 0, so that the
    same result computed with another BLAS thread count (a Ray worker) is the same finding."""
    if isinstance(value, float):
        return 0.0 if abs(value) < 1e-12 else float(f"{value:.10g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_rounded(v) for v in value]
    return value


def _require_finite(kind: str, **numbers: Any) -> None:
    try:
        canonical_json(numbers)
    except ValueError:
        raise ValueError(f"finding {kind!r}: value, ci and metrics must be finite numbers "
                         f"(or None), got {numbers}") from None


@dataclass
class ResultBundle:
    """Models, datasets, analyses, runs, findings, links and artifacts to land in one commit."""

    models: list[ModelInstance] = field(default_factory=list)
    datasets: list[Dataset] = field(default_factory=list)
    analyses: list[Analysis] = field(default_factory=list)
    runs: list[Run] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    links: list[FindingLink] = field(default_factory=list)
    artifacts: list[BundleArtifact] = field(default_factory=list)
    # finding id -> the key fields add_finding hashed, so that landing need not hash them again
    _hashed_keys: dict[str, tuple[Any, ...]] = field(default_factory=dict, init=False, repr=False, compare=False)

    def add_finding(
        self,
        run: Run,
        *,
        kind: str,
        statement: str,
        subject: str = "",
        value: float | None = None,
        ci: tuple[float, float] | None = None,
        n: int | None = None,
        unit: str | None = None,
        exact: bool | None = None,
        metrics: dict[str, Any] | None = None,
        artifacts: dict[str, pa.Table] | None = None,
        model_id: str | None = None,
    ) -> Finding:
        """Make a finding of ``run`` (ids computed from its content), add it and its artifacts.

        ``model_id`` names another model than the run's, for findings about models the run
        made (the members of a Rashomon set).
        """
        _require_finite(kind, value=value, ci=ci, metrics=metrics)
        analysis_name = run.analysis_id.split("@", 1)[0]
        model_id = model_id or run.model_id
        key_id = finding_key(model_id, run.dataset_id, analysis_name, run.params_hash, kind, subject, seed=run.seed)
        replication = replication_key(model_id, run.dataset_id, analysis_name, run.params_hash, kind, subject)
        files = {name: parquet_bytes(table) for name, table in (artifacts or {}).items()}
        finding = Finding(
            id=finding_id(key_id, run.id, analysis_id=run.analysis_id, statement=statement, value=value,
                          ci=ci, n=n, unit=unit, exact=exact, metrics=metrics,
                          artifacts={name: hashlib.sha256(data).hexdigest() for name, data in files.items()}),
            key_id=key_id, replication_key=replication, seed=run.seed, model_id=model_id, dataset_id=run.dataset_id,
            analysis_id=run.analysis_id, analysis_name=analysis_name, params_hash=run.params_hash,
            kind=kind, subject=subject, run_id=run.id, statement=statement, value=value,
            ci_low=ci[0] if ci else None, ci_high=ci[1] if ci else None, n=n, unit=unit,
            exact=exact, metrics=metrics or {},
        )
        self.findings.append(finding)
        self._hashed_keys[finding.id] = _key_fields(finding)
        for name, data in files.items():
            rows = artifacts[name].num_rows  # type: ignore[index]
            self.artifacts.append(BundleArtifact(finding.id, name, data, rows))
        return finding

    def extend(self, other: ResultBundle) -> None:
        """Append another bundle's contents (to land several runs in one commit)."""
        for name in ("models", "datasets", "analyses", "runs", "findings", "links", "artifacts"):
            getattr(self, name).extend(getattr(other, name))
        self._hashed_keys.update(other._hashed_keys)

    def key_unchanged(self, finding: Finding) -> bool:
        """Whether ``finding`` was made by ``add_finding`` and its key fields are as it hashed them."""
        fields = _key_fields(finding)
        return fields is not None and self._hashed_keys.get(fields[0]) == fields


_KEY_FIELDS = operator.itemgetter("id", "key_id", "replication_key", "seed", "model_id", "dataset_id", "analysis_name",
                                  "params_hash", "kind", "subject")


def _key_fields(finding: Finding) -> tuple[Any, ...] | None:
    try:
        return _KEY_FIELDS(finding.__dict__)  # SQLModel keeps values here; skips attribute instrumentation
    except KeyError:
        return None
