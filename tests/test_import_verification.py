"""An import verifies, never trusts: edited, misplaced or hostile exports are refused whole.

Each refusal is one line naming the problem and leaves the target catalogue exactly as it was:
the same rows in every table of the store and the same files in ``artifacts/``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import resource
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from modelsci import catalogue
from modelsci.catalogue.connection import CatalogueBusyError
from modelsci.catalogue.integrity import check
from modelsci.catalogue.landing import artifact_id
from modelsci.catalogue.transfer import ExportError, export, import_export
from modelsci.executors.execution import Reporter
from modelsci.executors.local import run_queue_locally
from modelsci.planner import submit
from modelsci.schemas import FindingLink
from modelsci.schemas.bundle import finding_id, finding_key
from modelsci.schemas.identity import sha256_file
from tests.conftest import MODELSCI, accuracy_bundle, modelsci, toy_model
from tests.data.old_catalogue import extract
from tests.models import breast_cancer_skops, write_manifest

ANSWERS = [
    "SELECT * FROM findings ORDER BY id",
    "SELECT src_id, dst_id, relation, evidence FROM finding_links ORDER BY ALL",
    "SELECT * FROM commits ORDER BY seq",
    "SELECT * FROM artifacts ORDER BY id",
    "SELECT * FROM models ORDER BY id",
    "SELECT * FROM runs ORDER BY id",
]


def make_source(root: Path) -> catalogue.Catalogue:
    """Three commits: findings (one with an artifact), a contradicting re-run, another model's
    finding that `extends` the first."""
    cat = catalogue.open(root, create=True)
    first = accuracy_bundle(0.90, (0.85, 0.95), seed=0)
    first.add_finding(first.runs[0], kind="per_example", statement="rows",
                      artifacts={"rows": pa.table({"example": [0, 1, 2], "ok": [True, True, False]})})
    # an integer value is hashed as one, and stored as a double: its id must still verify
    first.add_finding(first.runs[0], kind="count", statement="3 wrong", value=3, ci=(1, 5), n=38)
    cat.commit(first, message="first")
    cat.commit(accuracy_bundle(0.40, (0.35, 0.45), seed=1), message="contradicting rerun")
    other = accuracy_bundle(0.7, None, model=toy_model(seed=3), subject="class 1")
    other.links.append(FindingLink(src_id=other.findings[0].id, dst_id=first.findings[0].id, relation="extends"))
    cat.commit(other, message="another model")
    return cat


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path]:
    """A source catalogue and its export, made once; tests work on copies."""
    base = tmp_path_factory.mktemp("built")
    source = make_source(base / "source")
    export(source, base / "export")
    return base / "source", base / "export"


@pytest.fixture
def src(built, tmp_path) -> Path:
    """A fresh copy of the export, two folders deep (so that ``../../x`` stays in tmp_path)."""
    return Path(shutil.copytree(built[1], tmp_path / "a" / "export"))


def target(built, tmp_path: Path, kind: str) -> catalogue.Catalogue:
    """An empty catalogue, or a copy of the source catalogue (holding every original row)."""
    if kind == "holding":
        shutil.copytree(built[0], tmp_path / "target")
    return catalogue.open(tmp_path / "target", create=True)


def state(cat: catalogue.Catalogue) -> tuple[dict, dict]:
    """Every row of every table of the store, and every file under artifacts/ with its hash."""
    with cat.reader() as con:
        names = con.sql("SELECT table_name FROM duckdb_tables() WHERE schema_name = 'store' ORDER BY 1").fetchall()
        rows = {name: con.sql(f"SELECT * FROM store.{name} ORDER BY ALL").fetchall() for (name,) in names}
    files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(cat.artifacts_dir.iterdir())}
    return rows, files


def edit_manifest(src: Path, edit: Callable[[dict], None]) -> None:
    path = src / "manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest, indent=2))


def edit_table(src: Path, name: str, edit: Callable[[list[dict]], None]) -> None:
    """Edit a table's rows and update manifest.json's hash and count to match, as a forger would."""
    path = src / "tables" / f"{name}.parquet"
    table = pq.read_table(path)
    rows = table.to_pylist()
    edit(rows)
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), path)
    edit_manifest(src, lambda m: m["tables"][name].update(sha256=sha256_file(path), rows=len(rows)))


def accuracy_row(rows: list[dict], value: float = 0.9) -> dict:
    return next(r for r in rows if r.get("kind") == "accuracy" and r["value"] == value)


# -- the forgeries -----------------------------------------------------------------------------

def artifact_path_leaving_the_export(src: Path) -> None:
    [artifact] = (src / "artifacts").iterdir()
    shutil.copyfile(artifact, src.parent.parent / "x.parquet")  # the file is there to be read
    edit_table(src, "artifacts", lambda rows: rows[0].update(path="../../x.parquet"))


def artifact_linked_outside(src: Path) -> None:
    [artifact] = (src / "artifacts").iterdir()
    outside = src.parent.parent / "outside.parquet"
    shutil.move(artifact, outside)
    artifact.symlink_to(outside)  # the same bytes, but through a link leaving the folder


def absolute_table_path(src: Path) -> None:
    elsewhere = shutil.copyfile(src / "tables/findings.parquet", src.parent.parent / "findings.parquet")
    edit_manifest(src, lambda m: m["tables"]["findings"].update(path=str(elsewhere)))


def dotdot_table_path(src: Path) -> None:
    shutil.copyfile(src / "tables/findings.parquet", src.parent.parent / "findings.parquet")
    edit_manifest(src, lambda m: m["tables"]["findings"].update(path="tables/../../../findings.parquet"))


def edited_finding_value(src: Path) -> None:
    edit_table(src, "findings", lambda rows: accuracy_row(rows).update(value=0.99))


def edited_finding_statement(src: Path) -> None:
    edit_table(src, "findings", lambda rows: accuracy_row(rows).update(statement="accuracy is 0.99"))


def edited_finding_kind(src: Path) -> None:
    edit_table(src, "findings", lambda rows: accuracy_row(rows).update(kind="macro_f1"))


def edited_run_params(src: Path) -> None:
    edit_table(src, "runs", lambda rows: rows[0].update(params='{"metric":"f1"}'))


def edited_analysis_version(src: Path) -> None:
    edit_table(src, "analyses", lambda rows: rows[0].update(version="2"))


def edited_commit_count(src: Path) -> None:
    edit_table(src, "commits", lambda rows: rows[0].update(n_findings=rows[0]["n_findings"] - 1))


def model_twice(src: Path) -> None:
    edit_table(src, "models", lambda rows: rows.append({**rows[0], "license": "mit"}))


def conflicting_model(src: Path) -> None:
    edit_table(src, "models", lambda rows: rows[0].update(parameter_count=9))


def conflicting_run(src: Path) -> None:
    """The first run claims to verify the second (which the holding catalogue has)."""
    edit_table(src, "runs", lambda rows: next(r for r in rows if r["id"] == "run-1-0").update(verifies_run_id="run-1-1"))


def edited_run_seed(src: Path) -> None:
    edit_table(src, "runs", lambda rows: next(r for r in rows if r["id"] == "run-1-0").update(seed=5))


def reseeded_finding(src: Path) -> None:
    """A finding given another seed, with its key and id made again to match, as a forger who knows the format would."""
    def edit(rows: list[dict]) -> None:
        f = accuracy_row(rows)
        fields = (f["model_id"], f["dataset_id"], f["analysis_name"], f["params_hash"], f["kind"], f["subject"])
        f.update(seed=1, key_id=finding_key(*fields, seed=1))
        f["id"] = finding_id(f["key_id"], f["run_id"], analysis_id=f["analysis_id"], statement=f["statement"],
                             value=f["value"], ci=(f["ci_low"], f["ci_high"]), n=f["n"], unit=f["unit"],
                             exact=f["exact"], metrics=json.loads(f["metrics"]), artifacts={})
    edit_table(src, "findings", edit)


def edited_replication_key(src: Path) -> None:
    def edit(rows: list[dict]) -> None:
        f = accuracy_row(rows)
        f["replication_key"] = f["replication_key"][:-1] + ("0" if f["replication_key"][-1] != "0" else "1")
    edit_table(src, "findings", edit)


def changed_artifact_bytes(src: Path) -> None:
    [artifact] = (src / "artifacts").iterdir()
    pq.write_table(pa.table({"example": [0, 1, 2], "ok": [True, True, True]}), artifact)  # rows still 3
    edit_manifest(src, lambda m: m["artifacts"].update(bytes=artifact.stat().st_size))


def changed_artifact_renamed(src: Path, *, recompute_artifact_id: bool = False) -> None:
    """Changed bytes under their new hash, with the artifacts row's sha256, path and bytes to match."""
    [artifact] = (src / "artifacts").iterdir()
    data = pa.BufferOutputStream()
    pq.write_table(pa.table({"example": [0, 1, 2], "ok": [True, True, True]}), data)
    data = data.getvalue().to_pybytes()
    sha = hashlib.sha256(data).hexdigest()
    artifact.unlink()
    (src / "artifacts" / f"{sha}.parquet").write_bytes(data)

    def edit(rows: list[dict]) -> None:
        rows[0].update(sha256=sha, path=f"artifacts/{sha}.parquet", bytes=len(data))
        if recompute_artifact_id:
            rows[0]["id"] = artifact_id(rows[0]["finding_id"], rows[0]["name"], sha)

    edit_table(src, "artifacts", edit)


def changed_artifact_renamed_with_its_id(src: Path) -> None:
    """As above, and the artifact's id made again from its new hash: the finding's id covers it too."""
    changed_artifact_renamed(src, recompute_artifact_id=True)


def link_to_nowhere(src: Path) -> None:
    edit_table(src, "finding_links", lambda rows: next(r for r in rows if r["relation"] == "extends")
               .update(dst_id="sha256:" + "e" * 64))


def unknown_format(src: Path) -> None:
    edit_manifest(src, lambda m: m.update(format="some-other-export"))


def newer_schema(src: Path) -> None:
    edit_manifest(src, lambda m: m.update(schema_version=4))


def newer_ids(src: Path) -> None:
    edit_manifest(src, lambda m: m.update(id_format=3))


def claims_an_older_format(src: Path) -> None:
    edit_manifest(src, lambda m: m.pop("id_format"))


def older_format(src: Path) -> None:
    """An export that the modelsci of id format 1 wrote (tests/data/old_catalogue.py)."""
    shutil.rmtree(src)
    shutil.copytree(extract(src.parent / "old") / "export", src)


def older_format_claiming_this_one(src: Path) -> None:
    older_format(src)
    edit_manifest(src, lambda m: m.update(schema_version=3, id_format=2))


def older_format_dressed_as_this_one(src: Path) -> None:
    """The older export with today's columns added (its keys are today's replication keys) and the
    manifest to match: its ids do not recompute, so it is refused as edited."""
    older_format_claiming_this_one(src)
    seeds = {r["id"]: r["seed"] for r in pq.read_table(src / "tables/runs.parquet").to_pylist()}
    for name, columns in (("models", {"name": lambda r: "m", "origin": lambda r: "submitted"}),
                          ("datasets", {"name": lambda r: "d"}),
                          ("runs", {"train_dataset_id": lambda r: None, "verifies_run_id": lambda r: None}),
                          ("findings", {"seed": lambda r: seeds[r["run_id"]], "replication_key": lambda r: r["key_id"]})):
        path = src / "tables" / f"{name}.parquet"
        table = pq.read_table(path)
        for column, value in columns.items():
            kind = pa.int64() if column == "seed" else pa.string()
            table = table.append_column(column, pa.array([value(r) for r in table.to_pylist()], kind))
        pq.write_table(table, path)
        edit_manifest(src, lambda m, name=name, path=path: m["tables"][name].update(sha256=sha256_file(path)))


REFUSALS = [
    (artifact_path_leaving_the_export, "empty",
     r"^artifacts row sha256:[0-9a-f]{12}\.\.\.: path '\.\./\.\./x\.parquet' is not 'artifacts/<its sha256>\.parquet'"),
    (artifact_linked_outside, "empty", r"artifacts/[0-9a-f]{64}\.parquet is a link to .*outside\.parquet, outside"),
    (absolute_table_path, "empty", r"table findings's path '/.+ is not 'tables/findings\.parquet'"),
    (dotdot_table_path, "empty", r"table findings's path 'tables/\.\./\.\./\.\./findings\.parquet' is not"),
    (edited_finding_value, "empty",
     r"^findings row sha256:[0-9a-f]{12}\.\.\.: its id does not match its content \(value edited\?\)$"),
    (edited_finding_value, "holding", r"^findings row sha256:[0-9a-f]{12}\.\.\.: its id does not match its content"),
    (edited_finding_statement, "holding", r"^findings row sha256:[0-9a-f]{12}\.\.\.: its id does not match"),
    (edited_finding_kind, "empty", r"^findings row sha256:[0-9a-f]{12}\.\.\.: its key_id does not match its model, "
                                   r"dataset, analysis, params, seed, kind and subject"),
    (reseeded_finding, "empty", r"^findings row sha256:[0-9a-f]{12}\.\.\.: its seed 1 is not its run's 0 \(edited\?\)$"),
    (reseeded_finding, "holding", r"^findings row sha256:[0-9a-f]{12}\.\.\.: its seed 1 is not its run's 0"),
    (edited_replication_key, "empty", r"^findings row sha256:[0-9a-f]{12}\.\.\.: its replication_key does not match"),
    (edited_run_seed, "holding", r"^findings row sha256:[0-9a-f]{12}\.\.\.: its seed 0 is not its run's 5"),
    (edited_run_params, "empty", r"^runs row 'run-1-0': its params_hash does not match its params"),
    (edited_analysis_version, "empty", r"^analyses row 'evaluation.performance@1': its id is not its name@version"),
    (edited_commit_count, "empty", r"^commits row sha256:[0-9a-f]{12}\.\.\.: n_findings is 2, but the export has 3 "
                                   r"findings rows of it$"),
    (model_twice, "empty", r"^models row sha256:[0-9a-f]{12}\.\.\. appears twice in the export$"),
    (conflicting_model, "holding", r"^models row sha256:[0-9a-f]{12}\.\.\. conflicts with the catalogue's row of that "
                                   r"id: its parameter_count is 9 in the export but 8 in the catalogue"),
    (conflicting_run, "holding", r"^runs row 'run-1-0' conflicts with the catalogue's row of that id: its "
                                 r"verifies_run_id is 'run-1-1' in the export but None in the catalogue"),
    (changed_artifact_bytes, "empty", r"artifacts/[0-9a-f]{64}\.parquet: its bytes hash to [0-9a-f]{64}, not to "
                                      r"the sha256 that its name and its artifacts row give"),
    (changed_artifact_bytes, "holding", r"artifacts/[0-9a-f]{64}\.parquet: its bytes hash to [0-9a-f]{64}, not to"),
    (changed_artifact_renamed, "empty",
     r"^artifacts row sha256:[0-9a-f]{12}\.\.\.: its id does not match its finding, name and sha256$"),
    (changed_artifact_renamed_with_its_id, "empty",
     r"^findings row sha256:[0-9a-f]{12}\.\.\.: its id does not match its content"),
    (link_to_nowhere, "empty", r"^finding_links row .* -extends-> sha256:eeeeeeeeeeee\.\.\.: dst_id sha256:eeeeeeeeeeee"
                               r"\.\.\. is neither in the catalogue nor in the export at or before its commit$"),
    (unknown_format, "empty", r"format 'some-other-export' is not 'modelsci-export'; this is not a modelsci export"),
    (newer_schema, "empty", r"schema version 4, id format 2 is newer than this modelsci's \(3, 2\); upgrade modelsci"),
    (newer_ids, "empty", r"schema version 3, id format 3 is newer than this modelsci's \(3, 2\); upgrade modelsci"),
    (claims_an_older_format, "empty", r"manifest\.json: an export of an older format \(schema version 3, id format 1; "),
    (older_format, "empty", r"manifest\.json: an export of an older format \(schema version 1, id format 1; this "
                            r"modelsci reads 3, 2\), whose ids it cannot check: run `modelsci upgrade` on the "
                            r"catalogue it came from and export again"),
    (older_format_claiming_this_one, "empty", r"models\.parquet has no column 'name'"),
    (older_format_dressed_as_this_one, "empty", r"^findings row sha256:[0-9a-f]{12}\.\.\.: its key_id does not match "
                                                r"its model, dataset, analysis, params, seed, kind and subject \(edited\?\)$"),
]


@pytest.mark.parametrize(("forge", "kind", "message"), REFUSALS,
                         ids=[f"{forge.__name__}-{kind}" for forge, kind, _ in REFUSALS])
def test_a_forged_export_is_refused_and_the_catalogue_is_unchanged(built, src, tmp_path, forge, kind, message) -> None:
    cat = target(built, tmp_path, kind)
    before = state(cat)
    forge(src)
    with pytest.raises(ExportError, match=message) as refused:
        import_export(cat, src)
    assert "\n" not in str(refused.value)
    assert state(cat) == before


def test_a_commit_the_catalogue_holds_cannot_smuggle_in_rows_it_never_added(built, src, tmp_path) -> None:
    """The catalogue holds commit 1 only; the export moves commit 3's rows under commit 1's id
    (counts and manifest to match), which an import would otherwise skip as already present."""
    first = tmp_path / "first"
    export(catalogue.open(built[0]), first, as_of="1")
    cat = catalogue.open(tmp_path / "target", create=True)
    import_export(cat, first)
    before = state(cat)
    commits = pq.read_table(src / "tables/commits.parquet").to_pylist()
    one, three = commits[0]["id"], commits[2]["id"]
    counts = {}
    for name in ("models", "datasets", "analyses", "runs", "findings", "finding_links", "artifacts"):
        def move(rows: list[dict], name: str = name) -> None:
            counts[name] = sum(r["commit_id"] in (one, three) for r in rows)
            for r in rows:
                if r["commit_id"] == three:
                    r["commit_id"] = one
        edit_table(src, name, move)

    def merge(rows: list[dict]) -> None:
        rows[0].update(n_models=counts["models"], n_datasets=counts["datasets"], n_analyses=counts["analyses"],
                       n_runs=counts["runs"], n_findings=counts["findings"], n_links=counts["finding_links"],
                       n_artifacts=counts["artifacts"])
        del rows[2]

    edit_table(src, "commits", merge)
    edit_manifest(src, lambda m: m.update(catalogue_commit={"id": commits[1]["id"], "seq": 2}))
    with pytest.raises(ExportError, match=r"^commits row sha256:[0-9a-f]{12}\.\.\.: the catalogue holds this commit "
                                          r"but not its models row sha256:[0-9a-f]{12}\.\.\."):
        import_export(cat, src)
    assert state(cat) == before


def bounded_import(src: Path, cat_dir: Path) -> subprocess.CompletedProcess[str]:
    """`modelsci import` in a process that a timeout kills and a memory limit stops, should a
    read block forever or never end."""
    def limits() -> None:
        resource.setrlimit(resource.RLIMIT_DATA, (2 << 30, 2 << 30))

    return subprocess.run([MODELSCI, "--catalogue", str(cat_dir), "import", str(src)], capture_output=True,
                          text=True, timeout=60, preexec_fn=limits, env={**os.environ, "COLUMNS": "200"})


@pytest.mark.parametrize(("make", "message"), [
    (os.mkfifo, r"tables/findings\.parquet is a FIFO; modelsci reads only regular files"),
    (lambda path: path.symlink_to("/dev/zero"), r"tables/findings\.parquet is a link to /dev/zero, outside"),
    (lambda path: (os.mkfifo(path.parent / "inside"), path.symlink_to("inside")),
     r"tables/findings\.parquet is a FIFO; modelsci reads only regular files"),
], ids=["fifo", "link-to-dev-zero", "link-to-a-fifo-inside"])
def test_fifos_and_devices_in_an_export_are_refused_without_hanging(built, src, tmp_path, make, message) -> None:
    cat = target(built, tmp_path, "empty")
    before = state(cat)
    findings = src / "tables/findings.parquet"
    findings.unlink()
    make(findings)
    result = bounded_import(src, cat.root)
    assert result.returncode == 1 and result.stderr.strip().count("\n") == 0, result.stderr
    assert re.search(message, result.stderr)
    assert state(cat) == before


def test_the_cli_refuses_a_path_leaving_the_export_in_one_line(built, src, tmp_path) -> None:
    cat = target(built, tmp_path, "holding")
    before = state(cat)
    artifact_path_leaving_the_export(src)
    result = modelsci("import", str(src), catalogue_dir=cat.root, check=False)
    assert result.returncode == 1 and result.stderr.strip().count("\n") == 0
    assert "path '../../x.parquet' is not 'artifacts/<its sha256>.parquet'" in result.stderr
    assert state(cat) == before


def test_a_refusal_after_some_artifacts_were_written_removes_them(tmp_path) -> None:
    """Two artifact files; the second one re-hashed (sorted by name) is changed: the first, already
    written into the catalogue's artifacts/, goes again."""
    source = catalogue.open(tmp_path / "source", create=True)
    bundle = accuracy_bundle(0.9, None)
    for i in range(2):
        bundle.add_finding(bundle.runs[0], kind="per_example", subject=str(i), statement="rows",
                           artifacts={"rows": pa.table({"example": [i]})})
    source.commit(bundle)
    export(source, tmp_path / "export")
    files = sorted((tmp_path / "export/artifacts").iterdir())
    assert len(files) == 2
    pq.write_table(pa.table({"example": [7]}), files[1])
    cat = catalogue.open(tmp_path / "target", create=True)
    before = state(cat)
    with pytest.raises(ExportError, match=f"{files[1].name}: its bytes hash to"):
        import_export(cat, tmp_path / "export")
    assert state(cat) == before


def test_an_import_that_cannot_land_removes_the_files_it_wrote(built, src, tmp_path) -> None:
    """Another process reads the catalogue, so the import cannot take the write lock once it
    has verified everything and written the artifact files: it removes them."""
    cat = catalogue.Catalogue(tmp_path / "target", create=True, write_timeout=0.5)
    before = state(cat)
    reader = subprocess.Popen([sys.executable, "-c", "import duckdb, sys, time; con = duckdb.connect(sys.argv[1], "
                               "read_only=True); print('open', flush=True); time.sleep(60)", str(cat.db_path)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert reader.stdout.readline().strip() == "open"
        with pytest.raises(CatalogueBusyError):
            import_export(cat, src)
        assert sorted(cat.artifacts_dir.iterdir()) == []
    finally:
        reader.kill()
        reader.wait()
    assert state(cat) == before


# -- what still imports ------------------------------------------------------------------------

def test_a_clean_export_imports_into_an_empty_catalogue_and_into_its_own(built, src, tmp_path) -> None:
    source = catalogue.open(built[0])
    cat = target(built, tmp_path, "empty")
    report = import_export(cat, src)
    assert len(report.landed) == 3 and report.renamed == {} and report.kept == []
    assert [cat.sql(q).to_pylist() for q in ANSWERS] == [source.sql(q).to_pylist() for q in ANSWERS]
    assert modelsci("check", catalogue_dir=cat.root).stdout.startswith("ok: catalogue consistent")
    before = state(cat)
    again = import_export(cat, src)  # idempotent
    assert again.landed == [] and len(again.already_present) == 3 and state(cat) == before
    # the source itself, a copy of it: nothing new
    holding = catalogue.open(Path(shutil.copytree(built[0], tmp_path / "holding")))
    before = state(holding)
    report = import_export(holding, src)
    assert report.landed == [] and report.kept == [] and state(holding) == before
    assert check(holding).ok
    # an imported catalogue exports ids that verify again
    export(cat, tmp_path / "again")
    assert import_export(catalogue.open(tmp_path / "third", create=True), tmp_path / "again").renamed == {}


def test_metadata_the_ids_do_not_cover_is_kept_and_reported(built, src, tmp_path) -> None:
    cat = target(built, tmp_path, "holding")
    model = cat.sql("SELECT * FROM models ORDER BY id").to_pylist()[0]
    edit_table(src, "models", lambda rows: next(r for r in rows if r["id"] == model["id"]).update(
        source_uri="hf://someone/else", license="mit"))
    report = import_export(cat, src)
    assert report.landed == []
    [line] = report.kept
    assert line.startswith(f"models row {model['id'][:19]}...: kept the catalogue's source_uri "
                           f"'{model['source_uri']}' (the export has 'hf://someone/else'); license None")
    assert cat.sql("SELECT * FROM models ORDER BY id").to_pylist()[0] == model
    assert report.notes() == [line]


def test_a_commit_whose_id_does_not_recompute_lands_under_its_own(built, src, tmp_path) -> None:
    """A commit with an edited message, or one the exporting catalogue imported from elsewhere:
    its id cannot vouch for it, so it is not carried."""
    edit_table(src, "commits", lambda rows: rows[2].update(message="edited"))
    cat = target(built, tmp_path, "empty")
    report = import_export(cat, src)
    [(old, new)] = report.renamed.items()
    commits = cat.sql("SELECT id, message FROM commits ORDER BY seq").to_pylist()
    assert commits[2] == {"id": new, "message": "edited"} and old not in {c["id"] for c in commits}
    assert check(cat).ok
    assert import_export(cat, src).landed == []
    # A catalogue with a commit of its own imports the clean export: there the first imported
    # commit's parent is its own commit, so in its export that commit's id does not recompute.
    merged = catalogue.open(tmp_path / "merged", create=True)
    merged.commit(accuracy_bundle(0.5, None, seed=9, model=toy_model(seed=9)), message="own")
    import_export(merged, built[1])
    export(merged, tmp_path / "merged-export")
    third = catalogue.open(tmp_path / "third", create=True)
    report = import_export(third, tmp_path / "merged-export")
    first = catalogue.open(built[0]).sql("SELECT id FROM commits WHERE seq = 1").column("id")[0].as_py()
    assert len(report.landed) == 4 and list(report.renamed) == [first]
    rows = "SELECT * EXCLUDE (commit_id) FROM findings ORDER BY id"  # commit 1's rows are stamped with its new id
    assert third.sql(rows).to_pylist() == merged.sql(rows).to_pylist()
    assert check(third).ok


def test_runs_and_findings_made_by_the_planner_verify(tmp_path) -> None:
    """Real runs (ids from the run key and attempt) and findings of evaluation.performance."""
    manifest = write_manifest(tmp_path / "m.yaml", str(breast_cancer_skops(tmp_path / "lr")),
                              analyses=[{"name": "evaluation.performance", "params": {"n_bootstrap": 100}}])
    source = catalogue.open(tmp_path / "source", create=True)
    submit(source, manifest.read_text())
    assert run_queue_locally(source, device="cpu", jobs=1, reporter=Reporter()).failed == []
    export(source, tmp_path / "export")
    report = import_export(catalogue.open(tmp_path / "target", create=True), tmp_path / "export")
    assert len(report.landed) == 2 and report.renamed == {} and report.kept == []
    edit_table(tmp_path / "export", "runs", lambda rows: rows[0].update(seed=7))
    with pytest.raises(ExportError, match=r"^runs row sha256:[0-9a-f]{12}\.\.\.: its run_key does not match"):
        import_export(catalogue.open(tmp_path / "empty", create=True), tmp_path / "export")
