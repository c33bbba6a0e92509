"""Seeds are replications, not versions; verification runs are judged, never current."""

from __future__ import annotations

import json
import math
import statistics

import duckdb
import pytest
from scipy import stats

from modelsci import catalogue
from modelsci.catalogue.integrity import check
from modelsci.catalogue.schema import _t_975
from modelsci.executors.execution import Reporter
from modelsci.executors.local import run_queue_locally
from modelsci.planner import submit
from modelsci.schemas import ResultBundle
from tests.bundles import rerun, verification_of
from tests.conftest import accuracy_bundle, modelsci, toy_analysis, toy_dataset, toy_model, toy_run
from tests.models import breast_cancer_skops, write_manifest


def links(cat: catalogue.Catalogue) -> list[tuple]:
    """(src seed, src version, relation, dst seed, dst version) of every judgment, sorted."""
    rows = cat.sql("""SELECT s.seed, s.version, l.relation, d.seed AS to_seed, d.version AS to_version FROM finding_links l
                      JOIN findings s ON s.id = l.src_id JOIN findings d ON d.id = l.dst_id
                      WHERE l.relation IN ('replicates', 'contradicts') ORDER BY ALL""").to_pylist()
    return [tuple(r.values()) for r in rows]


def t_interval(values: list[float]) -> tuple[float, float]:
    mean, half = statistics.mean(values), stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values)
    return mean - half / math.sqrt(len(values)), mean + half / math.sqrt(len(values))


def test_each_seed_stays_current_and_is_judged_against_the_lowest_seed(cat) -> None:
    cat.commit(accuracy_bundle(0.90, (0.85, 0.95), seed=1))
    cat.commit(accuracy_bundle(0.50, (0.45, 0.55), seed=2))
    assert links(cat) == [(2, 1, "contradicts", 1, 1)]
    cat.commit(accuracy_bundle(0.92, (0.88, 0.96), seed=0))  # a lower seed, later: it becomes the first
    assert cat.sql("SELECT seed, version, status FROM findings ORDER BY seed").to_pylist() == [
        {"seed": s, "version": 1, "status": "current"} for s in (0, 1, 2)]
    assert links(cat) == [(1, 1, "replicates", 0, 1), (2, 1, "contradicts", 0, 1), (2, 1, "contradicts", 1, 1)]
    [row] = cat.sql("SELECT * FROM findings_summary").to_pylist()
    assert (row["n_seeds"], row["seeds"], row["min"], row["max"]) == (3, [0, 1, 2], 0.50, 0.92)
    assert row["mean"] == pytest.approx(statistics.mean([0.90, 0.50, 0.92]), abs=1e-12)
    assert row["std"] == pytest.approx(statistics.stdev([0.90, 0.50, 0.92]), abs=1e-12)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx(t_interval([0.90, 0.50, 0.92]), abs=1e-6)
    assert row["all_replicate"] is False and row["statement"] == "accuracy is 0.92"

    cat.commit(rerun(0.55, (0.50, 0.60), 1, seed=0))  # a new version of the first seed: the others judged again
    assert links(cat)[-2:] == [(2, 1, "contradicts", 1, 1), (2, 1, "replicates", 0, 2)]
    assert (1, 1, "contradicts", 0, 2) in links(cat) and (0, 2, "contradicts", 0, 1) in links(cat)
    [row] = cat.sql("SELECT n_seeds, mean, all_replicate FROM findings_summary").to_pylist()
    assert row["n_seeds"] == 3 and row["mean"] == pytest.approx((0.55 + 0.90 + 0.50) / 3, abs=1e-12)
    assert check(cat).ok


def test_all_replicate_is_true_only_when_every_seed_replicates_and_null_for_one_seed(cat) -> None:
    cat.commit(accuracy_bundle(0.90, (0.85, 0.95), seed=0))
    [row] = cat.sql("SELECT n_seeds, mean, std, ci_low, ci_high, all_replicate FROM findings_summary").to_pylist()
    assert row == {"n_seeds": 1, "mean": 0.90, "std": None, "ci_low": 0.85, "ci_high": 0.95, "all_replicate": None}
    cat.commit(accuracy_bundle(0.91, (0.86, 0.96), seed=4))
    cat.commit(accuracy_bundle(0.88, (0.83, 0.93), seed=7))
    [row] = cat.sql("SELECT n_seeds, ci_low, ci_high, all_replicate FROM findings_summary").to_pylist()
    assert row["all_replicate"] is True and row["n_seeds"] == 3
    assert (row["ci_low"], row["ci_high"]) == pytest.approx(t_interval([0.90, 0.91, 0.88]), abs=1e-6)
    # a seed whose value is null cannot be judged: whether all replicate is not known
    bundle = accuracy_bundle(0.0, None, seed=9)
    bundle.findings[0].value = None
    cat.commit(bundle)
    [row] = cat.sql("SELECT n_seeds, mean, all_replicate FROM findings_summary").to_pylist()
    assert row["n_seeds"] == 4 and row["all_replicate"] is None
    assert row["mean"] == pytest.approx(statistics.mean([0.90, 0.91, 0.88]), abs=1e-12)


def test_many_seeds_in_one_bundle_are_judged_and_their_t_interval_is_exact(cat) -> None:
    values = [0.80 + 0.003 * ((7 * s) % 11) for s in range(35)]  # 35 seeds: past the table of t quantiles
    bundle = ResultBundle()
    for seed, value in enumerate(values):
        one = accuracy_bundle(value, (value - 0.05, value + 0.05), seed=seed)
        bundle.extend(one)
    cat.commit(bundle)
    assert len(links(cat)) == 34 and {link[3] for link in links(cat)} == {0}
    [row] = cat.sql("SELECT n_seeds, ci_low, ci_high, all_replicate FROM findings_summary").to_pylist()
    assert row["n_seeds"] == 35 and row["all_replicate"] is True
    assert (row["ci_low"], row["ci_high"]) == pytest.approx(t_interval(values), abs=1e-7)


@pytest.mark.parametrize("df", [1, 2, 5, 29, 30, 31, 45, 100, 1000])
def test_the_t_quantile_of_the_summary_is_scipys(df) -> None:
    [(q,)] = duckdb.sql(f"SELECT {_t_975(str(df))}").fetchall()
    assert q == pytest.approx(stats.t.ppf(0.975, df), abs=3e-6)


def test_findings_lists_the_summary_by_default_and_each_seed_with_seeds(cat) -> None:
    cat.commit(accuracy_bundle(0.90, (0.85, 0.95), seed=0))
    cat.commit(accuracy_bundle(0.50, (0.45, 0.55), seed=1))
    summary = json.loads(modelsci("findings", "--format", "json", catalogue_dir=cat.root).stdout)
    assert [(r["kind"], r["n_seeds"], r["mean"], r["all_replicate"]) for r in summary] == [
        ("accuracy", 2, pytest.approx(0.70, abs=1e-12), False)]
    seeds = json.loads(modelsci("findings", "--seeds", "--format", "json", catalogue_dir=cat.root).stdout)
    assert [(r["seed"], r["value"], r["status"]) for r in seeds] == [(0, 0.90, "current"), (1, 0.50, "current")]
    contradicted = json.loads(modelsci("findings", "--contradicted", "--format", "json", catalogue_dir=cat.root).stdout)
    assert [(r["seed"], r["contradicts_seed"], r["between"]) for r in contradicted] == [(1, 0, "seeds")]


def test_a_verification_run_lands_judged_and_changes_nothing_current(cat) -> None:
    first = accuracy_bundle(0.90, (0.85, 0.95), seed=0)
    first.add_finding(first.runs[0], kind="macro_f1", statement="macro-F1 is 0.8", value=0.8, ci=(0.75, 0.85))
    cat.commit(first)
    cat.commit(accuracy_bundle(0.91, (0.86, 0.96), seed=1))
    cat.commit(rerun(0.89, (0.84, 0.94), 1))  # the first run's accuracy is now superseded
    current = cat.sql("SELECT * FROM findings_current ORDER BY id").to_pylist()
    summary = cat.sql("SELECT * FROM findings_summary ORDER BY ALL").to_pylist()

    same = verification_of(first, 0.90, (0.85, 0.95))  # reproduces accuracy, makes no macro-F1
    off = verification_of(first, 0.60, (0.55, 0.65), name="verify-again")
    cat.commit(same)
    cat.commit(off)
    assert cat.sql("SELECT * FROM findings_current ORDER BY id").to_pylist() == current
    assert cat.sql("SELECT * FROM findings_summary ORDER BY ALL").to_pylist() == summary
    assert cat.sql("SELECT run_id, version, status FROM findings WHERE status = 'verification' "
                   "ORDER BY run_id").to_pylist() == [
        {"run_id": "verify-again-run-1-0", "version": None, "status": "verification"},
        {"run_id": "verify-run-1-0", "version": None, "status": "verification"}]
    # each is judged against the finding the verified run made (version 1), not the current version
    judged = cat.verification("verify-again-run-1-0").to_pylist()
    assert [(r["kind"], r["original_value"], r["value"], r["relation"]) for r in judged] == [
        ("accuracy", 0.90, 0.60, "contradicts"), ("macro_f1", 0.8, None, None)]
    assert json.loads(judged[0]["evidence"])["between"] == "verification"
    assert [(r["kind"], r["relation"]) for r in cat.verification("verify-run-1-0").to_pylist()] == [
        ("accuracy", "replicates"), ("macro_f1", None)]
    history = cat.history(same.findings[0].id).to_pylist()
    assert [(r["version"], r["status"], r["judgment"]) for r in history] == [
        (1, "superseded", None), (2, "current", "replicates"), (None, "verification", "replicates"),
        (None, "verification", "contradicts")]
    assert check(cat).ok


@pytest.mark.parametrize(("value", "ci", "relation"), [
    (0.90 + 1e-9, (0.85, 0.95), "replicates"),  # floating-point noise
    (0.91, (0.86, 0.96), "contradicts"),  # inside the CI, but a re-run of the same seed must reproduce it
    (0.90, (0.85, 0.951), "contradicts"),  # the same value with another CI
    (0.90, None, "contradicts"),
])
def test_a_verification_must_reproduce_the_numbers_not_only_overlap(cat, value, ci, relation) -> None:
    first = accuracy_bundle(0.90, (0.85, 0.95))
    cat.commit(first)
    cat.commit(verification_of(first, value, ci))
    [judged] = cat.verification("verify-run-1-0").to_pylist()
    assert judged["relation"] == relation


def test_a_declared_tolerance_judges_verifications(cat) -> None:
    first = accuracy_bundle(0.90, (0.85, 0.95), analysis=toy_analysis(tolerance=0.02))
    cat.commit(first)
    cat.commit(verification_of(first, 0.91, None))
    cat.commit(verification_of(first, 0.93, None, name="again"))
    assert [r["relation"] for r in cat.verification("verify-run-1-0").to_pylist()] == ["replicates"]
    assert [r["relation"] for r in cat.verification("again-run-1-0").to_pylist()] == ["contradicts"]


def test_check_finds_a_verification_finding_made_current(cat) -> None:
    first = accuracy_bundle(0.90, (0.85, 0.95))
    cat.commit(first)
    cat.commit(verification_of(first, 0.9, (0.85, 0.95)))
    assert check(cat).ok
    with duckdb.connect(str(cat.db_path)) as con:
        con.execute("UPDATE store.findings SET verification = false WHERE run_id = 'verify-run-1-0'")
    problems = check(cat).problems
    assert any(p.startswith("finding key without exactly one current version") for p in problems)
    assert any(p.startswith("finding of a verification run that is not a verification finding") for p in problems)


def test_a_later_seed_without_its_judgment_is_a_problem_for_check(cat) -> None:
    cat.commit(accuracy_bundle(0.90, (0.85, 0.95), seed=0))
    cat.commit(accuracy_bundle(0.91, (0.86, 0.96), seed=1))
    with duckdb.connect(str(cat.db_path)) as con:
        con.execute("DELETE FROM store.finding_links WHERE relation = 'replicates'")
    assert [p.split(":")[0] for p in check(cat).problems] == [
        "seed's current finding not judged against the first (lowest) seed's"]


def test_two_seeds_of_kernel_shap_are_two_current_findings_per_key_and_one_summary_row(tmp_path) -> None:
    manifest = write_manifest(tmp_path / "m.yaml", str(breast_cancer_skops(tmp_path / "lr")), analyses=[
        {"name": "attribution.kernel_shap", "params": {"examples": 2, "budget": 128}, "seeds": [0, 1]}])
    cat = catalogue.open(tmp_path / "cat", create=True)
    submit(cat, manifest.read_text())
    assert run_queue_locally(cat, device="cpu", jobs=1, reporter=Reporter()).failed == []
    current = cat.sql("SELECT replication_key, seed, id, value FROM findings_current ORDER BY ALL").to_pylist()
    by_key: dict[str, dict[int, dict]] = {}
    for f in current:
        by_key.setdefault(f["replication_key"], {})[f["seed"]] = f
    assert len(by_key) > 1 and all(set(seeds) == {0, 1} for seeds in by_key.values())
    linked = {(r["src_id"], r["dst_id"]) for r in cat.sql(
        "SELECT src_id, dst_id FROM finding_links WHERE relation IN ('replicates', 'contradicts')").to_pylist()}
    judged = [seeds for seeds in by_key.values() if seeds[0]["value"] is not None]
    assert judged and all((seeds[1]["id"], seeds[0]["id"]) in linked for seeds in judged)
    summary = cat.sql("SELECT replication_key, n_seeds, mean FROM findings_summary").to_pylist()
    assert sorted(r["replication_key"] for r in summary) == sorted(by_key)
    for r in summary:
        seeds = by_key[r["replication_key"]]
        assert r["n_seeds"] == 2
        if seeds[0]["value"] is not None:
            assert r["mean"] == pytest.approx((seeds[0]["value"] + seeds[1]["value"]) / 2, abs=1e-12)
    assert check(cat).ok


def test_a_verification_of_a_run_landed_earlier_finds_its_run_in_the_store(cat) -> None:
    """The verification run landed first, its findings in a later bundle."""
    first = accuracy_bundle(0.90, (0.85, 0.95))
    cat.commit(first)
    model, analysis = toy_model(), toy_analysis()
    run = toy_run(model, analysis, run_id="verify-alone")
    run.verifies_run_id = first.runs[0].id
    cat.commit(ResultBundle(models=[model], datasets=[toy_dataset()], analyses=[analysis], runs=[run]))
    later = ResultBundle()
    later.add_finding(run, kind="accuracy", statement="accuracy is 0.9", value=0.9, ci=(0.85, 0.95))
    cat.commit(later)
    assert [(r["relation"], r["value"]) for r in cat.verification("verify-alone").to_pylist()] == [("replicates", 0.9)]
    assert check(cat).ok
