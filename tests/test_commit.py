"""Committing bundles: versions, replication judgments, as-of, refusals that change nothing."""

from __future__ import annotations

import inspect
import json
import math
import re

import duckdb
import pyarrow as pa
import pytest

from modelsci import catalogue
from modelsci.catalogue import landing
from modelsci.catalogue.integrity import check
from modelsci.schemas import FindingLink, ResultBundle
from tests.bundles import rerun, verification_of
from tests.conftest import accuracy_bundle, modelsci, toy_analysis, toy_model, toy_run

ALL_TABLES = ("models", "datasets", "analyses", "runs", "findings", "finding_links", "artifacts", "commits")


def snapshot(cat: catalogue.Catalogue) -> dict[str, list[dict]]:
    return {t: cat.sql(f"SELECT * FROM {t} ORDER BY ALL").to_pylist() for t in ALL_TABLES}


def test_two_bundles_with_one_key_make_version_two_and_as_of_shows_version_one(cat) -> None:
    first = cat.commit(accuracy_bundle(0.90, (0.85, 0.95), seed=0), message="first")
    second = cat.commit(rerun(0.91, (0.86, 0.96), 1), message="second")
    assert (first.seq, second.seq) == (1, 2)

    current = cat.sql("SELECT version, value, status FROM findings_current").to_pylist()
    assert current == [{"version": 2, "value": 0.91, "status": "current"}]
    every = cat.sql("SELECT version, status FROM findings ORDER BY version").to_pylist()
    assert every == [{"version": 1, "status": "superseded"}, {"version": 2, "status": "current"}]
    links = cat.sql("""SELECT s.version AS src, d.version AS dst FROM finding_links l
                       JOIN findings s ON s.id = l.src_id JOIN findings d ON d.id = l.dst_id
                       WHERE relation = 'supersedes'""").to_pylist()
    assert links == [{"src": 2, "dst": 1}]

    as_of = cat.sql("SELECT version, status FROM findings_current", as_of=first.id).to_pylist()
    assert as_of == [{"version": 1, "status": "current"}]
    assert cat.sql("SELECT count(*) AS n FROM finding_links", as_of=first.id[:20]).to_pylist() == [{"n": 0}]
    assert cat.sql("SELECT status FROM findings", as_of="1").to_pylist() == [{"status": "current"}]
    assert check(cat).ok


def test_rerun_inside_the_ci_replicates_and_far_outside_contradicts(cat) -> None:
    cat.commit(accuracy_bundle(0.90, (0.85, 0.95), seed=0))
    cat.commit(rerun(0.93, (0.89, 0.97), 1))  # inside the first CI
    cat.commit(rerun(0.50, (0.45, 0.55), 2))  # far outside
    judged = cat.sql("""SELECT s.version AS v, relation, evidence FROM finding_links l
                        JOIN findings s ON s.id = l.src_id
                        WHERE relation IN ('replicates', 'contradicts') ORDER BY v""").to_pylist()
    assert [(j["v"], j["relation"]) for j in judged] == [(2, "replicates"), (3, "contradicts")]
    evidence = json.loads(judged[1]["evidence"])
    assert math.isclose(evidence["difference"], 0.50 - 0.93)
    assert evidence["previous_ci"] == [0.89, 0.97] and evidence["between"] == "versions"

    contradicted = cat.findings(contradicted=True).to_pylist()
    assert [(c["version"], c["contradicts_version"]) for c in contradicted] == [(3, 2)]
    out = modelsci("findings", "--contradicted", "--format", "json", catalogue_dir=cat.root).stdout
    assert [row["value"] for row in json.loads(out)] == [0.5]


def test_without_cis_only_equal_values_replicate_and_a_declared_tolerance_wins(cat) -> None:
    cat.commit(accuracy_bundle(0.5, None, seed=0))
    cat.commit(rerun(0.5, None, 1))
    cat.commit(rerun(0.5000001, None, 2))
    tolerant = toy_analysis(version="2", tolerance=0.01)
    cat.commit(rerun(0.505, None, 3, analysis=tolerant))
    relations = cat.sql("""SELECT relation FROM finding_links l JOIN findings s ON s.id = l.src_id
                           WHERE relation <> 'supersedes' ORDER BY s.version""").column("relation").to_pylist()
    assert relations == ["replicates", "contradicts", "replicates"]


def test_same_run_again_is_not_judged_and_same_bundle_again_commits_nothing(cat) -> None:
    bundle = accuracy_bundle(0.9, (0.8, 1.0))
    assert cat.commit(bundle) is not None
    assert cat.commit(bundle) is None
    assert cat.sql("SELECT count(*) AS n FROM commits").to_pylist() == [{"n": 1}]


def test_history_lists_every_version_with_its_judgment(cat) -> None:
    cat.commit(accuracy_bundle(0.90, (0.85, 0.95), seed=0))
    cat.commit(rerun(0.20, (0.15, 0.25), 1))
    cat.commit(accuracy_bundle(0.90, (0.85, 0.95), seed=1))  # another seed: another key, not in this history
    first_id = cat.sql("SELECT id FROM findings WHERE version = 1 AND seed = 0").column("id")[0].as_py()
    rows = cat.history(first_id).to_pylist()
    assert [(r["version"], r["status"], r["judgment"]) for r in rows] == [
        (1, "superseded", None), (2, "current", "contradicts")]
    out = json.loads(modelsci("history", first_id[:16], "--format", "json", catalogue_dir=cat.root).stdout)
    assert [r["version"] for r in out] == [1, 2]


def test_artifacts_land_as_parquet_named_by_hash_and_are_queryable(cat) -> None:
    bundle = accuracy_bundle(0.9, None)
    run = bundle.runs[0]
    table = pa.table({"example": [0, 1, 2], "correct": [True, False, True]})
    bundle.add_finding(run, kind="per_example", statement="per-example correctness",
                       artifacts={"correct": table})
    cat.commit(bundle)
    [artifact] = cat.sql("SELECT * FROM artifacts").to_pylist()
    assert artifact["path"] == f"artifacts/{artifact['sha256']}.parquet"
    assert artifact["rows"] == 3
    assert cat.sql(f"SELECT * FROM '{artifact['path']}' ORDER BY example").equals(table)
    shown = cat.show(artifact["finding_id"][:20])
    assert shown["table"] == "findings" and shown["artifacts"][0]["name"] == "correct"


def bundle_with_missing_model() -> ResultBundle:
    bundle = accuracy_bundle(0.9, None, model=toy_model(seed=7))  # a model the catalogue lacks
    bundle.models = []
    return bundle


def bundle_with_malformed_metric() -> ResultBundle:
    bundle = accuracy_bundle(0.9, None)
    bundle.findings[0].value = "high"  # type: ignore[assignment]
    return bundle


# add_finding refuses non-finite numbers itself (see below); these set them afterwards, as a
# hand-made or foreign bundle could.
def bundle_with_nan() -> ResultBundle:
    bundle = accuracy_bundle(0.9, None)
    bundle.findings[0].value = float("nan")
    return bundle


def bundle_with_inf_ci() -> ResultBundle:
    bundle = accuracy_bundle(0.9, (0.1, 0.95))
    bundle.findings[0].ci_high = float("inf")
    return bundle


def bundle_with_nan_in_metrics() -> ResultBundle:
    bundle = accuracy_bundle(0.9, None)
    bundle.findings[0].metrics = {"budget": float("nan")}
    return bundle


@pytest.mark.parametrize(("value", "ci", "metrics"), [
    (float("nan"), None, None), (0.5, (0.1, float("inf")), None), (0.5, None, {"r2": float("-inf")})])
def test_add_finding_refuses_non_finite_numbers(value, ci, metrics) -> None:
    bundle = accuracy_bundle(0.9, None)
    with pytest.raises(ValueError, match="must be finite"):
        bundle.add_finding(bundle.runs[0], kind="other", statement="s", value=value, ci=ci, metrics=metrics)


def bundle_with_dangling_link() -> ResultBundle:
    bundle = accuracy_bundle(0.9, None)
    bundle.links.append(FindingLink(src_id=bundle.findings[0].id, dst_id="sha256:nowhere", relation="extends"))
    return bundle


def bundle_with_unknown_relation() -> ResultBundle:
    bundle = accuracy_bundle(0.9, None)
    bundle.links.append(FindingLink(src_id=bundle.findings[0].id, dst_id=bundle.findings[0].id,
                                    relation="refutes"))  # type: ignore[arg-type]
    return bundle


def bundle_with_two_findings_of_one_key() -> ResultBundle:
    bundle = accuracy_bundle(0.9, None)
    bundle.add_finding(bundle.runs[0], kind="accuracy", statement="again", value=0.1)
    return bundle


def bundle_with_forged_key() -> ResultBundle:
    bundle = accuracy_bundle(0.9, None)
    bundle.findings[0].subject = "changed after the key was computed"
    return bundle


def bundle_with_finding_of_another_seed() -> ResultBundle:
    bundle = accuracy_bundle(0.9, None, seed=0)
    bundle.runs[0].seed = 1  # the run says seed 1, its finding was keyed with seed 0
    return bundle


def bundle_with_forged_replication_key() -> ResultBundle:
    bundle = accuracy_bundle(0.9, None)
    bundle.findings[0].replication_key = accuracy_bundle(0.9, None, subject="other").findings[0].replication_key
    return bundle


def bundle_with_verification_of_an_unknown_run() -> ResultBundle:
    bundle = accuracy_bundle(0.9, None)
    bundle.runs[0].verifies_run_id = "run-nowhere"
    return bundle


def bundle_with_finding_of_another_analysis() -> ResultBundle:
    bundle = accuracy_bundle(0.9, None)
    bundle.findings[0].analysis_id = "evaluation.other@1"
    return bundle


def bundle_with_run_of_unknown_analysis() -> ResultBundle:
    model = toy_model()
    run = toy_run(model, toy_analysis(version="9"))
    return ResultBundle(models=[model], runs=[run])


@pytest.mark.parametrize(("make", "message"), [
    (bundle_with_missing_model, r"\.model_id names model sha256:\w+, which is neither in the bundle"),
    (bundle_with_malformed_metric, r"findings: row sha256:\w+ is malformed: value: Input should be a valid number"),
    (bundle_with_nan, r"findings: row sha256:\w+ has value = nan, a finite number or null is required"),
    (bundle_with_inf_ci, r"has ci_high = inf, a finite number or null is required"),
    (bundle_with_nan_in_metrics, r"has metrics that is not finite JSON"),
    (bundle_with_dangling_link, r"finding_links\.dst_id names finding sha256:nowhere"),
    (bundle_with_unknown_relation, r"has relation = 'refutes'; expected one of supersedes, replicates"),
    (bundle_with_two_findings_of_one_key, r"share one key .* in one bundle"),
    (bundle_with_forged_key, r"key_id sha256:\w+ does not match its key fields"),
    (bundle_with_finding_of_another_seed, r"finding sha256:\w+: seed 0 is not its run's seed 1"),
    (bundle_with_forged_replication_key, r"replication_key sha256:\w+ does not match its key fields"),
    (bundle_with_verification_of_an_unknown_run, r"runs\.verifies_run_id names run run-nowhere, which is neither"),
    (bundle_with_finding_of_another_analysis,
     r"analysis_id 'evaluation.other@1' is not a version of analysis_name 'evaluation.performance'"),
    (bundle_with_run_of_unknown_analysis, r"runs\.analysis_id names analysis evaluation\.performance@9"),
])
def test_bad_bundles_get_a_clear_error_and_leave_the_catalogue_unchanged(cat, make, message) -> None:
    cat.commit(accuracy_bundle(0.7, (0.6, 0.8), seed=5))
    before = snapshot(cat)
    with pytest.raises(catalogue.BundleError, match=message):
        cat.commit(make())
    assert snapshot(cat) == before
    assert check(cat).ok


def test_links_the_bundle_gives_land_beside_the_derived_ones(cat) -> None:
    base = accuracy_bundle(0.9, None)
    cat.commit(base)
    other = accuracy_bundle(0.4, None, subject="class 1")
    other.links.append(FindingLink(src_id=other.findings[0].id, dst_id=base.findings[0].id,
                                   relation="extends", evidence={"why": "per-class view"}))
    cat.commit(other)
    [link] = cat.sql("SELECT relation, evidence FROM finding_links").to_pylist()
    assert link["relation"] == "extends" and json.loads(link["evidence"]) == {"why": "per-class view"}


def test_a_writing_block_lands_each_commit_whole_and_on_its_own(cat) -> None:
    with cat.writing():
        first = cat.commit(accuracy_bundle(0.90, (0.85, 0.95), seed=0))
        with pytest.raises(catalogue.BundleError, match="names model"):
            cat.commit(bundle_with_missing_model())
        second = cat.commit(rerun(0.93, (0.89, 0.97), 1))
        with pytest.raises(RuntimeError, match="held for writing"):
            cat.sql("SELECT 1")
    assert (first.seq, second.seq) == (1, 2)
    rows = cat.sql("""SELECT f.version, l.relation FROM findings f LEFT JOIN finding_links l
                      ON l.src_id = f.id AND l.relation <> 'supersedes' ORDER BY f.version""").to_pylist()
    assert rows == [{"version": 1, "relation": None}, {"version": 2, "relation": "replicates"}]
    assert cat.sql("SELECT count(*) AS n FROM findings", as_of=first.id).to_pylist() == [{"n": 1}]
    assert check(cat).ok


def memo_sequence() -> list[ResultBundle]:
    """Bundles whose landing reads every answer a writing block's memo gives, after two
    commits that land before the block: held models, runs and analyses (with a tolerance),
    key versions and other seeds from before and from inside the block (a seed lower than the
    first among them), links to a stored finding, artifacts, a verification run."""
    tolerant = toy_analysis(version="2", tolerance=0.01)
    again = rerun(0.93, (0.89, 0.97), 1)
    tolerant_seed = accuracy_bundle(0.505, None, seed=4, analysis=tolerant, subject="tolerant")
    tolerant_seed.analyses = []  # its tolerance must come from the store
    per_class = accuracy_bundle(0.4, None, subject="class 1")
    per_class.add_finding(per_class.runs[0], kind="per_example", statement="per-example correctness",
                          artifacts={"correct": pa.table({"example": [0, 1], "correct": [True, False]})})
    first = accuracy_bundle(0.90, (0.85, 0.95), seed=0)
    per_class.links.append(FindingLink(src_id=per_class.findings[0].id, dst_id=first.findings[0].id,
                                       relation="extends"))
    lower_seed = accuracy_bundle(0.7, None, seed=1, analysis=tolerant, subject="tolerant")
    lower_seed.analyses = []
    return [first, accuracy_bundle(0.5, None, seed=3, analysis=tolerant, subject="tolerant"),
            again, again, bundle_with_missing_model(), accuracy_bundle(0.2, (0.15, 0.25), seed=2),
            tolerant_seed, per_class, accuracy_bundle(0.41, None, seed=5, subject="class 1"), lower_seed,
            verification_of(first, 0.9, (0.85, 0.95))]


def land_all(cat: catalogue.Catalogue, bundles: list[ResultBundle]) -> list[int | str | None]:
    landed: list[int | str | None] = []
    for bundle in bundles:
        try:
            commit = cat.commit(bundle)
            landed.append(commit and commit.seq)
        except catalogue.BundleError as exc:
            landed.append(str(exc))
    return landed


def comparable(cat: catalogue.Catalogue, table: str) -> list[dict]:
    """A table's rows less what depends on the time of a commit (its id and those naming it)."""
    if table == "commits":
        return cat.sql("SELECT * EXCLUDE (id, parent_id, created_at) FROM commits ORDER BY seq").to_pylist()
    return cat.sql(f"SELECT * EXCLUDE (commit_id) FROM {table} ORDER BY ALL").to_pylist()


def test_a_writing_block_lands_what_commits_one_by_one_land(tmp_path) -> None:
    one_by_one = catalogue.open(tmp_path / "one-by-one", create=True)
    expected = land_all(one_by_one, memo_sequence())
    assert expected[2:5] == [3, None, expected[4]] and "names model" in expected[4] and expected[-1] == 9

    held = catalogue.open(tmp_path / "held", create=True)
    bundles = memo_sequence()
    landed = land_all(held, bundles[:2])
    with held.writing():
        landed += land_all(held, bundles[2:])
    assert landed == expected

    for table in ALL_TABLES:
        assert comparable(held, table) == comparable(one_by_one, table), table
    judged = held.sql("""SELECT s.subject, s.seed, s.version, l.relation, d.seed AS to_seed, d.version AS to_version
                         FROM finding_links l JOIN findings s ON s.id = l.src_id JOIN findings d ON d.id = l.dst_id
                         WHERE relation <> 'supersedes' ORDER BY ALL""").to_pylist()
    assert [tuple(j.values()) for j in judged] == [
        ("", 0, 2, "replicates", 0, 1),  # a version
        ("", 0, None, "replicates", 0, 1),  # the verification, of the version its run made
        ("", 2, 1, "contradicts", 0, 2),  # a seed, against the first seed's current version
        ("class 1", 0, 1, "extends", 0, 1), ("class 1", 5, 1, "contradicts", 0, 1),
        ("tolerant", 3, 1, "contradicts", 1, 1), ("tolerant", 4, 1, "contradicts", 1, 1),  # seed 1 came later
        ("tolerant", 4, 1, "replicates", 3, 1)]  # within the tolerance the store held
    assert check(held).ok


def test_a_writing_block_sees_commits_made_beside_it_in_its_process(tmp_path) -> None:
    """DuckDB shares one database between the connections of a process: another catalogue
    object can commit while a block holds the lock, and the block's memo must notice."""
    block, beside = catalogue.open(tmp_path / "cat", create=True), catalogue.open(tmp_path / "cat", create=True)
    other_model = toy_model(seed=7)
    with block.writing():
        block.commit(accuracy_bundle(0.9, None))
        beside.commit(accuracy_bundle(0.4, None, model=other_model, subject="x"))
        again = block.commit(rerun(0.4, None, 1, model=other_model, subject="x"))
    assert again.seq == 3
    assert block.sql("SELECT subject, version, status FROM findings ORDER BY ALL").to_pylist() == [
        {"subject": "", "version": 1, "status": "current"},
        {"subject": "x", "version": 1, "status": "superseded"},
        {"subject": "x", "version": 2, "status": "current"}]
    assert check(block).ok


def test_check_guards_key_bits_and_keys(cat) -> None:
    cat.commit(accuracy_bundle(0.90, (0.85, 0.95), seed=0))
    cat.commit(rerun(0.20, (0.15, 0.25), 1))  # finds version 1 through the key_bits
    assert check(cat).ok
    with duckdb.connect(str(cat.db_path)) as con:
        con.execute("UPDATE store.findings SET key_bits = key_bits + 1 WHERE version = 1")
    assert any("key_bits do not match its replication key" in p for p in check(cat).problems)
    with duckdb.connect(str(cat.db_path)) as con:
        con.execute("UPDATE store.findings SET key_bits = key_bits - 1 WHERE version = 1")
        con.execute("UPDATE store.findings SET seed = 3 WHERE version = 2")
    assert sorted(p.split(":")[0] for p in check(cat).problems) == [
        "finding whose key_id or replication_key does not match its key fields", "finding whose seed is not its run's"]


def test_the_arrow_tables_landing_reads_by_name_are_named_unlike_any_catalogue_relation(cat) -> None:
    """DuckDB reads a catalogue table or view before a Python variable of the same name."""
    read = set(re.findall(r"(?:FROM|JOIN) (landing\w*)", inspect.getsource(landing)))
    assert {"landing", "landing_findings", "landing_runs", "landing_superseded"} <= read
    with duckdb.connect(str(cat.db_path), read_only=True) as con:
        relations = {name for (name,) in con.execute(
            "SELECT table_name FROM duckdb_tables() UNION SELECT view_name FROM duckdb_views()").fetchall()}
    assert "findings" in relations and not read & relations
