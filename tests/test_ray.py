"""The Ray executor: same runs, same findings (same ids) as the local executor; one committer."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from modelsci import catalogue
from modelsci.catalogue.integrity import check
from modelsci.catalogue.store import Catalogue
from modelsci.executors.driving import drive
from modelsci.planner import submit
from tests.conftest import MODELSCI, modelsci
from tests.models import breast_cancer_skops, write_manifest
from tests.test_leases import Notes

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


def test_ray_executor_lands_the_local_findings_and_only_the_driver_writes_the_catalogue(tmp_path: Path) -> None:
    """Same runs, same findings (same ids) as the local executor; and every landing happens in the
    `modelsci run` process: seen by a spy on DuckDB in every process (not by what the runs or commits
    say about themselves), and by each commit's author. One Ray run serves both checks."""
    manifest = write_manifest(tmp_path / "m.yaml", str(breast_cancer_skops(tmp_path / "lr")), analyses=[
        {"name": "evaluation.performance", "params": {"n_bootstrap": 200}},
        {"name": "attribution.kernel_shap", "params": {"examples": 2, "budget": 256}, "seeds": [0, 1]},
        {"name": "interactions.shapley", "params": {"examples": 1, "budget": 1024}},
    ])
    local_dir, ray_dir = tmp_path / "local", tmp_path / "ray"
    submit(catalogue.open(local_dir, create=True), manifest.read_text(), base_dir=tmp_path)
    shutil.copytree(local_dir, ray_dir)  # the same queue, for each executor
    out = modelsci("run", "--executor", "local", "--device", "cpu", catalogue_dir=local_dir, timeout=600).stdout
    assert "4 run(s) succeeded, 0 failed" in out

    spy = tmp_path / "spy"
    spy.mkdir()
    (spy / "sitecustomize.py").write_text(WRITE_SPY)
    log = tmp_path / "spy.log"
    env = {**os.environ, "COLUMNS": "200", "MODELSCI_TEST_SPY_LOG": str(log),
           "MODELSCI_TEST_SPY_CATALOGUE": os.path.realpath(ray_dir),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(spy), os.environ.get("PYTHONPATH")]))}
    driver = subprocess.Popen([MODELSCI, "--catalogue", str(ray_dir), "run", "--executor", "ray", "--device", "cpu"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = driver.communicate(timeout=600)
    assert driver.returncode == 0, err
    assert "4 run(s) succeeded, 0 failed" in out

    ids = {}
    for executor, cat_dir in (("local", local_dir), ("ray", ray_dir)):
        cat = catalogue.open(cat_dir, create=True)
        assert check(cat).ok
        ids[executor] = sorted(r["id"] for r in cat.sql("SELECT id FROM findings").to_pylist())
    assert ids["local"] == ids["ray"] and len(ids["ray"]) > 10

    lines = [line.split() for line in log.read_text().splitlines()]
    workers = {int(pid) for kind, pid in lines if kind == "ray-worker"}
    writers = [int(pid) for kind, pid in lines if kind == "write"]
    assert workers and driver.pid not in workers, "the spy did not reach Ray's workers: the test would prove nothing"
    # the driver wrote (claims and 4 landings at least), and no other process did
    assert len(writers) >= 8 and set(writers) == {driver.pid}
    authors = [r["author"] for r in catalogue.open(ray_dir).sql(
        "SELECT author FROM commits WHERE author LIKE 'modelsci run%'").to_pylist()]
    assert len(authors) == 4 and all(f":{driver.pid}:" in author for author in authors), authors


@pytest.fixture(scope="module")
def ray_here() -> Iterator[Any]:
    """A Ray of one CPU in this process, for the tests that reach into the Ray executor's parts."""
    import ray

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


def _claimed(tmp_path: Path, analyses: list[dict]) -> tuple[Catalogue, Path]:
    model = breast_cancer_skops(tmp_path / "lr")
    manifest = write_manifest(tmp_path / "m.yaml", str(model), analyses=analyses)
    cat = catalogue.open(tmp_path / "cat", create=True)
    submit(cat, manifest.read_text(), base_dir=tmp_path)
    return cat, model


def test_an_artifact_changed_on_the_way_back_is_refused_and_its_run_goes_back_then_fails(
        ray_here: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN401
    from modelsci.executors import driving
    from modelsci.executors.on_ray import _RayBackend, _run_task

    cat, _ = _claimed(tmp_path, [{"name": "evaluation.performance", "params": {"n_bootstrap": 100}}])

    def corrupting(*args: Any) -> Any:  # noqa: ANN401 - defined here, so Ray ships it by value
        bundle, digests, stamps = _run_task(*args)
        first = bundle.artifacts[0]  # one bit of the first artifact flips after its worker hashed it
        bundle.artifacts[0] = replace(first, data=first.data[:-1] + bytes([first.data[-1] ^ 1]))
        return bundle, digests, stamps

    monkeypatch.setattr(driving, "_GIVE_BACKS", 1)  # given back once, then landed failed
    backend = _RayBackend(ray_here, "cpu", None, 60.0)
    backend.task = ray_here.remote(max_retries=0)(corrupting)
    notes = Notes()
    summary = drive(cat, backend, notes, device="cpu", lease_s=60.0, bound=2)

    run_id = cat.sql("SELECT run_id FROM store.queue").to_pylist()[0]["run_id"]
    assert summary.succeeded == [] and summary.failed == [run_id]
    assert [n for n in notes.notes if "goes back to the queue" in n] == [
        f"the executor of run {run_id} was lost (TransferError); it goes back to the queue"]
    rows = cat.sql("SELECT status, error FROM runs").to_pylist()
    assert rows == [{"status": "failed", "error": f"TransferError: 1 artifact(s) of the bundle of run {run_id} "
                                                  "arrived with other bytes than their worker made"}]
    assert cat.sql("SELECT count(*) AS n FROM findings").to_pylist() == [{"n": 0}]
    assert check(cat).ok
    # both attempts' stages were counted: two claims, tasks and returns, one commit
    counts = summary.timings.counts
    assert (counts["claim"], counts["start"], counts["load"], counts["transfer_out"], counts["commit"]) == (2, 2, 2, 2, 1)


def test_shipped_files_are_checked_against_the_recorded_model_id(ray_here: Any, tmp_path: Path,  # noqa: ANN401
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import skops.io as sio
    from sklearn.datasets import load_breast_cancer
    from sklearn.tree import DecisionTreeClassifier

    from modelsci.executors import execution
    from modelsci.executors.on_ray import _RayBackend, _run_task

    cat, model = _claimed(tmp_path, [{"name": "evaluation.performance", "params": {"n_bootstrap": 100}}])
    queued = cat.claim("test")
    backend = _RayBackend(ray_here, "cpu", None, 60.0)
    shipped = backend._shipments(queued)  # the driver's files, in the object store
    assert [(s.key, s.path) for s in shipped] == [(queued.model_id, str(model))]
    other = tmp_path / "other.skops"  # a model that would run as well, but not the one recorded
    sio.dump(DecisionTreeClassifier(max_depth=1, random_state=0).fit(*load_breast_cancer(return_X_y=True)), other)
    forged = replace(shipped[0], files=ray_here.put({"model.skops": other.read_bytes()}))
    model.rename(tmp_path / "hidden")  # this "node" cannot see the driver's files
    monkeypatch.setattr(execution, "_MODELS", {})  # nothing loaded by an earlier test
    runs = {}
    for name, shipment in (("forged", forged), ("genuine", shipped[0])):
        monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / name))  # each a node of its own
        bundle, _, _ = _run_task(queued, "cpu", 1, [shipment], backend.beats, 15.0)
        runs[name] = bundle.runs[-1]
        assert list((tmp_path / name / "modelsci-shipped").glob("*/lr/model.skops")), "not written on the node"
    assert runs["forged"].status == "failed" and runs["forged"].error.startswith("ModelError: the weights at ")
    assert f"changed since the run was queued (now {model_id(tmp_path / 'forged')[:19]}..., " \
           f"queued {queued.model_id[:19]}...)" in runs["forged"].error
    assert runs["genuine"].status == "succeeded", runs["genuine"].error


def model_id(node: Path) -> str:
    """The id of the model a node wrote from what was shipped to it."""
    from modelsci.ingest.models import detect_framework, weights_identity

    (path,) = (node / "modelsci-shipped").glob("*/lr")
    return weights_identity(path, detect_framework(path))[0]
