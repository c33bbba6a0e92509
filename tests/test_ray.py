"""The Ray executor: same runs, same findings (same ids) as the local executor; one committer."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from modelsci import catalogue
from modelsci.catalogue.integrity import check
from tests.conftest import MODELSCI, modelsci
from tests.models import breast_cancer_skops, write_manifest

pytest.importorskip("ray", reason="the Ray executor needs pip install 'modelsci[ray]' (make test installs it)")

# Loaded by every Python process started with this folder on PYTHONPATH, Ray's workers included
# (they inherit the driver's environment): logs each process, and each time one opens the
# catalogue's database for writing, so the test sees which processes wrote, not what they claim.
WRITE_SPY = '''
import os
import sys

_LOG = os.environ.get("MODELSCI_TEST_SPY_LOG")
_CATALOGUE = os.environ.get("MODELSCI_TEST_SPY_CATALOGUE", "")


def _note(line):
    with open(_LOG, "a") as log:
        log.write(f"{line} {os.getpid()}\\n")


if _LOG:
    import duckdb

    _note("ray-worker" if sys.argv and sys.argv[0].endswith("default_worker.py") else "process")
    _connect = duckdb.connect

    def _spying_connect(database=":memory:", read_only=False, *args, **kwargs):
        if not read_only and os.path.realpath(str(database)).startswith(_CATALOGUE + os.sep):
            _note("write")
        return _connect(database, read_only, *args, **kwargs)

    duckdb.connect = _spying_connect
'''


def test_ray_executor_lands_the_same_findings_as_the_local_one(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "m.yaml", str(breast_cancer_skops(tmp_path / "lr")), analyses=[
        {"name": "evaluation.performance", "params": {"n_bootstrap": 200}},
        {"name": "attribution.kernel_shap", "params": {"examples": 2, "budget": 256}, "seeds": [0, 1]},
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
    assert ids["local"] == ids["ray"] and len(ids["ray"]) > 10


def test_only_the_driver_writes_the_catalogue_no_ray_worker_does(tmp_path: Path) -> None:
    """Every landing happens in the `modelsci run` process: seen by a spy on DuckDB in every process
    (not by what the runs or commits say about themselves), and by each commit's author."""
    spy = tmp_path / "spy"
    spy.mkdir()
    (spy / "sitecustomize.py").write_text(WRITE_SPY)
    log = tmp_path / "spy.log"
    manifest = write_manifest(tmp_path / "m.yaml", str(breast_cancer_skops(tmp_path / "lr")), analyses=[
        {"name": "evaluation.performance", "params": {"n_bootstrap": n}} for n in (100, 101, 102)])
    cat_dir = tmp_path / "cat"
    modelsci("submit", str(manifest), catalogue_dir=cat_dir)
    env = {**os.environ, "COLUMNS": "200", "MODELSCI_TEST_SPY_LOG": str(log),
           "MODELSCI_TEST_SPY_CATALOGUE": os.path.realpath(cat_dir),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(spy), os.environ.get("PYTHONPATH")]))}
    driver = subprocess.Popen([MODELSCI, "--catalogue", str(cat_dir), "run", "--executor", "ray", "--device", "cpu"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = driver.communicate(timeout=600)
    assert driver.returncode == 0, err
    assert "3 run(s) succeeded, 0 failed" in out

    lines = [line.split() for line in log.read_text().splitlines()]
    workers = {int(pid) for kind, pid in lines if kind == "ray-worker"}
    writers = [int(pid) for kind, pid in lines if kind == "write"]
    assert workers and driver.pid not in workers, "the spy did not reach Ray's workers: the test would prove nothing"
    # the driver wrote (claims and 3 landings at least), and no other process did
    assert len(writers) >= 6 and set(writers) == {driver.pid}

    cat = catalogue.open(cat_dir, create=True)
    authors = [r["author"] for r in cat.sql("SELECT author FROM commits WHERE author LIKE 'modelsci run%'").to_pylist()]
    assert len(authors) == 3 and all(f":{driver.pid}:" in author for author in authors), authors
    assert check(cat).ok
