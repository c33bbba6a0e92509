"""The reliability suite: kills, two runners on one queue, fuzzed manifests, tampered artifacts,
broken models. Each case ends with `modelsci check` passing and nothing committed lost."""

from __future__ import annotations

import copy
import json
import os
import random
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelsci import catalogue
from modelsci.catalogue.integrity import check
from modelsci.executors import run_queue
from modelsci.ingest.architectures import MLP, save_torch_model
from modelsci.planner import submit
from modelsci.schemas.errors import ModelsciError
from modelsci.schemas.manifest import Manifest, ManifestError
from tests.conftest import MODELSCI, modelsci
from tests.models import breast_cancer_skops, installed_plugin, write_manifest

KILLS = 8


def findings_by_id(cat: catalogue.Catalogue) -> set[str]:
    return {r["id"] for r in cat.sql("SELECT id FROM findings").to_pylist()}


def test_sigkill_of_modelsci_run_at_random_points_loses_nothing(tmp_path: Path) -> None:
    """Kill `modelsci run` of 12 runs at 8 seeded random moments (analysing or committing); resume each time."""
    manifest = write_manifest(tmp_path / "m.yaml", str(breast_cancer_skops(tmp_path / "lr")), analyses=[
        {"name": "evaluation.performance", "params": {"n_bootstrap": 300 + i}} for i in range(12)])
    cat_dir = tmp_path / "cat"
    cat = catalogue.open(cat_dir, create=True)
    submit(cat, manifest.read_text(), base_dir=tmp_path)  # queued here: the command under test is `run`
    rng = random.Random(7)
    seen: set[str] = set()
    interrupted = 0
    for _ in range(KILLS):
        proc = subprocess.Popen([MODELSCI, "--catalogue", str(cat_dir), "run"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(1.5, 4.0))
        if proc.poll() is None:
            interrupted += 1
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        report = check(cat)
        assert report.ok, report.problems
        now = findings_by_id(cat)
        assert seen <= now, "a committed finding was lost"
        seen = now
    modelsci("run", catalogue_dir=cat_dir, timeout=300)
    assert interrupted >= KILLS // 2, "the kills came too late to interrupt anything"
    runs = cat.sql("SELECT params->>'n_bootstrap' AS b, count(*) AS n, min(status) AS status FROM runs "
                   "GROUP BY b ORDER BY b").to_pylist()
    assert runs == [{"b": str(300 + i), "n": 1, "status": "succeeded"} for i in range(12)]
    assert cat.sql("SELECT count(*) AS n FROM store.queue WHERE status != 'succeeded'").to_pylist() == [{"n": 0}]
    assert seen <= findings_by_id(cat) and check(cat).ok


COUNTING_PLUGIN = '''
import os
from pydantic import BaseModel, ConfigDict
from modelsci.analyses.base import AnalysisPlugin
from modelsci.schemas.entities import Pillar


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")
    log: str


class Counting(AnalysisPlugin):
    name = "testing.counting"
    version = "1"
    family = "testing"
    pillar = Pillar.verify
    description = "Appends its run id to a log file, so a test can count executions."
    Params = Params

    def run(self, ctx):
        with open(ctx.params.log, "a") as log:
            log.write(ctx.run.id + "\\n")
        ctx.add_finding(kind="executed", value=1.0, statement="executed")
'''


def test_two_runners_on_one_queue_execute_every_run_once(tmp_path: Path) -> None:
    env = installed_plugin(tmp_path / "plugin", "counting_plugin", COUNTING_PLUGIN, "testing.counting", "Counting")
    log = tmp_path / "executions.log"
    manifest = write_manifest(tmp_path / "m.yaml", str(breast_cancer_skops(tmp_path / "lr")), analyses=[
        {"name": "testing.counting", "params": {"log": str(log)}, "seeds": list(range(10))}])
    cat_dir = tmp_path / "cat"
    modelsci("submit", str(manifest), catalogue_dir=cat_dir, env=env)
    runners = [subprocess.Popen([MODELSCI, "--catalogue", str(cat_dir), "run"], env={**os.environ, **env},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for runner in runners:
        assert runner.wait(timeout=300) == 0, runner.stderr.read()
    executions = log.read_text().split()
    assert len(executions) == 10 and len(set(executions)) == 10
    cat = catalogue.open(cat_dir, create=True)
    assert cat.sql("SELECT count(*) AS n FROM runs WHERE status = 'succeeded'").to_pylist() == [{"n": 10}]
    assert check(cat).ok


# -- fuzzed manifests -------------------------------------------------------------------------

MODEL = "<the breast cancer model>"  # replaced by a real model's folder in the test
scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=12), st.sampled_from(["sklearn://iris", "sklearn://nope", "hf://a/b",
                                                           "/nonexistent", "evaluation.performance",
                                                           "tabular-classification", "test", "train"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                      max_leaves=8)
known_keys = st.sampled_from(["submitter", "model", "dataset", "analyses", "source", "task", "split", "columns",
                              "limit", "name", "params", "seeds", "revision", "n_bootstrap", "label"])
# Near-valid manifests: a valid one (a real model, on real data) changed, and often given one bad part,
# so that some are accepted and many are refused for one problem among valid parts, which must then
# not be registered.
VALID = {"submitter": "Test Suite <tests@example.org>",
         "model": {"source": MODEL, "task": "tabular-classification"},
         "dataset": {"source": "sklearn://breast_cancer", "split": "test"},
         "analyses": [{"name": "evaluation.performance", "params": {"n_bootstrap": 100}}]}
PARTS = [("model",), ("model", "source"), ("model", "task"), ("model", "revision"), ("dataset",), ("dataset", "source"),
         ("dataset", "split"), ("dataset", "limit"), ("dataset", "columns"), ("dataset", "label"), ("analyses",),
         ("analyses", 0), ("analyses", 0, "name"), ("analyses", 0, "params"), ("analyses", 0, "params", "n_bootstrap"),
         ("analyses", 0, "seeds"), ("submitter",), ("nope",)]
plausible = st.sampled_from(["sklearn://iris", "sklearn://nope", "x.csv", "/nonexistent", "hf://x/y", "", "test",
                             "train", "nope", "target", -1, 0, 3, 20, "evaluation.performance", "bogus",
                             "attribution.kernel_shap", [0, 1], [-1], ["mean radius"], None, {}, []])


# changes that keep a manifest valid, so that accepted manifests differ from each other
valid_change = st.one_of(
    st.tuples(st.just(("submitter",)), st.text(min_size=1, max_size=10).filter(str.strip)),
    st.tuples(st.just(("dataset", "limit")), st.integers(10, 10**6)),
    st.tuples(st.just(("dataset", "split")), st.sampled_from(["test", "train"])),
    st.tuples(st.just(("analyses", 0, "seeds")), st.lists(st.integers(0, 5), min_size=1, max_size=3, unique=True)),
    st.tuples(st.just(("analyses", 0, "params", "n_bootstrap")), st.integers(100, 10**4)))


def _child(node: object, key: str | int) -> object:
    if isinstance(node, dict):
        return node.get(key)
    return node[key] if isinstance(node, list) and isinstance(key, int) and key < len(node) else None


def _replaced(changes: list[tuple[tuple, object]], garbage: tuple[tuple, object] | None) -> dict:
    """``VALID`` with each (path, value) set, where the path's parent exists."""
    manifest = copy.deepcopy(VALID)
    for path, value in [*changes, *([garbage] if garbage else [])]:
        parent = manifest
        for key in path[:-1]:
            parent = _child(parent, key)
        if isinstance(parent, dict) or _child(parent, path[-1]) is not None:
            parent[path[-1]] = value
    return manifest


near_valid = st.builds(_replaced, st.lists(valid_change, min_size=1, max_size=2),
                       st.none() | st.tuples(st.sampled_from(PARTS), plausible | values))
manifests = st.dictionaries(known_keys, values, max_size=5) | near_valid
COUNTED = ("models", "datasets", "analyses", "commits", "store.queue")


def _counts(cat: catalogue.Catalogue) -> dict[str, int]:
    return cat.sql("SELECT " + ", ".join(f"(SELECT count(*) FROM {t}) AS \"{t}\"" for t in COUNTED)).to_pylist()[0]


def test_fuzzed_manifests_are_accepted_or_refused_clearly(tmp_path: Path) -> None:
    """Each refusal lists one-line problems, each at a place in the manifest, and registers nothing;
    each acceptance registers the model and queues its runs; the examples include both."""
    model = str(breast_cancer_skops(tmp_path / "lr"))
    outcomes: Counter[str] = Counter()
    fresh = iter(range(10**6))
    cat, touched = catalogue.open(tmp_path / f"cat-{next(fresh)}", create=True), False
    empty = _counts(cat)
    assert empty == dict.fromkeys(COUNTED, 0)

    @settings(max_examples=200, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(document=manifests | st.text(max_size=60))
    def submit_one(document: object) -> None:
        nonlocal cat, touched
        if touched:  # by an accepted manifest, or by one that failed this test: each example starts empty
            cat, touched = catalogue.open(tmp_path / f"cat-{next(fresh)}", create=True), False
        text = document if isinstance(document, str) else yaml.safe_dump(document, allow_unicode=True)
        text = text.replace(MODEL, model)
        touched = True
        try:
            submission = submit(cat, text)
        except ManifestError as exc:
            outcomes["refused"] += 1
            assert exc.problems and str(exc).splitlines()[1:] == [f"  {p}" for p in exc.problems]
            # a place is in the manifest given, or is a section it lacks
            keys = ["(top level)", *Manifest.model_fields, *(map(str, document) if isinstance(document, dict) else [])]
            for problem in exc.problems:
                assert "\n" not in problem.strip(), f"a problem of several lines: {problem!r}"
                # "model.source: ...", "analyses[0].params: ...", "(top level): ..."
                assert any(problem.startswith(k) and problem[len(k):len(k) + 1] in (".", "[", ":") for k in keys) and ": " in problem, \
                    f"{problem!r} names no place in the manifest"
            assert _counts(cat) == empty, f"a refused manifest registered something: {exc.problems}"
            touched = False
            return
        except ModelsciError as exc:  # refused by something other than the manifest's checks
            outcomes["refused otherwise"] += 1
            assert len(str(exc).strip().splitlines()) == 1, f"not one clear line: {exc}"
            assert _counts(cat) == empty, f"a refused manifest registered something: {exc}"
            touched = False
            return
        outcomes["accepted"] += 1
        counts = _counts(cat)
        assert counts["models"] == 1 and counts["datasets"] >= 1 and counts["commits"] >= 1, counts
        assert counts["store.queue"] == len(submission.queued) and not submission.already_planned

    submit_one()
    assert outcomes["accepted"] >= 10 and outcomes["refused"] >= 100, outcomes


# -- tampering and broken models --------------------------------------------------------------


def test_an_artifact_changed_on_disk_is_named_by_check(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "m.yaml", str(breast_cancer_skops(tmp_path / "lr")),
                              analyses=[{"name": "evaluation.performance", "params": {"n_bootstrap": 100}}])
    cat = catalogue.open(tmp_path / "cat", create=True)
    submit(cat, manifest.read_text(), base_dir=tmp_path)  # and run here: the command under test is `check`
    assert not run_queue(cat, device="cpu").failed
    path = cat.sql("SELECT path FROM artifacts LIMIT 1").to_pylist()[0]["path"]
    data = bytearray((cat.root / path).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (cat.root / path).write_bytes(bytes(data))
    result = modelsci("check", catalogue_dir=tmp_path / "cat", check=False)
    assert result.returncode == 1 and Path(path).name in result.stderr


def _mlp_folder(folder: Path, weights: dict | None = None, args: dict | None = None) -> Path:
    torch.manual_seed(0)
    module = MLP(30, [8], 2)
    if weights:
        with torch.no_grad():
            for name, value in weights.items():
                module.state_dict()[name].fill_(value)
    save_torch_model(module, "mlp", args or {"in_features": 30, "hidden": [8], "out_features": 2}, folder)
    return folder


def _run_one(tmp_path: Path, model: Path) -> tuple[subprocess.CompletedProcess[str], catalogue.Catalogue]:
    manifest = write_manifest(tmp_path / "m.yaml", str(model), analyses=[{"name": "evaluation.performance"}])
    result = modelsci("submit", str(manifest), "--run", catalogue_dir=tmp_path / "cat", check=False)
    return result, catalogue.open(tmp_path / "cat", create=True)


def test_a_model_that_outputs_nan_fails_its_run_with_an_error_naming_it(tmp_path: Path) -> None:
    folder = _mlp_folder(tmp_path / "nan", weights={"net.0.bias": float("nan")})
    result, cat = _run_one(tmp_path, folder)
    assert result.returncode == 1
    run = cat.sql("SELECT model_id, error FROM runs").to_pylist()[0]
    assert "outputs NaN or inf" in run["error"] and run["model_id"] in run["error"]
    assert cat.sql("SELECT count(*) AS n FROM findings").to_pylist() == [{"n": 0}] and check(cat).ok


def test_a_zero_byte_weights_file_is_refused_naming_it(tmp_path: Path) -> None:
    folder = _mlp_folder(tmp_path / "empty")
    (folder / "model.safetensors").write_bytes(b"")
    result, cat = _run_one(tmp_path, folder)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "model.safetensors" in result.stderr and "0 bytes" in result.stderr
    assert cat.sql("SELECT count(*) AS n FROM models").to_pylist() == [{"n": 0}]


def test_a_config_whose_shapes_do_not_match_the_weights_is_refused_at_submit(tmp_path: Path) -> None:
    folder = _mlp_folder(tmp_path / "shape", args={"in_features": 30, "hidden": [8], "out_features": 2})
    config = json.loads((folder / "modelsci.json").read_text())
    config["args"]["hidden"] = [16]
    (folder / "modelsci.json").write_text(json.dumps(config))
    result, cat = _run_one(tmp_path, folder)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "modelsci.json: the architecture's net.0.bias has shape [16], the weights' [8]" in result.stderr
    assert cat.sql("SELECT count(*) AS n FROM models").to_pylist() == [{"n": 0}]
    assert cat.sql("SELECT count(*) AS n FROM runs").to_pylist() == [{"n": 0}] and check(cat).ok