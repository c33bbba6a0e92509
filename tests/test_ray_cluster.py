"""The Ray executor on a cluster without shared files: a head and two worker nodes started here.

The head has no CPUs, so every run executes on a worker node; each worker node runs in its own
mount namespace with an empty tmpfs over the folder that holds the model, so that, as on another
machine, it cannot read the driver's files. The driver is a process of its own, one for the module.
"""

from __future__ import annotations

import json
import os
import queue
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from modelsci import catalogue
from modelsci.catalogue.integrity import check
from modelsci.catalogue.store import Catalogue
from tests.conftest import modelsci
from tests.models import breast_cancer_skops, installed_plugin, write_manifest

pytest.importorskip("ray", reason="the Ray executor needs pip install 'modelsci[ray]' (make test installs it)")

RAY = str(Path(sys.executable).parent / "ray")
LEASE_S = "3"

# The driver runs in a process of its own (Ray reads RAY_AUTH_MODE and the token when it is imported), one for
# the module, as a long-lived driver would: it joins the cluster once and runs the queue of each catalogue it is
# sent on stdin, so that Ray starts its workers (which import modelsci and torch) once, not once per test. It
# answers each with a RESULT line: the summary, and what the run said on stderr (its notes).
DRIVER = """
import contextlib, io, json, sys, time, traceback
import ray
from modelsci import catalogue
from modelsci.executors.committer import Committer
from modelsci.executors.execution import Reporter
from modelsci.executors.on_ray import run_queue_on_ray

delay = 0.0
land = Committer.land
def slow(self, *a, **k):  # a slow committer, where the request asks for one
    time.sleep(delay)
    return land(self, *a, **k)
Committer.land = slow

ray.init(address=sys.argv[1], include_dashboard=False, log_to_driver=False, configure_logging=False)
deadline = time.monotonic() + 90  # first, both worker nodes joined
while ray.cluster_resources().get("CPU", 0) < 2 and time.monotonic() < deadline:
    time.sleep(0.25)
print("RESULT " + json.dumps({"cpus": ray.cluster_resources().get("CPU", 0)}), flush=True)
for line in sys.stdin:
    args = json.loads(line)
    delay = args.get("commit_delay", 0.0)
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            summary = run_queue_on_ray(catalogue.open(args["cat"]), device="cpu", address=sys.argv[1],
                                       reporter=Reporter(), max_waiting=args.get("max_waiting"))
        reply = {"succeeded": len(summary.succeeded), "failed": len(summary.failed),
                 "peak_in_memory": summary.peak_in_memory, "spilled": summary.spilled}
    except BaseException:
        reply = {"error": traceback.format_exc()}
    print("RESULT " + json.dumps({**reply, "err": err.getvalue()}), flush=True)
ray.shutdown()
"""

# Writes a marker naming the node it runs on, sleeps, and returns an artifact of random bytes.
PLUGIN = '''
import os
import time

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict

from modelsci.analyses.base import AnalysisPlugin
from modelsci.schemas.entities import Pillar


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")
    artifact_bytes: int = 0
    sleep_s: float = 0.0
    markers: str = ""


class Blob(AnalysisPlugin):
    name = "testing.blob"
    version = "1"
    family = "testing"
    pillar = Pillar.verify
    description = "Notes where it ran, waits, and returns an artifact of random bytes."
    Params = Params
    needs_dataset = False

    def run(self, ctx):
        if ctx.params.markers:
            node = os.environ.get("MODELSCI_TEST_NODE", "driver")
            with open(os.path.join(ctx.params.markers, f"{ctx.seed}-{node}-{os.getpid()}"), "w"):
                pass
        time.sleep(ctx.params.sleep_s)
        rng = np.random.default_rng(ctx.seed)
        table = pa.table({"bytes": [rng.bytes(ctx.params.artifact_bytes)]})
        ctx.add_finding(kind="blob", value=float(ctx.seed), statement="blob made",
                        artifacts={"blob": table} if ctx.params.artifact_bytes else None)
'''


@dataclass
class Cluster:
    address: str
    hidden: Path  # the driver's files; empty on the worker nodes
    markers: Path
    env: dict[str, str]  # Ray's token, and the test analysis on the path
    nodes: dict[str, subprocess.Popen]


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _node_ports(ports: list[int], worker_range: tuple[int, int]) -> list[str]:
    names = ("node-manager-port", "object-manager-port", "dashboard-agent-listen-port",
             "dashboard-agent-grpc-port", "runtime-env-agent-port", "metrics-export-port")
    return [*(f"--{name}={port}" for name, port in zip(names, ports)),
            f"--min-worker-port={worker_range[0]}", f"--max-worker-port={worker_range[1]}"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("the worker nodes need `unshare -m` as root, to hide the driver's files from them")
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"unshare -m is not permitted here: {probe.stderr.strip()}")
    base = tmp_path_factory.mktemp("cluster")
    hidden, markers = base / "driver", base / "markers"
    hidden.mkdir()
    markers.mkdir()
    plugin_env = installed_plugin(base / "site", "blob_plugin", PLUGIN, "testing.blob", "Blob")
    token = secrets.token_hex(16)
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    env = {**os.environ, **auth, **plugin_env, "OMP_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    temp = tempfile.mkdtemp(prefix="rc", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    gcs, *ports = _free_ports(19)
    logs = base / "logs"
    logs.mkdir()
    nodes: dict[str, subprocess.Popen] = {}

    def start(name: str, args: list[str], extra: dict[str, str], wrap: list[str]) -> None:
        with open(logs / f"{name}.log", "w") as log:
            nodes[name] = subprocess.Popen([*wrap, RAY, "start", "--block", "--object-store-memory=100000000",
                                            "--disable-usage-stats", *args], env={**env, **extra},
                                           stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    hide = ["unshare", "-m", "sh", "-c", f'mount -t tmpfs -o size=1m hidden "{hidden}" && exec "$0" "$@"']
    base_port = 20000 + secrets.randbelow(20000)  # three ranges of worker ports
    start("head", ["--head", f"--port={gcs}", "--num-cpus=0", "--include-dashboard=false",
                   f"--temp-dir={temp}", *_node_ports(ports[0:6], (base_port + 200, base_port + 240))], {}, [])
    deadline = time.monotonic() + 60
    while socket.socket().connect_ex(("127.0.0.1", gcs)) != 0:  # a worker node gives up 30 s after it starts
        assert time.monotonic() < deadline and nodes["head"].poll() is None, (logs / "head.log").read_text()[-2000:]
        time.sleep(0.2)
    for i, name in enumerate(("w1", "w2")):
        start(name, [f"--address=127.0.0.1:{gcs}", "--num-cpus=1", f"--node-ip-address=127.0.0.{i + 2}",
                     *_node_ports(ports[6 + 6 * i: 12 + 6 * i], (base_port + 100 * i, base_port + 100 * i + 40))],
              {"MODELSCI_TEST_NODE": name}, hide)
        # one at a time: two nodes starting at once on one machine race for the same socket names
        while "Ray runtime started" not in (logs / f"{name}.log").read_text():
            assert time.monotonic() < deadline + 60 and nodes[name].poll() is None, (logs / f"{name}.log").read_text()
            time.sleep(0.2)
    try:  # the driver waits for the worker nodes to join
        yield Cluster(f"127.0.0.1:{gcs}", hidden, markers, {**env, "MODELSCI_LEASE_S": LEASE_S}, nodes)
    finally:
        for proc in nodes.values():  # `ray start --block` stops its node's processes when it ends
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in nodes.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)  # its group: the node's processes, by the node's pid
                proc.wait()
        shutil.rmtree(temp, ignore_errors=True)


@dataclass
class Driver:
    process: subprocess.Popen
    results: queue.Queue  # the RESULT lines it printed, read on a thread of their own
    log: Path  # whatever else it printed


@pytest.fixture(scope="module")
def driver(cluster: Cluster) -> Iterator[Driver]:
    log = cluster.hidden.parent / "logs" / "driver.log"
    with open(log, "w") as err:
        process = subprocess.Popen([sys.executable, "-c", DRIVER, cluster.address], env=cluster.env, text=True,
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err)
    results: queue.Queue = queue.Queue()

    def read() -> None:
        for line in process.stdout:  # Ray prints here too: its lines are not answers
            if line.startswith("RESULT "):
                results.put(json.loads(line.removeprefix("RESULT ")))

    threading.Thread(target=read, daemon=True).start()
    try:
        try:
            ready = results.get(timeout=150)
        except queue.Empty:
            ready = {}
        assert ready.get("cpus", 0) >= 2, "the worker nodes did not join: " + log.read_text()[-1500:] + "".join(
            path.read_text()[-1500:] for path in sorted(log.parent.glob("w*.log")))
        yield Driver(process, results, log)
    finally:
        process.stdin.close()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def drive(driver: Driver, cat: Catalogue, **options: object) -> None:
    """Have the driver run ``cat``'s queue on the cluster (``finished`` waits for it)."""
    driver.process.stdin.write(json.dumps({"cat": str(cat.root), **options}) + "\n")
    driver.process.stdin.flush()


def finished(driver: Driver) -> tuple[dict, str]:
    try:
        reply = driver.results.get(timeout=300)
    except queue.Empty:
        raise AssertionError("the driver did not answer: " + driver.log.read_text()[-3000:]) from None
    assert "error" not in reply, reply["error"][-3000:] + reply["err"][-2000:]
    return reply, reply.pop("err")


def submitted(cluster: Cluster, name: str, analyses: list[dict], copy: str | None = None) -> Catalogue:
    """A catalogue with ``analyses`` queued on a model in the folder the worker nodes cannot see
    (and, with ``copy``, a copy of it under that name: the same queue for another executor)."""
    model = cluster.hidden / name / "lr"
    if not model.exists():
        breast_cancer_skops(model)
    manifest = write_manifest(cluster.hidden / name / "m.yaml", str(model), analyses=analyses)
    cat_dir = cluster.hidden.parent / "cats" / name
    modelsci("submit", str(manifest), catalogue_dir=cat_dir, env=cluster.env)
    if copy is not None:
        shutil.copytree(cat_dir, cat_dir.parent / copy)
    return catalogue.open(cat_dir)


def finding_ids(cat: Catalogue) -> list[str]:
    return sorted(r["id"] for r in cat.sql("SELECT id FROM findings").to_pylist())


def test_runs_on_worker_nodes_without_the_driver_files_land_the_local_findings(cluster: Cluster,
                                                                              driver: Driver) -> None:
    analyses = [{"name": "evaluation.performance", "params": {"n_bootstrap": 100}},
                {"name": "attribution.kernel_shap", "params": {"examples": 1, "budget": 64}, "seeds": [0, 1]},
                {"name": "testing.blob", "params": {"markers": str(cluster.markers), "artifact_bytes": 1000},
                 "seeds": [0, 1, 2, 3]}]
    on_ray = submitted(cluster, "ray", analyses, copy="local")
    local = catalogue.open(on_ray.root.parent / "local")
    drive(driver, on_ray)
    summary, _ = finished(driver)
    assert (summary["succeeded"], summary["failed"]) == (7, 0)
    # the runs executed on the worker nodes, though neither sees the model's folder
    nodes = [marker.name.split("-")[1] for marker in cluster.markers.iterdir()]
    assert len(nodes) == 4 and set(nodes) <= {"w1", "w2"}, nodes
    assert check(on_ray).ok
    assert on_ray.sql("SELECT count(*) AS n FROM runs").to_pylist() == [{"n": 7}]

    out = modelsci("run", "--device", "cpu", catalogue_dir=local.root, env=cluster.env).stdout
    assert "7 run(s) succeeded, 0 failed" in out
    assert len(finding_ids(on_ray)) > 10 and finding_ids(on_ray) == finding_ids(local)


def test_a_bounded_number_of_bundles_waits_in_memory_while_a_slow_committer_lands_them(cluster: Cluster,
                                                                                        driver: Driver) -> None:
    # 120 MB in all, more than a node's object store holds (100 MB); the committer is slower than two workers
    runs, size = 40, 3_000_000
    cat = submitted(cluster, "bound", [{"name": "testing.blob", "params": {"artifact_bytes": size},
                                        "seeds": list(range(runs))}])
    drive(driver, cat, max_waiting=3, commit_delay=0.2)
    summary, _ = finished(driver)
    assert (summary["succeeded"], summary["failed"]) == (runs, 0)
    # the bound held, and was needed: bundles waited in the spool rather than in memory
    assert 1 <= summary["peak_in_memory"] <= 3 and summary["spilled"] > 0, summary
    assert cat.sql("SELECT count(*) AS n, count(DISTINCT id) AS d FROM runs").to_pylist() == [{"n": runs, "d": runs}]
    artifacts = cat.sql("SELECT count(*) AS n, min(bytes) AS small FROM artifacts").to_pylist()[0]
    assert artifacts["n"] == runs and artifacts["small"] > size
    assert not list((cat.root / "spool").glob("*.bundle"))
    assert check(cat).ok


def test_a_killed_worker_node_gives_its_run_back_and_it_lands_once_from_the_other(cluster: Cluster,
                                                                                  driver: Driver) -> None:
    for marker in cluster.markers.iterdir():
        marker.unlink()
    cat = submitted(cluster, "kill", [{"name": "testing.blob", "params": {"markers": str(cluster.markers),
                                                                          "sleep_s": 2.0}, "seeds": [0, 1]}])
    drive(driver, cat)
    deadline = time.monotonic() + 120
    while not (started := sorted(cluster.markers.iterdir())):
        assert time.monotonic() < deadline and driver.process.poll() is None and driver.results.empty(), \
            "no run started"
        time.sleep(0.1)
    seed, node, _ = started[0].name.split("-")
    raylets = subprocess.run(["pgrep", "-P", str(cluster.nodes[node].pid), "raylet"], capture_output=True,
                             text=True).stdout.split()
    assert len(raylets) == 1, raylets
    os.kill(int(raylets[0]), signal.SIGKILL)
    summary, err = finished(driver)
    assert (summary["succeeded"], summary["failed"]) == (2, 0), err
    assert "goes back to the queue" in err, err
    # seed's run started on the killed node, then again on the other one, and landed once
    again = [m.name.split("-")[1] for m in cluster.markers.iterdir() if m.name.startswith(f"{seed}-")]
    assert sorted(again) == sorted([node, "w2" if node == "w1" else "w1"]), again
    assert cat.sql("SELECT seed, count(*) AS n FROM findings GROUP BY seed ORDER BY seed").to_pylist() == [
        {"seed": 0, "n": 1}, {"seed": 1, "n": 1}]
    assert cat.sql("SELECT DISTINCT status FROM store.queue").to_pylist() == [{"status": "succeeded"}]
    assert modelsci("check", catalogue_dir=cat.root).returncode == 0
