"""A reader's SQL ends within its time and memory limits, with a one-line message; junk
options get one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from modelsci import catalogue
from modelsci.catalogue.readonly import (
    DEFAULT_TIMEOUT_S,
    QueryTimeoutError,
    ReaderLimits,
    ReaderLimitSettingError,
    machine_memory,
)
from tests.conftest import REPO, accuracy_bundle, modelsci

# Runs for hours: a million by a million rows.
CROSS_JOIN = "SELECT count(*) AS n FROM range(1000000) a, range(1000000) b"
# Grows by gigabytes within seconds: ten billion distinct values.
DISTINCT = ("SELECT count(*) AS n FROM (SELECT DISTINCT a.range * 1000003 + b.range AS v "
            "FROM range(100000) a, range(100000) b)")
# Cheap to compute, but a result of a billion rows (8 GB as Arrow).
HUGE_RESULT = "SELECT a.range * 10000 + b.range AS v FROM range(100000) a, range(10000) b"

# A child that reports its peak memory above what it held before the query, and the error.
PEAK = textwrap.dedent(f"""
    import json, resource, sys
    sys.path.insert(0, {str(REPO)!r})
    from modelsci import catalogue
    cat = catalogue.open(sys.argv[1], create=True)
    cat.sql("SELECT count(*) FROM findings")  # load what any query loads
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        cat.sql(sys.argv[2], memory_limit=sys.argv[3], timeout=float(sys.argv[4]))
        error = None
    except Exception as exc:
        error = type(exc).__name__ + ": " + str(exc)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
    print(json.dumps({{"error": error, "peak_above_base_bytes": peak * 1024}}))
""")


@pytest.fixture
def filled(cat) -> catalogue.Catalogue:
    cat.commit(accuracy_bundle(0.9, (0.8, 1.0)))
    return cat


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one line a user error prints; fails on a traceback or more lines."""
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_a_cross_join_stops_at_its_time_limit(filled) -> None:
    started = time.monotonic()
    with pytest.raises(QueryTimeoutError, match=r"^the query ran past its time limit of 2 s and was stopped; "
                                                r"narrow it, or raise the limit \(--timeout SECONDS"):
        filled.sql(CROSS_JOIN, timeout=2)
    assert 2 <= time.monotonic() - started < 3.5
    # the catalogue is not held afterwards: the next query and a commit go through
    assert filled.sql("SELECT count(*) AS n FROM findings").to_pylist() == [{"n": 1}]
    assert filled.commit(accuracy_bundle(0.7, None, seed=1)) is not None


def test_the_cli_stops_a_cross_join_at_its_time_limit_in_one_line(filled) -> None:
    started = time.monotonic()
    result = modelsci("sql", CROSS_JOIN, "--timeout", "2", catalogue_dir=filled.root, check=False)
    took = time.monotonic() - started
    line = one_error_line(result)
    assert "the query ran past its time limit of 2 s" in line
    assert 2 <= took < 15, took  # the limit, plus the command's start (imports) on a busy machine


def run_measured(root: Path, query: str, memory_limit: str, timeout: float = 8) -> dict:
    child = subprocess.run([sys.executable, "-c", PEAK, str(root), query, memory_limit, str(timeout)],
                           capture_output=True, text=True, timeout=120)
    assert child.returncode == 0, child.stderr
    return json.loads(child.stdout)


def test_a_memory_hungry_query_stops_at_its_memory_limit(filled) -> None:
    outcome = run_measured(filled.root, DISTINCT, "200MB")
    assert outcome["error"].startswith("QueryMemoryError: the query was stopped: it needed more memory than "
                                       "its limit of 200 MB; narrow it"), outcome
    assert outcome["peak_above_base_bytes"] < 400e6, outcome  # without the limit: gigabytes in seconds
    # nothing spilled to disk: a reader writes nothing
    assert sorted(p.name for p in filled.root.iterdir()) == ["artifacts", "catalogue.duckdb"]


def test_a_huge_result_stops_at_the_memory_limit(filled) -> None:
    outcome = run_measured(filled.root, HUGE_RESULT, "100MB")
    assert outcome["error"].startswith("QueryMemoryError: the query was stopped: its result grew larger than "
                                       "its limit of 100 MB"), outcome
    assert outcome["peak_above_base_bytes"] < 400e6, outcome


def test_the_cli_says_the_memory_limit_in_one_line(filled) -> None:
    result = modelsci("sql", DISTINCT, "--memory-limit", "150MB", catalogue_dir=filled.root, check=False)
    assert "it needed more memory than its limit of 150 MB" in one_error_line(result)


def test_queries_within_the_limits_answer(filled) -> None:
    table = filled.sql("SELECT count(*) AS n FROM range(100000) a, range(100) b", timeout=30, memory_limit="100MB")
    assert table.to_pylist() == [{"n": 10_000_000}]
    rows = filled.sql("SELECT range AS v FROM range(200000)", memory_limit="50MB")  # several fetched batches
    assert rows.num_rows == 200_000 and rows.column("v").to_pylist()[-1] == 199_999


def test_the_defaults_are_60_s_and_a_quarter_of_the_machine(monkeypatch) -> None:
    monkeypatch.delenv("MODELSCI_SQL_TIMEOUT", raising=False)
    monkeypatch.delenv("MODELSCI_SQL_MEMORY_LIMIT", raising=False)
    assert ReaderLimits.resolve() == ReaderLimits(DEFAULT_TIMEOUT_S, machine_memory() // 4)
    assert DEFAULT_TIMEOUT_S == 60
    monkeypatch.setenv("MODELSCI_SQL_TIMEOUT", "5")
    monkeypatch.setenv("MODELSCI_SQL_MEMORY_LIMIT", "1.5GiB")
    assert ReaderLimits.resolve() == ReaderLimits(5.0, int(1.5 * 2**30))
    assert ReaderLimits.resolve(7, "10%") == ReaderLimits(7.0, machine_memory() // 10)  # arguments win
    assert ReaderLimits.resolve(memory_limit=123_456_789).memory_bytes == 123_456_789


@pytest.mark.parametrize(("timeout", "memory_limit"), [
    (0, None), (-1, None), (float("nan"), None), (float("inf"), None), ("soon", None),
    (None, "2"), (None, "0MB"), (None, "-5GB"), (None, "lots"), (None, "1 parsec"), (None, 0), (None, True), (True, None),
])
def test_a_limit_that_is_not_a_positive_amount_is_refused(filled, timeout, memory_limit) -> None:
    with pytest.raises(ReaderLimitSettingError, match="must be a positive"):
        filled.sql("SELECT 1", timeout=timeout, memory_limit=memory_limit)


JUNK_AS_OF = ["²", "١", "", "   ", "sha256:", "zz", "-1", "1e+3", "1.5", "sha256:xyz", "0x1f", "1; DROP"]


@pytest.mark.parametrize("as_of", JUNK_AS_OF)
def test_junk_as_of_is_refused(filled, as_of) -> None:
    with pytest.raises(catalogue.UnknownCommitError, match="is not a commit: give its seq"):
        filled.sql("SELECT 1", as_of=as_of)
    with pytest.raises(catalogue.UnknownCommitError, match="is not a commit: give its seq"):
        filled.findings(as_of=as_of)


@pytest.mark.parametrize("as_of", ["²", "", "sha256:xyz"])
def test_the_cli_refuses_junk_as_of_in_one_line(filled, as_of) -> None:
    result = modelsci("sql", "SELECT count(*) FROM findings", "--as-of", as_of, catalogue_dir=filled.root,
                      check=False)
    assert f"error: {as_of!r} is not a commit: give its seq (a number)" in one_error_line(result)


def test_a_real_as_of_still_answers(filled) -> None:
    filled.commit(accuracy_bundle(0.7, None, seed=1))
    head = filled.head()
    assert head is not None and head.seq == 2
    for ref in ("1", head.id[:15], head.id[7:20].upper()):
        n = filled.sql("SELECT count(*) AS n FROM findings", as_of=ref).column("n")[0].as_py()
        assert n == (1 if ref == "1" else 2)


@pytest.mark.parametrize(("args", "expected"), [
    (["SELEC 1"], 'could not parse the SQL: Parser Error: syntax error at or near "SELEC"'),
    (["SELECT nope FROM findings"], 'Binder Error: Referenced column "nope" not found'),
    (["SELECT CAST(CASE WHEN range > 100000 THEN 'x' ELSE '1' END AS INT) FROM range(200000)"],
     "Conversion Error: Could not convert string 'x' to INT32"),  # met while fetching batches
    (["SELECT 1", "--memory-limit", "2"], "the query memory limit must be a positive size with a unit"),
    (["SELECT 1", "--memory-limit", "½GB"], "the query memory limit must be a positive size with a unit"),
])
def test_other_junk_gets_one_line(filled, args, expected) -> None:
    result = modelsci("sql", *args, catalogue_dir=filled.root, check=False)
    assert expected in one_error_line(result)
