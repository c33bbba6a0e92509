"""The contributor's path through the CLI: submit, run, status; refusals leave the catalogue unchanged."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.metrics import accuracy_score
from sklearn.model_selection import train_test_split

from modelsci import catalogue
from modelsci.catalogue.integrity import check
from modelsci.ingest.loading import load_model, resolve_device
from modelsci.ingest.models import resolve_model
from modelsci.schemas.manifest import ModelSpec
from tests.conftest import MODELSCI, modelsci
from tests.models import (
    breast_cancer_skops,
    hf_cache_with_minilm,
    installed_plugin,
    sentence_pairs,
    tiny_bert_classifier,
    write_manifest,
)

PLUGIN = '''
import os
import time
from pydantic import BaseModel, ConfigDict
from modelsci.analyses.base import AnalysisPlugin
from modelsci.schemas.entities import Pillar


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")
    fail_on_seed: int = -1
    hold_while_file: str = ""


class Flaky(AnalysisPlugin):
    name = "testing.flaky"
    version = "1"
    family = "testing"
    pillar = Pillar.verify
    description = "Adds one finding, then raises on one seed; waits while a file exists."
    Params = Params

    def run(self, ctx):
        ctx.add_finding(kind="rows", value=float(ctx.dataset.entity.rows), statement="rows counted")
        ctx.progress(1, 2)
        deadline = time.monotonic() + 60
        while ctx.params.hold_while_file and os.path.exists(ctx.params.hold_while_file) and time.monotonic() < deadline:
            time.sleep(0.1)
        if ctx.seed == ctx.params.fail_on_seed:
            raise RuntimeError(f"half-way failure on seed {ctx.seed}")
        ctx.add_finding(kind="seed", value=float(ctx.seed), statement="seed noted")
'''


@pytest.fixture
def plugin_path(tmp_path: Path) -> dict[str, str]:
    """A third-party analysis registered through an entry point, as an installed package would be."""
    return installed_plugin(tmp_path / "plugin_site", "flaky_plugin", PLUGIN, "testing.flaky", "Flaky")


def db_hash(cat_dir: Path) -> bytes:
    return (cat_dir / "catalogue.duckdb").read_bytes()


@pytest.fixture(scope="module")
def submitted_and_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path, str]:
    """The default manifest on the breast cancer model, submitted and run once for the module: the model's
    folder, the manifest, the catalogue (tests that change it work on a copy) and what `submit --run` printed."""
    tmp = tmp_path_factory.mktemp("submitted")
    model_dir = breast_cancer_skops(tmp / "lr")
    manifest = write_manifest(tmp / "m.yaml", str(model_dir))
    out = modelsci("submit", str(manifest), "--run", catalogue_dir=tmp / "cat").stdout
    return model_dir, manifest, tmp / "cat", out


def test_evaluation_performance_equals_sklearn_accuracy_on_the_same_split(submitted_and_run) -> None:
    model_dir, _, cat_dir, out = submitted_and_run
    assert "1 run(s) succeeded, 0 failed" in out

    frame = load_breast_cancer(as_frame=True).frame
    _, test = train_test_split(frame, test_size=0.25, random_state=0, stratify=frame["target"])
    estimator = load_model(resolve_model(ModelSpec(source=str(model_dir), task="tabular-classification"))).model
    expected = accuracy_score(test["target"], estimator.predict(test.drop(columns="target").to_numpy()))

    cat = catalogue.open(cat_dir, create=True)
    rows = cat.sql("SELECT kind, value, ci_low, ci_high, n FROM findings_current ORDER BY kind").to_pylist()
    by_kind = {r["kind"]: r for r in rows}
    assert set(by_kind) == {"accuracy", "macro_f1", "roc_auc", "expected_calibration_error"}
    assert by_kind["accuracy"]["value"] == expected
    assert by_kind["accuracy"]["n"] == len(test)
    assert by_kind["accuracy"]["ci_low"] <= expected <= by_kind["accuracy"]["ci_high"]
    run = cat.sql("SELECT * FROM runs").to_pylist()[0]
    env = json.loads(run["environment"])
    # the default device is auto: CUDA where there is one, recorded with the GPU's name
    assert run["status"] == "succeeded" and run["device"].split()[0] == resolve_device() and run["wall_s"] > 0
    assert run["peak_memory_bytes"] > 0
    assert {"torch", "scikit-learn", "transformers", "captum", "shapiq", "diffusers", "modelsci"} <= set(env["packages"])
    assert env["python"] and "modelsci_commit" in env
    assert check(cat).ok


def test_resubmitting_plans_nothing_and_rerun_makes_new_versions(submitted_and_run, tmp_path: Path) -> None:
    _, manifest, submitted, _ = submitted_and_run
    cat_dir = Path(shutil.copytree(submitted, tmp_path / "cat"))  # as `submit --run` left it
    again = modelsci("submit", str(manifest), catalogue_dir=cat_dir)
    assert "queued  sha256" not in again.stdout and "1 run(s) already planned" in again.stdout
    modelsci("submit", str(manifest), "--rerun", "--run", catalogue_dir=cat_dir)
    cat = catalogue.open(cat_dir, create=True)
    versions = cat.sql("SELECT kind, max(version) AS v, count(*) AS n FROM findings GROUP BY kind").to_pylist()
    assert {(r["v"], r["n"]) for r in versions} == {(2, 2)}
    # Same model, same data, same seed: the rerun replicates the first run exactly.
    judged = cat.sql("SELECT relation, count(*) AS n FROM finding_links WHERE relation != 'supersedes' "
                     "GROUP BY relation").to_pylist()
    assert judged == [{"relation": "replicates", "n": 4}]


def test_same_weights_from_two_places_are_one_model_instance(tmp_path: Path) -> None:
    cat_dir = tmp_path / "cat"
    for name in ("a", "b"):
        manifest = write_manifest(tmp_path / f"{name}.yaml", str(breast_cancer_skops(tmp_path / name)))
        modelsci("submit", str(manifest), catalogue_dir=cat_dir)
    cat = catalogue.open(cat_dir, create=True)
    assert cat.sql("SELECT count(*) AS n FROM models").to_pylist() == [{"n": 1}]
    assert cat.sql("SELECT count(*) AS n FROM store.queue").to_pylist() == [{"n": 1}]


def test_minilm_through_the_hub_cache_end_to_end(tmp_path: Path) -> None:
    hf_home = tmp_path / "hf"
    hf_cache_with_minilm(hf_home)
    data = sentence_pairs(tmp_path / "pairs.parquet")
    manifest = write_manifest(
        tmp_path / "m.yaml", "hf://sentence-transformers/all-MiniLM-L6-v2", task="sentence-similarity",
        dataset={"source": str(data), "columns": {"text": "sentence1", "text_pair": "sentence2", "label": "score"}},
    )
    env = {"HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}
    modelsci("submit", str(manifest), "--run", catalogue_dir=tmp_path / "cat", env=env)
    cat = catalogue.open(tmp_path / "cat", create=True)
    model = cat.sql("SELECT source_uri, revision, framework FROM models").to_pylist()
    assert model == [{"source_uri": "hf://sentence-transformers/all-MiniLM-L6-v2",
                      "revision": "c9745ed1d9f207416be6d2e6f8de32d1f16199bf",
                      "framework": "sentence-transformers"}]
    spearman = cat.sql("SELECT value FROM findings_current WHERE kind = 'spearman'").to_pylist()[0]["value"]
    assert spearman > 0.8  # the pairs are easy: similar pairs are scored far above unrelated ones


def _refused(tmp_path: Path, manifest_text: str, *expected: str, env: dict[str, str] | None = None) -> str:
    cat_dir = tmp_path / "cat"
    catalogue.open(cat_dir, create=True)
    before = db_hash(cat_dir)
    path = tmp_path / "bad.yaml"
    path.write_text(manifest_text)
    result = modelsci("submit", str(path), "--run", catalogue_dir=cat_dir, check=False, env=env)
    assert result.returncode == 1, result.stdout
    assert "Traceback" not in result.stderr
    for text in expected:
        assert text in result.stderr, result.stderr
    assert db_hash(cat_dir) == before
    return result.stderr


def _manifest(model: str, analyses: str = "  - name: evaluation.performance\n", dataset: str = "") -> str:
    dataset = dataset or "dataset: {source: 'sklearn://breast_cancer', split: test}\n"
    return (f"submitter: Tester\nmodel: {{source: '{model}', task: tabular-classification}}\n{dataset}"
            f"analyses:\n{analyses}")


def test_a_pickle_model_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "model.pkl").write_bytes(b"\x80\x04junk")
    _refused(tmp_path, _manifest(str(folder / "model.pkl")), "model.source", "refusing pickle-based weights")


def test_a_folder_needing_remote_code_is_refused(tmp_path: Path) -> None:
    folder = tiny_bert_classifier(tmp_path / "remote")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "modeling_evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config))
    _refused(tmp_path, _manifest(str(folder)), "needs its own code", "trust_remote_code")


def test_a_missing_path_is_refused(tmp_path: Path) -> None:
    _refused(tmp_path, _manifest(str(tmp_path / "nowhere")), "does not exist")


def test_a_misspelt_analysis_is_refused_with_a_suggestion(tmp_path: Path) -> None:
    model = breast_cancer_skops(tmp_path / "lr")
    _refused(tmp_path, _manifest(str(model), "  - name: evaluation.performence\n"),
             "analyses[0].name: no analysis named 'evaluation.performence'",
             "did you mean 'evaluation.performance'")


def test_every_problem_is_reported_at_once_with_its_place(tmp_path: Path) -> None:
    model = breast_cancer_skops(tmp_path / "lr")
    analyses = ("  - name: evaluation.performance\n    params: {n_bootstrap: many}\n"
                "  - name: evaluation.performance\n    params: {ece_bins: 1, colour: red}\n")
    stderr = _refused(
        tmp_path, _manifest(str(model), analyses,
                            "dataset: {source: 'sklearn://breast_cancer', columns: {label: diagnosis}}\n"),
        "analyses[0].params.n_bootstrap: Input should be a valid integer",
        "analyses[1].params.ece_bins: Input should be greater than or equal to 2",
        "analyses[1].params.colour: Extra inputs are not permitted",
        "dataset.columns.label: no column 'diagnosis'",
    )
    assert "4 problem(s)" in stderr


def test_a_manifest_that_is_not_yaml_is_refused(tmp_path: Path) -> None:
    _refused(tmp_path, "submitter: [unclosed\nmodel: {", "not valid YAML (line")


def test_a_failing_run_is_recorded_and_the_others_succeed(tmp_path: Path, plugin_path: dict[str, str]) -> None:
    manifest = write_manifest(tmp_path / "m.yaml", str(breast_cancer_skops(tmp_path / "lr")), analyses=[
        {"name": "testing.flaky", "params": {"fail_on_seed": 1}, "seeds": [0, 1, 2]},
        {"name": "evaluation.performance", "params": {"n_bootstrap": 100}},
    ])
    cat_dir = tmp_path / "cat"
    result = modelsci("submit", str(manifest), "--run", catalogue_dir=cat_dir, env=plugin_path, check=False)
    assert result.returncode == 1 and "3 run(s) succeeded, 1 failed" in result.stdout
    cat = catalogue.open(cat_dir, create=True)
    failed = cat.sql("SELECT * FROM runs WHERE status = 'failed'").to_pylist()
    assert len(failed) == 1 and failed[0]["seed"] == 1
    assert failed[0]["error"] == "RuntimeError: half-way failure on seed 1"
    assert "Traceback" in failed[0]["traceback"] and "flaky_plugin.py" in failed[0]["traceback"]
    # Nothing partial lands: the failed run's first finding is not in the catalogue.
    assert cat.sql(f"SELECT count(*) AS n FROM findings WHERE run_id = '{failed[0]['id']}'").to_pylist() == [{"n": 0}]
    assert cat.sql("SELECT count(*) AS n FROM findings WHERE kind = 'seed'").to_pylist() == [{"n": 2}]
    status = modelsci("status", "--format", "json", catalogue_dir=cat_dir, env=plugin_path)
    states = sorted((r["status"], r["error"]) for r in json.loads(status.stdout))
    assert states[0] == ("failed", "RuntimeError: half-way failure on seed 1")
    assert [s for s, _ in states[1:]] == ["succeeded"] * 3
    listed = modelsci("analyses", env=plugin_path).stdout
    assert "testing.flaky" in listed and "fail_on_seed: int = -1" in listed


def test_a_killed_run_is_resumed_by_the_next_modelsci_run(tmp_path: Path, plugin_path: dict[str, str]) -> None:
    manifest = write_manifest(tmp_path / "m.yaml", str(breast_cancer_skops(tmp_path / "lr")), analyses=[
        {"name": "testing.flaky", "params": {"hold_while_file": str(tmp_path / "hold")}}])
    (tmp_path / "hold").touch()
    cat_dir = tmp_path / "cat"
    modelsci("submit", str(manifest), catalogue_dir=cat_dir, env=plugin_path)
    env = {**os.environ, **plugin_path}
    proc = subprocess.Popen([MODELSCI, "--catalogue", str(cat_dir), "run"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cat = catalogue.open(cat_dir, create=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # wait until the run is claimed, i.e. analysing
        if cat.sql("SELECT status FROM store.queue").to_pylist() == [{"status": "running"}]:
            break
        time.sleep(0.2)
    else:
        pytest.fail("the run was never claimed")
    time.sleep(1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert cat.sql("SELECT count(*) AS n FROM runs").to_pylist() == [{"n": 0}]
    (tmp_path / "hold").unlink()
    # The next run takes the dead worker's claim back and runs it to the end.
    modelsci("run", catalogue_dir=cat_dir, env=plugin_path, timeout=120)
    assert cat.sql("SELECT status FROM store.queue").to_pylist() == [{"status": "succeeded"}]
    assert cat.sql("SELECT count(*) AS n FROM findings").to_pylist() == [{"n": 2}]
    assert check(cat).ok


def test_jobs_run_in_worker_processes_and_each_run_lands_once(tmp_path: Path, plugin_path: dict[str, str]) -> None:
    manifest = write_manifest(tmp_path / "m.yaml", str(breast_cancer_skops(tmp_path / "lr")), analyses=[
        {"name": "testing.flaky", "seeds": [0, 1, 2, 3]}])
    cat_dir = tmp_path / "cat"
    modelsci("submit", str(manifest), catalogue_dir=cat_dir, env=plugin_path)
    out = modelsci("run", "--jobs", "2", "--device", "cpu", catalogue_dir=cat_dir, env=plugin_path).stdout
    assert "4 run(s) succeeded, 0 failed" in out
    cat = catalogue.open(cat_dir, create=True)
    assert cat.sql("SELECT seed, count(*) AS n FROM runs GROUP BY seed ORDER BY seed").to_pylist() == [
        {"seed": s, "n": 1} for s in range(4)]
    assert check(cat).ok
