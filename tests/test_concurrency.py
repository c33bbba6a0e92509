"""Crashes and other processes: SIGKILL mid-commit, readers beside a writer, two writers, a writer
that finds the catalogue busy (the spool)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from modelsci import catalogue
from modelsci.analyses.base import registry
from modelsci.catalogue.integrity import check
from modelsci.catalogue.spool import Spool
from modelsci.executors.committer import Committer
from modelsci.executors.execution import QueueSummary, Reporter
from modelsci.schemas.queued_run import QueuedRun
from tests.conftest import MODELSCI, REPO, accuracy_bundle, modelsci

BIG_FINDINGS = 30_000

# A child that commits one large bundle, saying when it starts.
COMMIT_BIG = textwrap.dedent(f"""
    import sys
    sys.path.insert(0, {str(REPO)!r})
    from modelsci import catalogue
    from tests.conftest import accuracy_bundle
    bundle = accuracy_bundle(0.5, None)
    run = bundle.runs[0]
    for i in range({BIG_FINDINGS}):
        bundle.add_finding(run, kind="importance", subject=f"feature {{i}}", statement="x", value=i / 7)
    cat = catalogue.open(sys.argv[1], create=True)
    print("committing", flush=True)
    cat.commit(bundle, message="big")
    print("done", flush=True)
""")

# A child that holds a read connection for a while, as a long query would.
HOLD_READER = textwrap.dedent(f"""
    import sys, time
    sys.path.insert(0, {str(REPO)!r})
    from modelsci import catalogue
    cat = catalogue.open(sys.argv[1], create=True)
    with cat.reader() as con:
        con.execute("SELECT count(*) FROM findings").fetchall()
        print("reading", flush=True)
        time.sleep(float(sys.argv[2]))
""")

# A child that keeps committing small bundles (a long `modelsci run`).
COMMIT_LOOP = textwrap.dedent(f"""
    import sys
    sys.path.insert(0, {str(REPO)!r})
    from modelsci import catalogue
    from tests.conftest import accuracy_bundle
    from pathlib import Path
    cat = catalogue.open(sys.argv[1], create=True)
    stop = Path(sys.argv[4]) if len(sys.argv) > 4 else None
    print("started", flush=True)
    seed = 0
    while seed < int(sys.argv[2]) or (stop is not None and not stop.exists() and seed < 1000):
        cat.commit(accuracy_bundle(0.5 + seed / 1000, None, seed=seed, subject=sys.argv[3]))
        seed += 1
    print(seed, flush=True)
""")


def child(script: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def findings_count(cat: catalogue.Catalogue) -> int:
    return cat.sql("SELECT count(*) AS n FROM findings").column("n")[0].as_py()


def test_sigkill_during_a_large_commit_leaves_all_or_nothing(tmp_path: Path) -> None:
    path = tmp_path / "cat"
    cat = catalogue.open(path, create=True)
    cat.commit(accuracy_bundle(0.9, None, subject="kept"))
    outcomes = []
    # Kill at several points of the commit: from artifact writing, through the transaction, to its end.
    for delay in (0.0, 0.3, 0.8, 1.5, 2.5):
        proc = child(COMMIT_BIG, str(path))
        assert proc.stdout.readline().strip() == "committing"
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        report = check(cat)
        assert report.ok, report.problems
        n = findings_count(cat)
        assert n in (1, BIG_FINDINGS + 2), f"half a bundle landed: {n} findings"
        assert cat.sql("SELECT count(*) AS n FROM findings WHERE subject = 'kept'").column("n")[0].as_py() == 1
        outcomes.append(n > 1)
        if n > 1:
            break
    assert modelsci("check", catalogue_dir=path).returncode == 0
    # the kills were real: at least the first one interrupted the commit
    assert outcomes[0] is False


def test_sql_succeeds_while_another_process_keeps_committing(tmp_path: Path) -> None:
    path = tmp_path / "cat"
    catalogue.open(path, create=True)
    stop = tmp_path / "stop"
    # The writer commits at least 20 bundles, and goes on until the readers have had 3 answers.
    writer = child(COMMIT_LOOP, str(path), "20", "loop", str(stop))
    assert writer.stdout.readline().strip() == "started"
    answers = []
    while writer.poll() is None:
        result = modelsci("sql", "SELECT count(*) AS n FROM findings", "--format", "csv", catalogue_dir=path)
        answers.append(int(result.stdout.splitlines()[1]))
        if len(answers) == 3:
            stop.touch()
    assert writer.wait() == 0, writer.stderr.read()
    committed = int(writer.stdout.readline())
    assert len(answers) >= 3 and answers == sorted(answers) and answers[-1] <= committed
    assert findings_count(catalogue.open(path, create=True)) == committed


def test_a_commit_during_a_long_read_waits_and_lands(tmp_path: Path) -> None:
    path = tmp_path / "cat"
    cat = catalogue.open(path, create=True)
    reader = child(HOLD_READER, str(path), "2")
    assert reader.stdout.readline().strip() == "reading"
    started = time.monotonic()
    commit = cat.commit(accuracy_bundle(0.9, None))
    waited = time.monotonic() - started
    assert commit is not None and findings_count(cat) == 1
    assert waited > 0.5, "the commit should have waited for the reader to let go"
    assert reader.wait() == 0


def test_a_writer_that_cannot_wait_long_enough_names_the_holder(tmp_path: Path) -> None:
    path = tmp_path / "cat"
    catalogue.open(path, create=True)
    reader = child(HOLD_READER, str(path), "3")
    assert reader.stdout.readline().strip() == "reading"
    impatient = catalogue.Catalogue(path, write_timeout=0.3)
    with pytest.raises(catalogue.CatalogueBusyError, match=rf"locked by process {reader.pid} "):
        impatient.commit(accuracy_bundle(0.9, None))
    reader.wait()
    assert findings_count(impatient) == 0 and check(impatient).ok


def test_two_processes_committing_at_once_both_land(tmp_path: Path) -> None:
    path = tmp_path / "cat"
    catalogue.open(path, create=True)
    writers = [child(COMMIT_LOOP, str(path), "15", name) for name in ("a", "b")]
    for w in writers:
        assert w.stdout.readline().strip() == "started"
    for w in writers:
        assert w.wait(timeout=300) == 0, w.stderr.read()
    cat = catalogue.open(path, create=True)
    per_writer = cat.sql("SELECT subject, count(*) AS n FROM findings GROUP BY subject ORDER BY subject").to_pylist()
    assert per_writer == [{"subject": "a", "n": 15}, {"subject": "b", "n": 15}]
    assert check(cat).ok
    seqs = cat.sql("SELECT seq FROM commits ORDER BY seq").column("seq").to_pylist()
    assert seqs == list(range(1, 31))


def test_interrupted_artifact_write_leaves_no_partial_file(tmp_path: Path, monkeypatch) -> None:
    cat = catalogue.open(tmp_path / "cat", create=True)
    import pyarrow as pa

    bundle = accuracy_bundle(0.9, None)
    bundle.add_finding(bundle.runs[0], kind="table", statement="t", artifacts={"t": pa.table({"x": [1, 2]})})
    real_fsync = os.fsync

    def full_disk(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match=r"could not write artifact \w+\.parquet \(No space left on device\); nothing was committed"):
        cat.commit(bundle)
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert list(cat.artifacts_dir.iterdir()) == []
    assert findings_count(cat) == 0 and check(cat).ok
    assert cat.commit(bundle) is not None  # the disk has room again: the same bundle lands
    assert check(cat).ok and check(cat).artifacts_checked == 1


def test_a_reader_waits_for_a_writing_block_and_sees_every_commit_of_it(tmp_path: Path) -> None:
    path = tmp_path / "cat"
    cat = catalogue.open(path, create=True)
    with cat.writing():
        cat.commit(accuracy_bundle(0.5, None, seed=0))
        reader = subprocess.Popen(
            [MODELSCI, "--catalogue", str(path), "sql", "SELECT count(*) AS n FROM commits", "--format", "csv"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # The reader says so when it meets the lock; only then does the block go on. (It may
        # take seconds to start: sleeping instead raced it on a machine where imports are slow.)
        waiting = reader.stderr.readline()
        assert "waiting for the catalogue lock" in waiting, waiting + reader.stderr.read()
        cat.commit(accuracy_bundle(0.6, None, seed=1))
    out, err = reader.communicate(timeout=60)
    assert reader.returncode == 0, err
    assert out.split() == ["n", "2"]


# -- a writer that finds the catalogue busy keeps its result (the spool) ------------------------

HOLDING_PLUGIN = '''
import os
import time
from pathlib import Path
from pydantic import BaseModel, ConfigDict
from modelsci.analyses.base import AnalysisPlugin
from modelsci.schemas.entities import Pillar


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Holding(AnalysisPlugin):
    name = "testing.holding"
    version = "1"
    family = "testing"
    pillar = Pillar.verify
    description = "Logs each execution in $HOLDING_DIR/executions.log, then holds while $HOLDING_DIR/hold exists."
    Params = Params

    def run(self, ctx):
        folder = Path(os.environ["HOLDING_DIR"])
        with open(folder / "executions.log", "a") as log:
            log.write(ctx.run.id + "\\n")
        deadline = time.monotonic() + 60
        while (folder / "hold").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        ctx.add_finding(kind="held", value=1.0, statement="held, then finished")
'''

# A reader whose query (a cross join) holds the catalogue until its time limit stops it.
LONG_READER = textwrap.dedent(f"""
    import sys
    sys.path.insert(0, {str(REPO)!r})
    from modelsci import catalogue
    from modelsci.catalogue.readonly import QueryTimeoutError, ReaderLimits, lock_down, run_bounded
    cat = catalogue.open(sys.argv[1], create=True)
    limits = ReaderLimits.resolve(timeout=float(sys.argv[2]))
    with cat.reader() as con:
        query = lock_down(con, cat.root, "SELECT count(*) FROM range(1000000) a, range(1000000) b", limits)
        print("reading", flush=True)
        try:
            run_bounded(con, query, limits)
        except QueryTimeoutError:
            print("stopped at its time limit", flush=True)
""")


@pytest.fixture(scope="module")
def holding_queue(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A catalogue with two queued runs of a small real model (a scikit-learn pipeline), one of the
    holding analysis, one of evaluation.performance; and the environment that installs the plugin."""
    from tests.models import breast_cancer_skops, installed_plugin, write_manifest

    base = tmp_path_factory.mktemp("holding")
    env = installed_plugin(base / "plugin", "holding_plugin", HOLDING_PLUGIN, "testing.holding", "Holding")
    manifest = write_manifest(base / "m.yaml", str(breast_cancer_skops(base / "lr")), analyses=[
        {"name": "testing.holding"}, {"name": "evaluation.performance", "params": {"n_bootstrap": 100}}])
    modelsci("submit", str(manifest), catalogue_dir=base / "cat", env=env)
    return base / "cat", env


def queued_copy(holding_queue: tuple[Path, dict[str, str]], tmp_path: Path) -> tuple[Path, dict[str, str], Path, Path]:
    """A copy of the queued catalogue for one test; its environment for `modelsci run` (a lock
    timeout of 1 s), the holding analysis' execution log, and its hold file (made)."""
    template, env = holding_queue
    cat_dir = tmp_path / "cat"
    shutil.copytree(template, cat_dir)
    (tmp_path / "hold").touch()
    env = {**env, "HOLDING_DIR": str(tmp_path), "MODELSCI_LOCK_TIMEOUT": "1"}
    return cat_dir, env, tmp_path / "executions.log", tmp_path / "hold"


def start_run(cat_dir: Path, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([MODELSCI, "--catalogue", str(cat_dir), "run", "--device", "cpu", *args],
                            env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(condition, what: str, seconds: float = 60) -> None:  # noqa: ANN001 - a callable
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def spooled(cat_dir: Path) -> list[Path]:
    return sorted((cat_dir / "spool").glob("*.bundle"))


def assert_each_run_landed_once(cat_dir: Path, log: Path) -> None:
    assert len(log.read_text().split()) == 1, "the holding run was executed more than once"
    cat = catalogue.open(cat_dir, create=True)
    runs = cat.sql("SELECT analysis_id, status, count(*) OVER (PARTITION BY id) AS copies FROM runs "
                   "ORDER BY analysis_id").to_pylist()
    performance = f"evaluation.performance@{registry()['evaluation.performance'].version}"
    assert [(r["analysis_id"], r["status"], r["copies"]) for r in runs] == [
        (performance, "succeeded", 1), ("testing.holding@1", "succeeded", 1)]
    assert cat.sql("SELECT count(*) AS n FROM findings WHERE kind = 'held'").to_pylist() == [{"n": 1}]
    assert cat.sql("SELECT DISTINCT status FROM store.queue").to_pylist() == [{"status": "succeeded"}]
    assert spooled(cat_dir) == []
    assert check(cat).ok
    assert modelsci("check", catalogue_dir=cat_dir).returncode == 0


def test_a_run_whose_commit_meets_a_long_reader_lands_after_the_reader_ends(holding_queue, tmp_path: Path) -> None:
    cat_dir, env, log, hold = queued_copy(holding_queue, tmp_path)
    runner = start_run(cat_dir, env)  # runs in process; the next test, in a pool of workers
    wait_for(log.exists, "the holding run to start")
    # The reader holds the catalogue for 5 s; the run's commit gives up on the lock after 1 s.
    reader = child(LONG_READER, str(cat_dir), "5")
    assert reader.stdout.readline().strip() == "reading"
    hold.unlink()
    out, err = runner.communicate(timeout=120)
    assert runner.returncode == 0, out + err
    assert "kept the finished run" in err and "to land when the lock frees" in err, err
    assert "2 run(s) succeeded, 0 failed" in out
    assert reader.wait() == 0, reader.stderr.read()
    assert reader.stdout.read().strip() == "stopped at its time limit"  # and no progress bar of DuckDB's
    assert_each_run_landed_once(cat_dir, log)


def holding_run_spooled(cat_dir: Path) -> bool:
    for path in spooled(cat_dir):
        try:
            bundle, _ = Spool(cat_dir / "spool").read(path)
        except FileNotFoundError:
            continue
        if any(run.analysis_id == "testing.holding@1" for run in bundle.runs):
            return True
    return False


def test_a_run_spooled_by_a_killed_modelsci_run_is_landed_by_the_next_one(holding_queue, tmp_path: Path) -> None:
    cat_dir, env, log, hold = queued_copy(holding_queue, tmp_path)
    runner = start_run(cat_dir, env, "--jobs", "2")
    wait_for(log.exists, "the holding run to start")
    reader = child(LONG_READER, str(cat_dir), "8")
    assert reader.stdout.readline().strip() == "reading"
    hold.unlink()
    wait_for(lambda: holding_run_spooled(cat_dir), "the finished run to be spooled")
    time.sleep(2)  # past a second try for the lock (1 s each): the file must outlast failed tries
    workers = subprocess.run(["pgrep", "-P", str(runner.pid)], capture_output=True, text=True).stdout.split()
    runner.send_signal(signal.SIGKILL)  # while it waits for the reader to let go
    runner.wait()
    assert reader.poll() is None, "the reader ended before the kill: nothing was tested"
    assert reader.wait() == 0
    assert workers and wait_for(lambda: not any(alive(int(pid)) for pid in workers), "the workers to end", 10) is None
    cat = catalogue.open(cat_dir, create=True)
    assert cat.sql("SELECT count(*) AS n FROM runs WHERE analysis_id = 'testing.holding@1'").to_pylist() == [{"n": 0}]
    result = modelsci("run", "--device", "cpu", catalogue_dir=cat_dir, env=env)
    assert "kept in the spool by another modelsci run" in result.stderr, result.stderr
    assert_each_run_landed_once(cat_dir, log)  # landed from the spool, not executed again


def toy_queued(bundle) -> QueuedRun:  # noqa: ANN001 - a ResultBundle
    run = bundle.runs[0]
    return QueuedRun(run_id=run.id, run_key="key", attempt=1, model_id=run.model_id, dataset_id=run.dataset_id,
                     analysis_id=run.analysis_id, params=run.params, seed=run.seed, model_spec={},
                     dataset_spec=None, worker="host:1:1")


def test_a_busy_commit_is_spooled_and_lands_once_even_if_cut_off_before_the_file_is_removed(tmp_path: Path) -> None:
    import pyarrow as pa

    path = tmp_path / "cat"
    catalogue.open(path, create=True)
    bundle = accuracy_bundle(0.9, (0.8, 1.0))
    bundle.add_finding(bundle.runs[0], kind="table", statement="t", artifacts={"t": pa.table({"x": [1, 2]})})
    reader = child(HOLD_READER, str(path), "3")
    assert reader.stdout.readline().strip() == "reading"
    impatient = catalogue.Catalogue(path, write_timeout=0.3)
    notes: list[str] = []
    reporter = Reporter()
    reporter.note = notes.append  # type: ignore[method-assign]
    summary = QueueSummary()
    Committer(impatient, reporter, summary).land(toy_queued(bundle), bundle)
    assert "kept the finished run run-1-0 in" in notes[0] and f"process {reader.pid}" in notes[0], notes
    assert summary.succeeded == [] and len(impatient.spool.pending()) == 1
    assert reader.wait() == 0
    # A kill between the commit and the removal of the spool file: the bundle landed, the file stayed.
    first = impatient.commit(bundle)
    assert first is not None
    later = QueueSummary()
    Committer(impatient, reporter, later).flush()
    assert impatient.spool.pending() == [] and later.succeeded == []
    assert impatient.sql("SELECT count(*) AS n FROM commits").to_pylist() == [{"n": 1}]
    assert check(impatient).ok and check(impatient).artifacts_checked == 1


def test_a_spooled_bundle_lands_as_the_bundle_itself_would(tmp_path: Path) -> None:
    import pyarrow as pa

    bundle = accuracy_bundle(0.123456789012345, (0.1, 0.2))
    run = bundle.runs[0]
    run.environment = {"nested": {"list": [1, 2.5, None]}, "text": "é ✓"}
    bundle.add_finding(run, kind="table", statement="t", metrics={"budget": 7, "ratio": 1 / 3},
                       artifacts={"t": pa.table({"x": [1, 2], "s": ["a", None]})})
    direct, through_spool = catalogue.open(tmp_path / "direct", create=True), catalogue.open(tmp_path / "spooled", create=True)
    direct.commit(bundle)
    file = through_spool.spool.put(bundle, {"queued": {"any": "json"}})
    read_back, meta = through_spool.spool.read(file)
    assert meta == {"queued": {"any": "json"}}
    through_spool.commit(read_back)
    for table in ("models", "datasets", "analyses", "runs", "findings", "artifacts"):
        query = f"SELECT * EXCLUDE (commit_id) FROM {table} ORDER BY id"
        assert direct.sql(query).to_pylist() == through_spool.sql(query).to_pylist(), table
    assert check(through_spool).ok
