"""Crashes and other processes: SIGKILL mid-commit, readers beside a writer, two writers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from modelsci import catalogue
from modelsci.catalogue.integrity import check
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
    cat = catalogue.open(sys.argv[1])
    print("committing", flush=True)
    cat.commit(bundle, message="big")
    print("done", flush=True)
""")

# A child that holds a read connection for a while, as a long query would.
HOLD_READER = textwrap.dedent(f"""
    import sys, time
    sys.path.insert(0, {str(REPO)!r})
    from modelsci import catalogue
    cat = catalogue.open(sys.argv[1])
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
    cat = catalogue.open(sys.argv[1])
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
    cat = catalogue.open(path)
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
    catalogue.open(path)
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
    assert findings_count(catalogue.open(path)) == committed


def test_a_commit_during_a_long_read_waits_and_lands(tmp_path: Path) -> None:
    path = tmp_path / "cat"
    cat = catalogue.open(path)
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
    catalogue.open(path)
    reader = child(HOLD_READER, str(path), "3")
    assert reader.stdout.readline().strip() == "reading"
    impatient = catalogue.Catalogue(path, write_timeout=0.3)
    with pytest.raises(catalogue.CatalogueBusyError, match=rf"locked by process {reader.pid} "):
        impatient.commit(accuracy_bundle(0.9, None))
    reader.wait()
    assert findings_count(impatient) == 0 and check(impatient).ok


def test_two_processes_committing_at_once_both_land(tmp_path: Path) -> None:
    path = tmp_path / "cat"
    catalogue.open(path)
    writers = [child(COMMIT_LOOP, str(path), "15", name) for name in ("a", "b")]
    for w in writers:
        assert w.stdout.readline().strip() == "started"
    for w in writers:
        assert w.wait(timeout=300) == 0, w.stderr.read()
    cat = catalogue.open(path)
    per_writer = cat.sql("SELECT subject, count(*) AS n FROM findings GROUP BY subject ORDER BY subject").to_pylist()
    assert per_writer == [{"subject": "a", "n": 15}, {"subject": "b", "n": 15}]
    assert check(cat).ok
    seqs = cat.sql("SELECT seq FROM commits ORDER BY seq").column("seq").to_pylist()
    assert seqs == list(range(1, 31))


def test_interrupted_artifact_write_leaves_no_partial_file(tmp_path: Path, monkeypatch) -> None:
    cat = catalogue.open(tmp_path / "cat")
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
    cat = catalogue.open(path)
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
