"""Catalogue benchmarks: commit throughput and current-findings lookups, against raw DuckDB.

1. Commit 100,000 findings in bundles of 1,000 through ``Catalogue.commit``, twice: with the
   lock taken per commit (how ``modelsci run`` lands runs, so that readers get in between) and
   inside one ``Catalogue.writing()`` block (how ``modelsci import`` lands an export). In the
   same run, insert the same findings rows as Arrow tables into a same-schema DuckDB table, one
   transaction per bundle: on a held connection, with DuckDB's default threads and with one
   thread as modelsci's writer runs (the raw peers of the writing block), and opening the file
   per bundle (the raw peer of the per-commit lock). Also the floor under any commit: the rows
   it must add (the findings, their run, the commit) inserted into the catalogue's own tables
   with no reads or checks. Reports findings/s and the ratios (target >= 0.5 against the raw
   peer), and the part of a commit spent turning the bundle into checked Arrow tables.
2. On 1,000,000 findings (1,000 models x 1,000 keys, a tenth of them with a second version),
   ``findings_current`` for one model through the API against the same query on a raw DuckDB
   connection. Reports medians and the ratio (target <= 1.2).

Usage: python benchmarks/bench_catalogue.py [--findings 100000] [--bundle 1000] [--big 1000000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import duckdb
import pyarrow as pa

from modelsci import catalogue
from modelsci.catalogue.landing import bundle_tables
from modelsci.catalogue.schema import KEY_BITS_SQL, TABLES, key_bits
from modelsci.schemas import Analysis, Dataset, ModelInstance, ResultBundle, Run, params_hash


def make_bundles(n_findings: int, per_bundle: int) -> list[ResultBundle]:
    model = ModelInstance(id="sha256:" + "a" * 64, source_uri="bench://model")
    dataset = Dataset(id="sha256:" + "b" * 64, source_uri="bench://data", rows=1000)
    analysis = Analysis(id="bench.importance@1", name="bench.importance", version="1",
                        family="attribution", pillar="explore")
    bundles = []
    for b in range(n_findings // per_bundle):
        params = {"bundle": b}
        run = Run(id=f"run-{b}", model_id=model.id, dataset_id=dataset.id, analysis_id=analysis.id,
                  params=params, params_hash=params_hash(params), status="succeeded")
        bundle = ResultBundle(models=[model], datasets=[dataset], analyses=[analysis], runs=[run])
        for i in range(per_bundle):
            bundle.add_finding(run, kind="importance", subject=f"feature {i}", statement="bench",
                               value=i / per_bundle, ci=(i / per_bundle - 0.01, i / per_bundle + 0.01), n=100)
        bundles.append(bundle)
    return bundles


def bench_commit(n_findings: int, per_bundle: int, workdir: Path) -> dict[str, float]:
    bundles = make_bundles(n_findings, per_bundle)
    to_tables_s = []
    for bundle in bundles[:20]:
        start = time.perf_counter()
        bundle_tables(bundle)
        to_tables_s.append(time.perf_counter() - start)

    per_commit = catalogue.open(workdir / "per-commit", create=True)
    start = time.perf_counter()
    for bundle in bundles:
        per_commit.commit(bundle)
    per_commit_s = time.perf_counter() - start

    held = catalogue.open(workdir / "held", create=True)
    start = time.perf_counter()
    with held.writing():
        for bundle in bundles:
            held.commit(bundle)
    held_s = time.perf_counter() - start

    # The raw peers: the same findings rows as Arrow, inserted one bundle per transaction, read
    # by DuckDB from a local variable (its quickest way in for Arrow, and the one modelsci uses).
    arrow = [bundle_tables(b)["findings"] for b in bundles]
    cols = ", ".join(f'"{c.name}" {c.sql_type}' for c in TABLES["findings"].columns)

    def raw_insert(con: duckdb.DuckDBPyConnection, batch: pa.Table) -> None:
        con.execute("BEGIN")
        con.execute("INSERT INTO findings SELECT * FROM batch")
        con.execute("COMMIT")

    def raw_connect(path: Path, threads: int | None) -> duckdb.DuckDBPyConnection:
        return duckdb.connect(str(path), config={"threads": threads} if threads else {})

    def raw_held(path: Path, threads: int | None) -> float:
        con = raw_connect(path, threads)
        con.execute(f"CREATE TABLE findings ({cols}, PRIMARY KEY (id))")
        start = time.perf_counter()
        for batch in arrow:
            raw_insert(con, batch)
        con.close()  # the writing block's time includes its closing checkpoint too
        return time.perf_counter() - start

    raw_s = raw_held(workdir / "raw.duckdb", None)
    # modelsci's writer runs DuckDB on one thread, which makes small statements faster: this
    # peer is given the same setting, so that its ratio shows the catalogue's own cost
    raw_one_thread_s = raw_held(workdir / "raw-one-thread.duckdb", 1)

    raw_connect(workdir / "raw-reopen.duckdb", 1).execute(f"CREATE TABLE findings ({cols}, PRIMARY KEY (id))").close()
    start = time.perf_counter()
    for batch in arrow:
        con = raw_connect(workdir / "raw-reopen.duckdb", 1)
        raw_insert(con, batch)
        con.close()
    raw_reopen_s = time.perf_counter() - start

    # The floor of any commit: the rows it must add (findings, their run, the commit) inserted
    # into the catalogue's own tables, as the writer's connection is set, with no reads, checks
    # or versions.
    floor = catalogue.open(workdir / "floor", create=True)
    con = raw_connect(floor.db_path, 1)
    tables = [bundle_tables(b) for b in bundles]
    start = time.perf_counter()
    for seq, t in enumerate(tables, start=1):
        commit_id = f"sha256:{seq:064d}"
        stamp = {"commit_id": commit_id, "commit_seq": seq}
        key_ids = t["findings"].column("key_id").to_pylist()
        replication_keys = t["findings"].column("replication_key").to_pylist()
        # (named unlike the catalogue's views: a table or view of the name would be read instead)
        landing_findings = _stamped(t["findings"], stamp).append_column(  # noqa: F841 - read by the SQL
            "key_bits", pa.array([key_bits(k) for k in replication_keys], pa.int64()))
        landing_runs = _stamped(t["runs"], stamp)  # noqa: F841 - read by the SQL
        con.execute("BEGIN")
        con.execute("INSERT INTO store.findings BY NAME SELECT * FROM landing_findings")
        con.execute("INSERT INTO store.runs BY NAME SELECT * FROM landing_runs")
        con.execute("INSERT INTO store.commits VALUES (?, ?, NULL, now()::TIMESTAMP, 'bench', '', 0, 0, 0, 1, ?, 0, 0)",
                    [commit_id, seq, len(key_ids)])
        con.execute("COMMIT")
    con.close()
    floor_s = time.perf_counter() - start
    for cat in (per_commit, held, floor):
        assert cat.sql("SELECT count(*) AS n FROM findings").column("n")[0].as_py() == n_findings
    return {"findings": n_findings, "bundle": per_bundle,
            "writing_block_findings_per_s": n_findings / held_s,
            "raw_findings_per_s": n_findings / raw_s,
            "ratio_writing_block_over_raw": raw_s / held_s,
            "raw_one_thread_findings_per_s": n_findings / raw_one_thread_s,
            "ratio_writing_block_over_raw_one_thread": raw_one_thread_s / held_s,
            "per_commit_lock_findings_per_s": n_findings / per_commit_s,
            "raw_reopen_findings_per_s": n_findings / raw_reopen_s,
            "ratio_per_commit_lock_over_raw_reopen": raw_reopen_s / per_commit_s,
            "ratio_per_commit_lock_over_raw": raw_s / per_commit_s,
            "floor_findings_per_s": n_findings / floor_s,
            "ratio_floor_over_raw": raw_s / floor_s,
            "ratio_floor_over_raw_one_thread": raw_one_thread_s / floor_s,
            "ms_per_bundle_to_checked_arrow": statistics.median(to_tables_s) * 1e3,
            "ms_per_bundle_writing_block": held_s / len(bundles) * 1e3,
            "ms_per_bundle_raw": raw_s / len(bundles) * 1e3}


def _stamped(table: pa.Table, stamp: dict[str, object]) -> pa.Table:
    """``table`` with each of ``stamp``'s columns set to its value on every row."""
    table = table.drop_columns([c for c in stamp if c in table.column_names])
    for name, value in stamp.items():
        table = table.append_column(name, pa.repeat(pa.scalar(value), table.num_rows))
    return table


def build_big(path: Path, n: int) -> str:
    """A catalogue of ``n`` findings written straight into the store (setup, not measured)."""
    cat = catalogue.open(path, create=True)
    models = 1000
    per_model = n // models
    con = duckdb.connect(str(cat.db_path))
    con.execute("BEGIN")
    con.execute("INSERT INTO store.commits VALUES ('sha256:c1', 1, NULL, now()::TIMESTAMP, 'bench', "
                "'setup', 0, 0, 0, 0, 0, 0, 0)")
    con.execute(f"""INSERT INTO store.models (id, source_uri, tags, card, commit_id, commit_seq)
        SELECT 'sha256:m' || lpad(i::VARCHAR, 6, '0'), 'bench://' || i, '[]', '{{}}', 'sha256:c1', 1
        FROM range({models}) t(i)""")
    # a tenth of the keys have two versions: version 1 superseded, version 2 current
    con.execute(f"""INSERT INTO store.findings BY NAME
        SELECT 'sha256:f' || m || '-' || k || '-' || v AS id, 'sha256:' || sha256(m || '-' || k) AS key_id,
               'sha256:' || sha256(m || '-' || k) AS replication_key, 0 AS seed,
               'sha256:m' || lpad(m::VARCHAR, 6, '0') AS model_id, NULL AS dataset_id,
               'bench.importance@1' AS analysis_id, 'bench.importance' AS analysis_name, 'sha256:p' AS params_hash,
               'importance' AS kind, 'feature ' || k AS subject, 'run' AS run_id, 'bench' AS statement,
               random() AS value, 100 AS n, false AS exact, '{{}}' AS metrics, v AS version,
               'sha256:c1' AS commit_id, 1 AS commit_seq,
               CASE WHEN v = 1 AND k % 10 = 0 THEN 1 END AS superseded_seq, {KEY_BITS_SQL} AS key_bits
        FROM range({models}) a(m), range({per_model}) b(k), range(1, 3) c(v)
        WHERE v = 1 OR k % 10 = 0
        LIMIT {n}""")
    con.execute("COMMIT")
    con.close()
    return "sha256:m000500"


def bench_current(n: int, workdir: Path, repeats: int = 31) -> dict[str, float]:
    model = build_big(workdir / "big", n)
    cat = catalogue.open(workdir / "big", create=True)
    total = cat.sql("SELECT count(*) AS n FROM findings").column("n")[0].as_py()
    query = "SELECT * FROM findings_current WHERE model_id = $m"

    def api() -> int:
        return cat.query(query, {"m": model}).num_rows

    con = duckdb.connect(str(cat.db_path), read_only=True)

    def raw() -> int:
        return con.sql(query, params={"m": model}).to_arrow_table().num_rows

    def raw_with_connect() -> int:
        fresh = duckdb.connect(str(cat.db_path), read_only=True)
        try:
            return fresh.sql(query, params={"m": model}).to_arrow_table().num_rows
        finally:
            fresh.close()

    times: dict[str, list[float]] = {"api": [], "raw": [], "raw_with_connect": []}
    rows = set()
    for _ in range(repeats):
        for name, fn in (("api", api), ("raw", raw), ("raw_with_connect", raw_with_connect)):
            start = time.perf_counter()
            rows.add(fn())
            times[name].append(time.perf_counter() - start)
    con.close()
    assert len(rows) == 1, rows
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"findings": total, "rows_returned": rows.pop(), "api_ms": med["api"] * 1e3,
            "raw_ms": med["raw"] * 1e3, "raw_with_connect_ms": med["raw_with_connect"] * 1e3,
            "ratio_api_over_raw": med["api"] / med["raw"],
            "ratio_api_over_raw_with_connect": med["api"] / med["raw_with_connect"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--findings", type=int, default=100_000)
    parser.add_argument("--bundle", type=int, default=1_000)
    parser.add_argument("--big", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = {"commit": bench_commit(args.findings, args.bundle, Path(tmp)),
                   "findings_current": bench_current(args.big, Path(tmp))}
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
