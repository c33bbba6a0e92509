"""Claims as leases: expiry, renewal, late results dropped, and the bound on bundles in memory."""

from __future__ import annotations

import time
from collections.abc import Hashable
from pathlib import Path

import pytest

from modelsci import catalogue
from modelsci.catalogue.integrity import check
from modelsci.catalogue.store import Catalogue
from modelsci.executors.committer import Committer
from modelsci.executors.driving import Backend, drive
from modelsci.executors.execution import Progress, QueueSummary, Reporter, failed_bundle
from modelsci.executors.leases import LeaseKeeper
from modelsci.schemas.bundle import ResultBundle
from modelsci.schemas.queued_run import QueuedRun
from tests.conftest import toy_analysis, toy_model


class Notes(Reporter):
    def __init__(self) -> None:
        self.notes: list[str] = []

    def note(self, message: str) -> None:
        self.notes.append(message)


def queued(n: int) -> list[QueuedRun]:
    return [QueuedRun(run_id=f"run{i:03d}", run_key=f"key{i:03d}", attempt=0, model_id=toy_model().id,
                      dataset_id=None, analysis_id=toy_analysis().id, params={}, seed=i,
                      model_spec={"source": "x", "task": "t"}, dataset_spec=None) for i in range(n)]


def failed(run: QueuedRun, error: str) -> ResultBundle:
    """A real bundle, cheap to land: the run failed."""
    bundle = failed_bundle(run, "cpu", RuntimeError(error))
    bundle.models.append(toy_model())
    bundle.analyses.append(toy_analysis())
    return bundle


@pytest.fixture
def cat(tmp_path: Path) -> Catalogue:
    cat = catalogue.open(tmp_path / "cat", create=True)
    cat.enqueue(queued(3))
    return cat


def test_an_expired_lease_goes_back_to_the_queue_and_a_renewed_one_does_not(cat: Catalogue,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELSCI_LEASE_S", "0.6")
    elsewhere = "another-host:1:x"  # a claimer whose process this host cannot see: only its lease counts
    first, second = cat.claim(elsewhere), cat.claim(elsewhere)
    keeper = LeaseKeeper(cat)
    keeper.hold(second)
    for _ in range(4):  # past the lease twice over: renewed, the second stays claimed
        time.sleep(0.3)
        assert keeper.renew() == set()
    third = cat.claim("another-host:2:y")
    assert third.run_id == first.run_id and third.lease != first.lease
    rows = {r["run_id"]: r for r in cat.sql("SELECT run_id, status, worker FROM store.queue").to_pylist()}
    assert rows[second.run_id] == {"run_id": second.run_id, "status": "running", "worker": elsewhere}
    assert rows["run002"]["status"] == "queued"
    # the first claim's holder renews too late: its lease is lost, and said so
    keeper.hold(first)
    assert keeper.renew() == {first.run_id}


def test_a_claim_of_a_process_gone_from_this_host_is_taken_back_at_once(cat: Catalogue) -> None:
    from modelsci.catalogue.queue import worker_name

    host, _, _ = worker_name().partition(":")
    gone = cat.claim(f"{host}:999999999:x")  # no such pid
    again = cat.claim(worker_name())
    assert again.run_id == gone.run_id


def test_a_late_result_of_a_lease_taken_over_is_dropped_and_the_run_lands_once(cat: Catalogue,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELSCI_LEASE_S", "0.2")
    late = cat.claim("another-host:1:x")
    time.sleep(0.3)
    current = cat.claim("another-host:2:y")
    assert current.run_id == late.run_id
    notes = Notes()
    committer = Committer(cat, notes, QueueSummary(), LeaseKeeper(cat))
    committer.land(late, failed(late, "late"))
    assert cat.sql("SELECT count(*) AS n FROM runs").to_pylist() == [{"n": 0}]
    assert notes.notes == [f"dropped a late result of run {late.run_id}: its lease expired and another claim runs it now"]
    committer.land(current, failed(current, "current"))
    committer.land(late, failed(late, "later still"))
    assert cat.sql("SELECT id, error FROM runs").to_pylist() == [{"id": late.run_id, "error": "RuntimeError: current"}]
    assert notes.notes[-1].endswith("it has landed already")


class Instant(Backend):
    """Finishes every run at once, as a failed run (a real bundle, cheap to land)."""

    capacity = 4

    def __init__(self) -> None:
        self.done: list[tuple[Hashable, ResultBundle | BaseException]] = []
        self.runs: dict[str, QueuedRun] = {}

    def submit(self, queued: QueuedRun, progress: Progress, keeper: LeaseKeeper) -> Hashable:
        self.done.append((queued.run_id, failed(queued, f"seed {queued.seed}")))
        return queued.run_id

    def wait(self, handles: list[Hashable], timeout: float) -> list[tuple[Hashable, ResultBundle | BaseException]]:
        done, self.done = self.done, []
        return done


def test_a_slow_committer_keeps_at_most_the_bound_in_memory_and_every_run_lands_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cat = catalogue.open(tmp_path / "cat", create=True)
    cat.enqueue(queued(20))
    land = Committer.land

    def slow(self: Committer, *args: object) -> None:
        time.sleep(0.02)
        land(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(Committer, "land", slow)
    summary = drive(cat, Instant(), Notes(), device="cpu", bound=3)
    assert len(summary.failed) == 20 and len(set(summary.failed)) == 20
    assert summary.peak_in_memory == 3 and summary.spilled > 0
    assert cat.sql("SELECT count(*) AS n, count(DISTINCT id) AS d FROM runs").to_pylist() == [{"n": 20, "d": 20}]
    assert cat.sql("SELECT DISTINCT status FROM store.queue").to_pylist() == [{"status": "failed"}]
    assert not list((cat.root / "spool").glob("*.bundle"))
    assert check(cat).ok
