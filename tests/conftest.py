"""Shared fixtures: a fresh catalogue, and small real entities to build bundles from."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from modelsci import catalogue
from modelsci.schemas import Analysis, Dataset, ModelInstance, ResultBundle, Run, params_hash
from modelsci.schemas.identity import tensor_hash_of_arrays

REPO = Path(__file__).resolve().parent.parent
MODELSCI = str(Path(sys.executable).parent / "modelsci")


@pytest.fixture
def cat(tmp_path: Path) -> catalogue.Catalogue:
    return catalogue.open(tmp_path / "cat", create=True)


def toy_model(seed: int = 0) -> ModelInstance:
    rng = np.random.default_rng(seed)
    weights = {"linear.weight": rng.normal(size=(2, 3)).astype(np.float32),
               "linear.bias": np.zeros(2, np.float32)}
    return ModelInstance(id=tensor_hash_of_arrays(weights), source_uri=f"mem://toy/{seed}",
                         framework="torch", task="tabular-classification", parameter_count=8)


def toy_dataset() -> Dataset:
    return Dataset(id="sha256:" + "d" * 64, source_uri="sklearn://iris", split="test", rows=38)


def toy_analysis(version: str = "1", tolerance: float | None = None) -> Analysis:
    return Analysis(id=f"evaluation.performance@{version}", name="evaluation.performance",
                    version=version, family="evaluation", pillar="verify", tolerance=tolerance)


def toy_run(model: ModelInstance, analysis: Analysis, *, seed: int = 0, run_id: str | None = None) -> Run:
    params = {"metric": "accuracy"}
    return Run(id=run_id or f"run-{analysis.version}-{seed}", model_id=model.id,
               dataset_id=toy_dataset().id, analysis_id=analysis.id, params=params,
               params_hash=params_hash(params), seed=seed, status="succeeded")


def accuracy_bundle(value: float, ci: tuple[float, float] | None, *, seed: int = 0,
                    analysis: Analysis | None = None, model: ModelInstance | None = None,
                    subject: str = "") -> ResultBundle:
    """Everything needed for one accuracy finding of the toy model."""
    model = model or toy_model()
    analysis = analysis or toy_analysis()
    run = toy_run(model, analysis, seed=seed)
    bundle = ResultBundle(models=[model], datasets=[toy_dataset()], analyses=[analysis], runs=[run])
    bundle.add_finding(run, kind="accuracy", subject=subject, statement=f"accuracy is {value}",
                       value=value, ci=ci, n=38, unit="fraction")
    return bundle


def modelsci(*args: str, catalogue_dir: Path | None = None, check: bool = True,
             env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the installed ``modelsci`` command."""
    cmd = [MODELSCI, *(["--catalogue", str(catalogue_dir)] if catalogue_dir else []), *args]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, "COLUMNS": "200", **(env or {})})
    if check and result.returncode != 0:
        raise AssertionError(f"{cmd} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result
