"""The catalogue in ``catalogue-id-format-1.tar.gz``: what it holds, and how it was made.

``bundles()`` uses only what the modelsci of id format 1 and today's share (the entities and
``ResultBundle.add_finding``), so the same function gives the bundles to the old code, which
wrote the fixture, and to today's, which the upgrade test lands them with to compare.

Five commits: accuracy of seed 0 (with a finding holding an artifact, and one whose value was
an integer), seed 1 (far off), another model's finding that ``extends`` the first, a re-run
of seed 0 (attempt 1, close), seed 2 (close). Format 1 made seeds 1 and 2 and the re-run
versions 2, 3 and 4 of one key; format 2 makes them three seeds and two versions of seed 0.

Regenerate it (from the repository's root) with the modelsci that wrote format 1, commit 48bb36e::

    mkdir /tmp/old && git archive 48bb36e | tar -x -C /tmp/old
    python tests/data/old_catalogue.py /tmp/old tests/data/catalogue-id-format-1.tar.gz
"""

from __future__ import annotations

import importlib.util
import io
import sys
import tarfile
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

FIXTURE = Path(__file__).with_name("catalogue-id-format-1.tar.gz")
MESSAGES = ["first", "seed 1", "another model", "seed 0 again", "seed 2"]
AUTHOR = "fixture"
CREATED = [datetime(2026, 11, 1, 12, i) for i in range(len(MESSAGES))]


def bundles() -> list[Any]:
    """The five bundles, in the order they were committed."""
    import numpy as np
    import pyarrow as pa

    from modelsci.schemas import Analysis, Dataset, FindingLink, ModelInstance, ResultBundle, Run, params_hash
    from modelsci.schemas.identity import tensor_hash_of_arrays

    def model(seed: int) -> ModelInstance:
        rng = np.random.default_rng(seed)
        weights = {"linear.weight": rng.normal(size=(2, 3)).astype(np.float32), "linear.bias": np.zeros(2, np.float32)}
        return ModelInstance(id=tensor_hash_of_arrays(weights), source_uri=f"mem://toy/{seed}", framework="torch",
                             task="tabular-classification", parameter_count=8)

    dataset = Dataset(id="sha256:" + "d" * 64, source_uri="sklearn://iris", split="test", rows=38)
    analysis = Analysis(id="evaluation.performance@1", name="evaluation.performance", version="1",
                        family="evaluation", pillar="verify")
    params = {"metric": "accuracy"}

    def bundle(value: float, ci: tuple[float, float], *, seed: int, run_id: str, m: ModelInstance | None = None,
               subject: str = "") -> tuple[Any, Any]:
        m = m or model(0)
        run = Run(id=run_id, model_id=m.id, dataset_id=dataset.id, analysis_id=analysis.id, params=params,
                  params_hash=params_hash(params), seed=seed, status="succeeded")
        b = ResultBundle(models=[m], datasets=[dataset], analyses=[analysis], runs=[run])
        b.add_finding(run, kind="accuracy", subject=subject, statement=f"accuracy is {value}", value=value, ci=ci,
                      n=38, unit="fraction")
        return b, run

    first, run = bundle(0.90, (0.85, 0.95), seed=0, run_id="run-0")
    first.add_finding(run, kind="per_example", statement="rows",
                      artifacts={"rows": pa.table({"example": [0, 1, 2], "ok": [True, True, False]})})
    first.add_finding(run, kind="count", statement="3 wrong", value=3, ci=(1, 5), n=38)
    other, _ = bundle(0.7, (0.6, 0.8), seed=0, run_id="run-other", m=model(3), subject="class 1")
    other.links.append(FindingLink(src_id=other.findings[0].id, dst_id=first.findings[0].id, relation="extends"))
    return [first, bundle(0.40, (0.35, 0.45), seed=1, run_id="run-1")[0], other,
            bundle(0.91, (0.86, 0.96), seed=0, run_id="run-0-again")[0],
            bundle(0.92, (0.90, 0.94), seed=2, run_id="run-2")[0]]


def commit_all(cat: Any) -> None:
    """Commit ``bundles()`` with the fixture's authors, messages and times."""
    for b, message, created in zip(bundles(), MESSAGES, CREATED):
        cat.commit(b, author=AUTHOR, message=message, created_at=created)


def extract(dest: Path) -> Path:
    """Unpack the fixture into ``dest``: ``dest/catalogue`` and ``dest/export`` (its export, by the same code)."""
    with tarfile.open(FIXTURE) as tar:
        tar.extractall(dest, filter="data")
    return dest


def _make(old_root: Path, out: Path) -> None:
    """Write the fixture with the modelsci whose sources are at ``old_root``."""
    spec = importlib.util.spec_from_file_location(
        "modelsci", old_root / "modelsci" / "__init__.py",
        submodule_search_locations=[str(old_root / "modelsci"), str(old_root)])  # the package-dir mapping
    package = importlib.util.module_from_spec(spec)
    sys.modules["modelsci"] = package
    spec.loader.exec_module(package)
    from modelsci import catalogue
    from modelsci.catalogue.transfer import export

    with tempfile.TemporaryDirectory() as tmp:
        cat = catalogue.open(Path(tmp) / "catalogue", create=True)
        commit_all(cat)
        export(cat, Path(tmp) / "export")
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            for name in ("catalogue", "export"):
                tar.add(Path(tmp) / name, arcname=name)
        out.write_bytes(buffer.getvalue())


if __name__ == "__main__":
    _make(Path(sys.argv[1]), Path(sys.argv[2]))
