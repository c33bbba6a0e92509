"""The Ray executor: same runs, same findings (same ids) as the local executor; one committer."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelsci import catalogue
from modelsci.catalogue.integrity import check
from tests.conftest import modelsci
from tests.models import breast_cancer_skops, write_manifest

pytest.importorskip("ray", reason="the Ray executor needs pip install 'modelsci[ray]' (make test installs it)")


def test_ray_executor_lands_the_same_findings_as_the_local_one(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "m.yaml", str(breast_cancer_skops(tmp_path / "lr")), analyses=[
        {"name": "evaluation.performance", "params": {"n_bootstrap": 200}, "seeds": [0, 1]},
        {"name": "attribution.kernel_shap", "params": {"examples": 2, "budget": 256}},
        {"name": "interactions.shapley", "params": {"examples": 1, "budget": 1024}},
    ])
    ids = {}
    for executor in ("local", "ray"):
        cat_dir = tmp_path / executor
        modelsci("submit", str(manifest), catalogue_dir=cat_dir)
        out = modelsci("run", "--executor", executor, "--device", "cpu", catalogue_dir=cat_dir, timeout=600).stdout
        assert "4 run(s) succeeded, 0 failed" in out
        cat = catalogue.open(cat_dir, create=True)
        assert check(cat).ok
        ids[executor] = sorted(r["id"] for r in cat.sql("SELECT id FROM findings").to_pylist())
        # one committer: every commit was made by this process, none by a worker
        authors = {r["author"] for r in cat.sql("SELECT DISTINCT author FROM commits WHERE message LIKE '%succeeded'").to_pylist()}
        assert len(authors) == 1
    assert ids["local"] == ids["ray"] and len(ids["ray"]) > 10
