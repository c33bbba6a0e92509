"""Verification: re-run a sample of the catalogue's runs from their recorded provenance.

Each sampled run (a succeeded run that is not itself a verification) is rebuilt from what the
catalogue records: the model's source, revision and task, the dataset's recorded spec, the
analysis at its version, the parameters and the seed. It is executed on whatever this machine
has (the hub cache, the source paths) and committed as a verification run
(``runs.verifies_run_id``). Its findings never change which version is current; each is
linked ``replicates`` or ``contradicts`` to the original finding of the same key, judged with
the analysis' tolerance (the catalogue does this when it lands the bundle).

A run is *contradicted* when any of its findings is, when the re-run fails, or when it does
not reproduce a finding the original made; it *could not be verified* when its model, its data
or its analysis at that version is not available here.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelsci.analyses.base import registry
from modelsci.catalogue.store import Catalogue
from modelsci.executors.execution import execute
from modelsci.ingest.datasets import resolve_dataset
from modelsci.ingest.loading import resolve_device
from modelsci.ingest.models import resolve_model
from modelsci.schemas.bundle import run_id as planned_run_id
from modelsci.schemas.bundle import verification_run_key
from modelsci.schemas.errors import ModelsciError
from modelsci.schemas.manifest import DatasetSpec, ModelSpec
from modelsci.schemas.queued_run import QueuedRun

__all__ = ["RunVerdict", "VerifyReport", "sample_runs", "verify"]

AUTHOR = "modelsci verify"


@dataclass(frozen=True)
class RunVerdict:
    """What re-running one run showed."""

    run_id: str
    analysis_id: str
    outcome: str
    """``replicated``, ``contradicted`` or ``unverifiable``."""
    detail: str = ""
    verification_run_id: str | None = None


@dataclass
class VerifyReport:
    """Every sampled run's verdict."""

    verdicts: list[RunVerdict] = field(default_factory=list)

    def of(self, outcome: str) -> list[RunVerdict]:
        return [v for v in self.verdicts if v.outcome == outcome]

    @property
    def ok(self) -> bool:
        """No sampled run was contradicted."""
        return not self.of("contradicted")


def sample_runs(cat: Catalogue, *, fraction: float | None = None, runs: int | None = None, seed: int = 0,
                among: Iterable[str] | None = None) -> list[str]:
    """A seeded random sample of succeeded, original runs (``among`` restricts the candidates)."""
    candidates = sorted(r["id"] for r in cat.query(
        "SELECT id FROM runs WHERE status = 'succeeded' AND verifies_run_id IS NULL").to_pylist())
    if among is not None:
        wanted = set(among)
        candidates = [c for c in candidates if c in wanted]
    if runs is not None:
        k = min(runs, len(candidates))
    else:
        k = min(len(candidates), math.ceil((1.0 if fraction is None else fraction) * len(candidates)))
    return sorted(random.Random(seed).sample(candidates, k))


def verify(cat: Catalogue, run_ids: list[str], *, device: str,
           on_verdict: Callable[[RunVerdict], None] = lambda verdict: None,
           sources: Path | None = None) -> VerifyReport:
    """Re-run each of ``run_ids`` on ``device`` (auto, cpu, cuda) and commit it as a verification
    run; return the verdicts. A local model or dataset is read where it was when it was queued here,
    else its recorded source (relative to the manifest's folder) is looked for in ``sources``
    (default: the working directory)."""
    device = resolve_device(device)
    report = VerifyReport()
    for run_id in run_ids:
        verdict = _verify_one(cat, run_id, device, sources)
        report.verdicts.append(verdict)
        on_verdict(verdict)
    return report


def _verify_one(cat: Catalogue, run_id: str, device: str, sources: Path | None) -> RunVerdict:
    run = _one(cat, "SELECT * FROM runs WHERE id = $id", run_id)
    analysis_id = run["analysis_id"]
    name, version = analysis_id.split("@", 1)
    plugin = registry().get(name)
    if plugin is None or plugin.version != version:
        have = f"{name}@{plugin.version}" if plugin else "nothing"
        return RunVerdict(run_id, analysis_id, "unverifiable", f"analysis {analysis_id} is not installed (have {have})")
    try:
        queued = _rebuild(cat, run, sources)
    except (ModelsciError, OSError, LookupError) as exc:
        return RunVerdict(run_id, analysis_id, "unverifiable", _one_line(exc))
    bundle = execute(queued, device)
    rerun = bundle.runs[0]
    rerun.verifies_run_id = run_id
    status = str(getattr(rerun.status, "value", rerun.status))
    cat.commit(bundle, author=AUTHOR, message=f"verify {run_id} ({analysis_id}): {status}")
    if status != "succeeded":
        return RunVerdict(run_id, analysis_id, "contradicted", f"the re-run failed: {rerun.error}", rerun.id)
    return _judge(cat, run_id, rerun.id, analysis_id)


def _judge(cat: Catalogue, original_run: str, verification_run: str, analysis_id: str) -> RunVerdict:
    """The verdict from the links the catalogue made, and the original findings left unmatched."""
    links = cat.query(
        "SELECT o.kind, o.subject, o.seed, l.relation, l.evidence FROM finding_links l "
        "JOIN findings v ON v.id = l.src_id JOIN findings o ON o.id = l.dst_id "
        "WHERE v.run_id = $v AND o.run_id = $o AND l.relation IN ('replicates', 'contradicts')",
        {"v": verification_run, "o": original_run}).to_pylist()
    made = cat.query("SELECT DISTINCT kind, subject FROM findings WHERE run_id = $v",
                     {"v": verification_run}).to_pylist()
    original = cat.query("SELECT DISTINCT kind, subject FROM findings WHERE run_id = $o",
                         {"o": original_run}).to_pylist()
    missing = {(f["kind"], f["subject"]) for f in original} - {(f["kind"], f["subject"]) for f in made}
    contradicted = [f"{row['kind']}{' ' + row['subject'] if row['subject'] else ''}" for row in links
                    if row["relation"] == "contradicts"]
    if contradicted or missing:
        parts = []
        if contradicted:
            parts.append(f"{len(contradicted)} finding(s) contradicted: {', '.join(sorted(contradicted)[:5])}")
        if missing:
            parts.append(f"{len(missing)} finding(s) not reproduced: "
                         f"{', '.join(sorted(k + (' ' + s if s else '') for k, s in missing)[:5])}")
        return RunVerdict(original_run, analysis_id, "contradicted", "; ".join(parts), verification_run)
    return RunVerdict(original_run, analysis_id, "replicated", f"{len(links)} finding(s) replicate",
                      verification_run)


def _rebuild(cat: Catalogue, run: dict[str, Any], sources: Path | None = None) -> QueuedRun:
    """The queued run that makes ``run`` again, from the catalogue's records, with its inputs
    resolved here and checked to be the same (same model id, same dataset id)."""
    model = _one(cat, "SELECT * FROM models WHERE id = $id", run["model_id"])
    model_spec = ModelSpec(source=model["source_uri"], revision=model["revision"], task=model["task"])
    handle = resolve_model(model_spec, location=_location(cat, model["id"], model["source_uri"], sources))
    if handle.id != model["id"]:
        raise LookupError(f"the model at {model['source_uri']} is not the one the run studied "
                          f"(now {handle.id[:19]}..., recorded {model['id'][:19]}...)")
    dataset_spec = _dataset_spec(cat, run["dataset_id"], model["task"], sources)
    train_spec = _dataset_spec(cat, run["train_dataset_id"], model["task"], sources)
    attempt = cat.query("SELECT count(*) AS n FROM runs WHERE verifies_run_id = $id",
                        {"id": run["id"]}).to_pylist()[0]["n"]
    key = verification_run_key(run["id"])
    located = {i: str(at) for i, spec in ((run["dataset_id"], dataset_spec), (run["train_dataset_id"], train_spec))
               if i and spec and (at := _location(cat, i, spec["source"], sources))}
    return QueuedRun(
        run_id=planned_run_id(key, attempt), run_key=key, attempt=attempt, model_id=run["model_id"],
        dataset_id=run["dataset_id"], analysis_id=run["analysis_id"], params=run["params"], seed=run["seed"],
        model_spec={**model_spec.model_dump(mode="json"), **handle.spec(), "name": model.get("name"),
                    "locations": located, "revision": handle.instance.revision or model_spec.revision},
        dataset_spec=dataset_spec, train_dataset_id=run["train_dataset_id"], train_spec=train_spec)


def _dataset_spec(cat: Catalogue, dataset_id: str | None, task: str, sources: Path | None) -> dict[str, Any] | None:
    """The recorded spec of a dataset, checked to resolve here to the same dataset id."""
    if dataset_id is None:
        return None
    row = _one(cat, "SELECT * FROM datasets WHERE id = $id", dataset_id)
    spec = (row["features"] or {}).get("spec")
    if spec is None:
        raise LookupError(f"the catalogue does not record how dataset {dataset_id[:19]}... was read "
                          "(made by an older modelsci)")
    handle = resolve_dataset(DatasetSpec.model_validate(spec), task,
                             location=_location(cat, dataset_id, spec.get("source", ""), sources))
    if handle.id != dataset_id:
        raise LookupError(f"the data at {row['source_uri']} is not the dataset the run studied "
                          f"(now {handle.id[:19]}..., recorded {dataset_id[:19]}...)")
    return spec


# Where a model's (its folder) or a dataset's (``locations`` in the queued model spec) local files
# were when it was last queued here: the queue is this machine's own and never exported.
_LOCATION_SQL = """
SELECT CASE WHEN model_id = $id THEN json_extract_string(model_spec, '$.path')
            ELSE json_extract_string(model_spec, '$.locations') ->> $id END AS location
FROM store.queue WHERE model_id = $id OR dataset_id = $id OR train_dataset_id = $id
ORDER BY queued_at DESC"""


def _location(cat: Catalogue, entity_id: str, source: str, sources: Path | None) -> Path | None:
    """Where a local model's or dataset's files are on this machine: where the queue last recorded
    them, else its recorded source (relative to the manifest's folder) under ``sources``; None for
    hub and scikit-learn sources, and to read the source as given (from the working directory)."""
    if "://" in source:
        return None
    found = next((r["location"] for r in cat.query(_LOCATION_SQL, {"id": entity_id}).to_pylist() if r["location"]),
                 None)
    if found:
        return Path(found)
    if sources is not None and not source.startswith("local:") and not Path(source).is_absolute():
        return sources / source
    return None


def _one(cat: Catalogue, query: str, entity_id: str) -> dict[str, Any]:
    rows = cat.query(query, {"id": entity_id}).to_pylist()
    if not rows:
        raise LookupError(f"the catalogue has no row {entity_id}")
    row = rows[0]
    for key in ("params", "features", "card", "environment"):
        if isinstance(row.get(key), str):
            row[key] = json.loads(row[key])
    return row


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
