"""The ``modelsci`` command: each command parses its options and calls one library function.

Errors: modelsci's own (``ModelsciError``: a bad manifest, model, query or path, a busy
catalogue) and a file that cannot be read or written print one line and exit 1; Click's
usage errors exit 2; anything else is a bug in modelsci, printed with its traceback, exit 70.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import typer
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

import modelsci
from modelsci import catalogue
from modelsci.catalogue.integrity import check as check_catalogue
from modelsci.catalogue.names import AmbiguousReferenceError, resolve_dataset, resolve_model, short_id
from modelsci.catalogue.readonly import one_line
from modelsci.catalogue.remote import is_url
from modelsci.catalogue.schema import TABLES
from modelsci.catalogue.store import json_columns
from modelsci.catalogue.transfer import export as export_catalogue
from modelsci.catalogue.transfer import import_export
from modelsci.catalogue.upgrade import upgrade as upgrade_catalogue
from modelsci.http_serve import make_server
from modelsci.schemas.errors import MissingExtraError, ModelsciError

app = typer.Typer(
    name="modelsci",
    help="A catalogue of model science: findings about trained model instances, in DuckDB + Parquet.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Text from users and contributors (sources, names, SQL errors) is printed literally: no markup.
console = Console(markup=False)
err = Console(stderr=True, markup=False)

BUG_EXIT_CODE = 70  # EX_SOFTWARE: not 1 (user errors) and not 2 (Click's usage errors)

_state: dict[str, Any] = {"catalogue": None}


class Format(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"
    parquet = "parquet"


CatalogueOption = Annotated[str | None, typer.Option(
    "--catalogue", "-C", help="Catalogue directory (else $MODELSCI_CATALOGUE, else ./modelsci-catalogue), or the "
                              "http(s) URL of a published catalogue, read-only.")]
SourcesOption = Annotated[Path | None, typer.Option(
    "--sources", help="Folder that local sources recorded relative to their manifest's folder are found in, for "
                      "runs not queued here (imported ones); default: where they were queued, else the working "
                      "directory.")]
AsOfOption = Annotated[str | None, typer.Option(
    "--as-of", help="Answer as the catalogue stood after this commit (id, id prefix or seq).")]


def _version(value: bool) -> None:
    if value:
        console.print(f"modelsci {modelsci.__version__}")
        raise typer.Exit()


@app.callback()
def _main(ctx: typer.Context, catalogue_dir: CatalogueOption = None,
          version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="Print the version and exit.")] = False) -> None:
    _state["catalogue"] = catalogue_dir
    _state["command"] = ctx.invoked_subcommand


# Commands that only read through the catalogue's queries, and so answer on a published one (a URL) too.
_PUBLISHED_READS = {"sql", "findings", "history", "show", "compare"}


def _open(*, create: bool = False) -> catalogue.Catalogue:
    """The catalogue the command works on; only submit, import and demo make one where there is none."""
    location = _state["catalogue"]
    if location is None and "MODELSCI_CATALOGUE" in os.environ:
        location = os.environ["MODELSCI_CATALOGUE"]
    if is_url(location) and _state.get("command") not in _PUBLISHED_READS:
        _fail(f"`modelsci {_state.get('command')}` needs a local catalogue folder: {location} is a published "
              f"catalogue, read-only over HTTP ({', '.join(sorted(_PUBLISHED_READS))} read it)")
    return catalogue.open(location, create=create)


def _fail(message: str, code: int = 1) -> NoReturn:
    _print_error(message)
    raise typer.Exit(code)


def _print_error(message: str) -> None:
    err.print(Text.assemble(("error:", "bold red"), " ", message), soft_wrap=True)


@contextmanager
def _needs(extras: str, command: str) -> Iterator[None]:
    """Imports for ``command`` that come with optional extras: a missing one says how to install it."""
    try:
        yield
    except ModuleNotFoundError as exc:
        raise MissingExtraError(f"modelsci {command} needs {exc.name}, which is not installed: "
                                f"pip install 'modelsci[{extras}]'") from None


def _emit(table: pa.Table, fmt: Format = Format.table, out: Path | None = None) -> None:
    if fmt is Format.parquet:
        if out is None:
            _fail("--format parquet needs --out FILE")
        pq.write_table(table, out)
    elif fmt is Format.csv:
        sink = io.StringIO()
        writer = csv.writer(sink, lineterminator="\n")
        writer.writerow(table.column_names)
        writer.writerows(["" if v is None else v for v in row.values()] for row in table.to_pylist())
        _write_text(sink.getvalue(), out)
    elif fmt is Format.json:
        nested = json_columns(table.schema)  # JSON text becomes JSON, not a string holding JSON
        rows = [{k: _json_value(v) if k in nested else v for k, v in row.items()} for row in table.to_pylist()]
        _write_text(json.dumps(rows, indent=2, default=str) + "\n", out)
    else:
        if out is not None:
            _fail("--out needs --format csv, json or parquet")
        rows = [[_cell(v) for v in row.values()] for row in table.to_pylist()]
        widths = [max([len(name), *(len(r[i]) for r in rows)]) for i, name in enumerate(table.column_names)]
        if sum(widths) + 2 * len(widths) <= console.width:
            view = Table(*table.column_names, show_lines=False, box=box.SIMPLE_HEAD, pad_edge=False)
            for row in rows:
                view.add_row(*map(Text, row))
            console.print(view)
        else:  # too wide for the terminal: one block per row, every value whole (folded, never cut)
            _print_records(table.column_names, rows)
        console.print(f"{table.num_rows} row{'s' if table.num_rows != 1 else ''}", style="dim")


def _print_records(names: list[str], rows: list[list[str]]) -> None:
    label = max(map(len, names))
    for i, row in enumerate(rows, start=1):
        console.rule(f"{i}", align="left", characters="-")
        grid = Table.grid(padding=(0, 1))
        grid.add_column(no_wrap=True, min_width=label)
        grid.add_column(overflow="fold")
        for name, value in zip(names, row):
            grid.add_row(Text(name, style="bold"), Text(value))
        console.print(grid)


def _json_value(value: Any) -> Any:
    """A JSON column's text as the value it encodes (null stays null)."""
    return json.loads(value) if isinstance(value, str) else value


def _cell(value: Any) -> str:
    """A value as a terminal table shows it: ids cut to 12 hex digits (a prefix any command
    takes), numbers to 4 significant digits; the other formats keep every digit."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, str) and value.startswith("sha256:") and len(value) == 71:
        return value[7:19]
    return str(value)


def _write_text(text: str, out: Path | None) -> None:
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text)


@app.command()
def sql(
    query: Annotated[str, typer.Argument(help="A SELECT query.")],
    fmt: Annotated[Format, typer.Option("--format", "-f", help="Output format.")] = Format.table,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write to this file.")] = None,
    as_of: AsOfOption = None,
    timeout: Annotated[float | None, typer.Option(
        "--timeout", min=0.001, metavar="SECONDS",
        help="Stop the query after this many seconds (default 60, or $MODELSCI_SQL_TIMEOUT).")] = None,
    memory_limit: Annotated[str | None, typer.Option(
        "--memory-limit", metavar="SIZE",
        help="Stop the query when it, or its result, needs more memory than this: 512MB, 2GB, or a share of "
             "the machine's memory such as 10% (default 25%, or $MODELSCI_SQL_MEMORY_LIMIT).")] = None,
) -> None:
    """Run a read-only SQL query over the catalogue, within a time and a memory limit.

    Tables: models, datasets, analyses, runs, findings, findings_current, findings_summary, findings_lineage,
    finding_links, commits, artifacts.

    An artifact's rows: SELECT * FROM 'artifacts/<sha256>.parquet'.

    While a query runs, writers (modelsci run, import) wait for it: hence the limits.

    Example: modelsci sql "SELECT kind, subject, value FROM findings_current" --format csv
    """
    try:
        table = _open().sql(query, as_of=as_of, timeout=timeout, memory_limit=memory_limit)
    except duckdb.Error as exc:  # the query is the user's: its errors are theirs to fix
        _fail(one_line(str(exc)))
    _emit(table, fmt, out)


@app.command()
def findings(
    model: Annotated[str | None, typer.Option(help="Model name, id or id prefix.")] = None,
    analysis: Annotated[str | None, typer.Option(help="Analysis name, e.g. evaluation.performance.")] = None,
    seeds: Annotated[bool, typer.Option("--seeds", help="Each seed's current finding, not their summary.")] = False,
    all_versions: Annotated[bool, typer.Option(
        "--all", help="Every finding: superseded versions and verification runs' findings too.")] = False,
    contradicted: Annotated[bool, typer.Option(
        "--contradicted", help="Findings that contradict another: their previous version, the first seed's, "
                               "or the original a verification re-ran.")] = False,
    fmt: Annotated[Format, typer.Option("--format", "-f")] = Format.table,
    as_of: AsOfOption = None,
) -> None:
    """List findings: one row per replication key, the seeds summarised (findings_summary).

    --seeds lists each seed's current finding; --all every finding.
    Example: modelsci findings --analysis attribution.kernel_shap --seeds
    """
    cat = _open()
    model_id = resolve_model(cat, model, as_of=as_of) if model is not None else None
    _emit(cat.findings(model=model_id, analysis=analysis, seeds=seeds, all_versions=all_versions,
                       contradicted=contradicted, as_of=as_of), fmt)


@app.command()
def history(
    key_or_id: Annotated[str, typer.Argument(help="A finding key, or the id of any of its versions.")],
    fmt: Annotated[Format, typer.Option("--format", "-f")] = Format.table,
    as_of: AsOfOption = None,
) -> None:
    """Every version of a finding, with its replication judgment.

    Example: modelsci history sha256:3f2a
    """
    table = _open().history(key_or_id, as_of=as_of)
    if table.num_rows == 0:
        _fail(f"no finding or finding key {key_or_id!r}")
    _emit(table, fmt)


@app.command()
def show(
    ref: Annotated[str, typer.Argument(help="Id or unique id prefix of a model, dataset, run, finding, commit, ...; "
                                            "or a model's or dataset's name")],
    as_of: AsOfOption = None,
) -> None:
    """Show one row of the catalogue, whatever table holds it, as JSON.

    Example: modelsci show sha256:3f2a
    """
    cat = _open()
    try:
        shown = cat.show(ref, as_of=as_of)
    except catalogue.UnknownIdError as by_id:
        shown = _show_named(cat, ref, as_of, by_id)
    # JSON columns as JSON, not strings holding JSON
    shown["row"] = _nested(shown["row"], shown["table"])
    for part, table in (("links", "finding_links"), ("artifacts", "artifacts")):
        if part in shown:
            shown[part] = [_nested(row, table) for row in shown[part]]
    sys.stdout.write(json.dumps(shown, indent=2, default=str) + "\n")


def _show_named(cat: catalogue.Catalogue, ref: str, as_of: str | None, by_id: Exception) -> dict[str, Any]:
    """The model or dataset named ``ref``, for ``show``, when no row has such an id; else ``by_id`` again."""
    found = []
    for resolve in (resolve_model, resolve_dataset):
        try:
            found.append(resolve(cat, ref, as_of=as_of))
        except AmbiguousReferenceError:
            raise
        except catalogue.UnknownIdError:
            continue
    if len(found) != 1:
        raise by_id if not found else catalogue.UnknownIdError(
            f"{ref!r} names both a model and a dataset; give an id: {', '.join(short_id(i) for i in found)}")
    return cat.show(found[0], as_of=as_of)


def _nested(row: dict[str, Any], table: str) -> dict[str, Any]:
    json_cols = TABLES[table].json_columns
    return {k: _json_value(v) if k in json_cols else v for k, v in row.items()}


@app.command()
def compare(
    a: Annotated[str, typer.Argument(help="A model's name, id or id prefix (with --commits: a commit).")],
    b: Annotated[str, typer.Argument(help="Another model's name, id or id prefix (with --commits: a commit).")],
    commits: Annotated[bool, typer.Option(
        "--commits", help="Compare the catalogue as it stood after commits A and B (id, id prefix or seq).")] = False,
    fmt: Annotated[Format, typer.Option("--format", "-f", help="Output format.")] = Format.table,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write to this file.")] = None,
    as_of: AsOfOption = None,
) -> None:
    """Two models' findings side by side (findings_summary), or the catalogue at two commits.

    Rows are matched on dataset, analysis, parameters, kind and subject (and model, with --commits), with
    both values and 95% intervals, whether the intervals overlap, and the difference (B - A); a key only
    one side has is listed with the other side empty.
    Example: modelsci compare 74974a9542d2 1f0c33aa9b12
    """
    from modelsci.compare import compare_commits, compare_models

    if commits and as_of is not None:
        raise typer.BadParameter("--as-of compares two models; --commits names its own two commits")
    cat = _open()
    if commits:
        _emit(compare_commits(cat, a, b), fmt, out)
        return
    _emit(compare_models(cat, resolve_model(cat, a, as_of=as_of), resolve_model(cat, b, as_of=as_of), as_of=as_of),
          fmt, out)


@app.command()
def check() -> None:
    """Verify integrity: artifacts present with their hashes, link ends present, versions consistent.

    Exits 1 and lists the problems when there are any. Example: modelsci check
    """
    report = check_catalogue(_open())
    for note in report.notes:
        err.print(f"note: {note}")
    for problem in report.problems:
        err.print(Text.assemble(("problem:", "red"), f" {problem}"))
    if not report.ok:
        _fail(f"{len(report.problems)} problem(s) found")
    console.print(f"ok: catalogue consistent, {report.artifacts_checked} artifact file(s) verified")


@app.command()
def upgrade() -> None:
    """Upgrade a catalogue made by an earlier modelsci in place: recompute its ids, versions and links.

    One transaction: interrupted, the catalogue stays as it was. Commit ids change (seqs stay).
    Example: modelsci upgrade
    """
    report = upgrade_catalogue(_open())
    if not report.upgraded:
        console.print(f"the catalogue is of id format {report.to_format} already; nothing to do")
        return
    console.print(f"upgraded id format {report.from_format} -> {report.to_format}: {report.findings} findings "
                  f"over {len(report.commits)} commits, {report.judgments} replication judgments; commit ids "
                  "changed, their seq numbers did not")


@app.command("export")
def export_(
    out: Annotated[Path, typer.Argument(help="Folder to write the export to.")],
    as_of: AsOfOption = None,
) -> None:
    """Export every table as Parquet, the artifacts, a manifest.json and a README.

    Example: modelsci export ./catalogue-export
    """
    manifest = export_catalogue(_open(), out, as_of=as_of)
    rows = sum(t["rows"] for t in manifest["tables"].values())
    console.print(f"exported {rows} rows in {len(manifest['tables'])} tables and "
                  f"{manifest['artifacts']['files']} artifact files to {out}")


@app.command("import")
def import_(
    src: Annotated[Path, typer.Argument(help="An export folder.")],
    verify_fraction: Annotated[float | None, typer.Option(
        "--verify", min=0.0, max=1.0, help="Then re-run this share of the imported runs (see `modelsci verify`).")] = None,
    seed: Annotated[int, typer.Option(help="With --verify: seed of the sample.")] = 0,
    device: Annotated[str, typer.Option(help="With --verify: auto, cpu or cuda.")] = "auto",
    sources: SourcesOption = None,
) -> None:
    """Merge an export into the catalogue; importing the same export twice changes nothing.

    With --verify F, a random share F of the runs it added is then re-run here and judged
    against the imported findings, as `modelsci verify` does; exit 1 if any is contradicted.
    Example: modelsci import ./catalogue-export --verify 0.1
    """
    cat = _open(create=True)
    before = {r["id"] for r in cat.query("SELECT id FROM runs").to_pylist()} if verify_fraction else set()
    report = import_export(cat, src)
    console.print(f"imported {len(report.landed)} commit(s); {len(report.already_present)} "
                  "already present")
    for note in report.notes():
        err.print(f"note: {note}", soft_wrap=True)
    if verify_fraction:
        added = {r["id"] for r in cat.query("SELECT id FROM runs").to_pylist()} - before
        _verify(cat, device, fraction=verify_fraction, seed=seed, among=added, sources=sources)


@app.command()
def verify(
    fraction: Annotated[float | None, typer.Option(min=0.0, max=1.0, help="Share of the runs to re-run (default 1).")] = None,
    runs: Annotated[int | None, typer.Option(min=1, help="Number of runs to re-run, instead of --fraction.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the random sample of runs.")] = 0,
    device: Annotated[str, typer.Option(help="auto (CUDA when present), cpu or cuda.")] = "auto",
    model: Annotated[str | None, typer.Option(help="Only runs of this model (name, id or id prefix).")] = None,
    sources: SourcesOption = None,
) -> None:
    """Re-run a random sample of the catalogue's runs and judge their findings against the stored ones.

    Each run is rebuilt from its recorded provenance (model, dataset, analysis@version, params,
    seed) with the models and data available here, and committed as a verification run: its
    findings are linked replicates or contradicts to the originals and never change which
    version is current. Exit 1 when any run is contradicted.
    Example: modelsci verify --fraction 0.2 --seed 7
    """
    if fraction is not None and runs is not None:
        raise typer.BadParameter("give --fraction or --runs, not both")
    cat = _open()
    among = None
    if model is not None:
        model_id = resolve_model(cat, model)
        among = {r["id"] for r in cat.query("SELECT id FROM runs WHERE model_id = $id", {"id": model_id}).to_pylist()}
    _verify(cat, device, fraction=fraction, runs=runs, seed=seed, among=among, sources=sources)


def _verify(cat: catalogue.Catalogue, device: str, *, fraction: float | None = None, runs: int | None = None,
            seed: int = 0, among: set[str] | None = None, sources: Path | None = None) -> None:
    with _needs("hf", "verify"):
        from modelsci.verify import sample_runs
        from modelsci.verify import verify as verify_runs

    sample = sample_runs(cat, fraction=fraction, runs=runs, seed=seed, among=among)
    console.print(f"verifying {len(sample)} run(s) ...")

    def show(verdict: Any) -> None:
        detail = f": {verdict.detail}" if verdict.outcome != "replicated" else ""
        console.print(f"{verdict.outcome:<13} {verdict.run_id[:19]}  {verdict.analysis_id}{detail}", soft_wrap=True)

    report = verify_runs(cat, sample, device=device, on_verdict=show, sources=sources)
    counts = {o: len(report.of(o)) for o in ("replicated", "contradicted", "unverifiable")}
    console.print(f"{counts['replicated']} replicated, {counts['contradicted']} contradicted, "
                  f"{counts['unverifiable']} could not be verified")
    if not report.ok:
        raise typer.Exit(1)


@app.command()
def submit(
    manifest: Annotated[Path, typer.Argument(help="A submission manifest (YAML).")],
    run_now: Annotated[bool, typer.Option("--run", help="Run the planned runs at once.")] = False,
    rerun: Annotated[bool, typer.Option("--rerun", help="Plan every run again; its findings become new versions.")] = False,
    retry_failed: Annotated[bool, typer.Option(
        "--retry-failed", help="Queue again the runs that failed for a reason that cannot change on its own.")] = False,
    device: Annotated[str, typer.Option(help="With --run: auto, cpu or cuda.")] = "auto",
) -> None:
    """Validate a manifest, register its model and dataset, and queue its runs.

    Every problem in the manifest is reported at once, with its place in the YAML.
    Example: modelsci submit examples/sklearn-skops.yaml --run
    """
    with _needs("hf", "submit"):
        from modelsci.planner import read_manifest
        from modelsci.planner import submit as submit_manifest

    cat = _open(create=True)
    with console.status("resolving the model and dataset ..."):
        submission = submit_manifest(cat, read_manifest(manifest), rerun=rerun, retry_failed=retry_failed,
                                     base_dir=manifest.parent)
    console.print(f"model   {submission.model.id}  {submission.model.instance.name} ({submission.model.framework}, "
                  f"{submission.model.instance.source_uri})")
    if submission.dataset is not None:
        console.print(f"dataset {submission.dataset.id}  {submission.dataset.entity.name} "
                      f"({submission.dataset.entity.source_uri}, {submission.dataset.entity.rows} rows)")
    if submission.train is not None:
        console.print(f"train   {submission.train.id}  {submission.train.entity.name} "
                      f"({submission.train.entity.source_uri}, {submission.train.entity.rows} rows)")
    for run_id in submission.queued:
        console.print(f"queued  {run_id}")
    if submission.failed_before:
        console.print(f"{len(submission.failed_before)} run(s) failed before; --retry-failed queues them again "
                      "(see `modelsci status` for their errors)")
    if submission.already_planned:
        console.print(f"{len(submission.already_planned)} run(s) already planned, not queued again "
                      "(--rerun to make new versions)")
    if run_now:
        _run_queue(cat, device, 1)


@app.command("run")
def run_(
    device: Annotated[str, typer.Option(help="auto (CUDA when present), cpu or cuda.")] = "auto",
    jobs: Annotated[int, typer.Option(min=1, help="Runs executed at once, in worker processes.")] = 1,
    executor: Annotated[str, typer.Option(help="local, or ray (pip install 'modelsci\\[ray]').")] = "local",
    address: Annotated[str | None, typer.Option(help="With --executor ray: join this cluster (else a local Ray).")] = None,
) -> None:
    """Execute the queued runs, landing each one's findings as it finishes.

    A failed run is recorded with its error and the others go on. Interrupted? Run it again.
    Example: modelsci run --device cpu --jobs 2
    """
    _run_queue(_open(), device, jobs, executor, address)


def _run_queue(cat: catalogue.Catalogue, device: str, jobs: int, executor: str = "local",
               address: str | None = None) -> None:
    with _needs("hf", "run"):
        from modelsci.executors import run_queue
        from modelsci.progress import ProgressReporter

    with ProgressReporter(console) as reporter:
        summary = run_queue(cat, device=device, jobs=jobs, executor=executor, address=address, reporter=reporter)
    console.print(f"{len(summary.succeeded)} run(s) succeeded, {len(summary.failed)} failed"
                  + (" (see `modelsci status`)" if summary.failed else ""))
    if summary.failed:
        raise typer.Exit(1)


@app.command()
def status(
    fmt: Annotated[Format, typer.Option("--format", "-f")] = Format.table,
) -> None:
    """The queue: runs queued, running, succeeded and failed, with each failure's error.

    Example: modelsci status
    """
    queue = _open().queue()
    counts = {s: queue.column("status").to_pylist().count(s) for s in ("queued", "running", "succeeded", "failed")}
    _emit(queue.drop_columns(["traceback"]), fmt)
    if fmt is Format.table:
        console.print(", ".join(f"{n} {s}" for s, n in counts.items()))


@app.command()
def analyses(
    describe: Annotated[str | None, typer.Option("--describe", metavar="NAME", help=(
        "Print one analysis' documentation (Markdown): parameters, seed, and each finding kind it writes "
        "with what its value means, its unit, interval, metrics keys and artifact columns."))] = None,
) -> None:
    """List the registered analyses with their parameters and defaults, and those not installed.

    Example: modelsci analyses --describe evaluation.performance
    """
    from modelsci.analyses.base import describe as describe_analysis
    from modelsci.analyses.base import registry, unavailable

    if describe is not None:
        plugin = registry().get(describe)
        if plugin is None:
            missing = unavailable().get(describe)
            if missing is not None:
                _fail(f"analysis {describe} is not installed here: {missing.install}")
            import difflib

            close = difflib.get_close_matches(describe, list(registry()), n=1)
            hint = f"; did you mean {close[0]}?" if close else "; `modelsci analyses` lists them"
            _fail(f"no analysis named {describe!r}{hint}")
        sys.stdout.write(describe_analysis(plugin))  # as is: Markdown, not rich markup or emoji codes
        return
    for name, plugin in registry().items():
        console.print(Text.assemble((name, "bold"), f" @{plugin.version}  ({plugin.family}, {plugin.pillar.value})"))
        console.print(f"  {plugin.description}", soft_wrap=True)
        if plugin.tasks:
            console.print(f"  tasks: {', '.join(sorted(plugin.tasks))}")
        for field_name, info in plugin.Params.model_fields.items():
            kind = getattr(info.annotation, "__name__", str(info.annotation))
            console.print(f"  {field_name}: {kind} = {info.default!r}  {info.description or ''}")
    missing = unavailable()
    if missing:
        console.print(Text("\nunavailable here (what they need is not installed):", style="bold"))
    for name, entry in missing.items():
        console.print(f"  {name}: {entry.install}", soft_wrap=True)
        console.print(f"    missing: {', '.join(entry.missing)}", soft_wrap=True)


site_app = typer.Typer(help="Build or serve the catalogue's static site.", no_args_is_help=True)
app.add_typer(site_app, name="site")


@site_app.command("build")
def site_build(
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Folder to build into (default: <catalogue>/site).")] = None,
    max_finding_pages: Annotated[int, typer.Option(help="Above this many findings, findings are rows of their model's page.")] = 5000,
) -> None:
    """Render the catalogue as a static site (mkdocs-material) that any static host can serve.

    Example: modelsci site build --out ./public
    """
    with _needs("site", "site build"):
        from modelsci.site_build import build_site

    with console.status("building the site ..."):
        report = build_site(_open(), out, max_finding_pages=max_finding_pages)
    for note in report.notes:
        err.print(f"note: {note}")
    console.print(f"site: {report.out / 'index.html'} ({report.pages} pages)")


@site_app.command("serve")
def site_serve(
    out: Annotated[Path | None, typer.Option("--out", "-o", help="The built site (default: <catalogue>/site).")] = None,
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
) -> None:
    """Serve the built site (or a published folder) locally, answering range requests.

    Build it first with `modelsci site build` or `modelsci publish DIR` (then --out DIR).
    Example: modelsci site serve --port 8000
    """
    root = out or _open().root / "site"
    if not (root / "index.html").is_file():
        _fail(f"no built site at {root}; run `modelsci site build` first")
    with make_server(root, "127.0.0.1", port) as server:
        console.print(f"serving {root} at http://127.0.0.1:{port}/ (Ctrl-C to stop)")
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass


@app.command()
def publish(
    out: Annotated[Path, typer.Argument(help="Folder to publish into: serve it as it is.")],
    url: Annotated[str | None, typer.Option(help="Where the folder will be served, for croissant.json.")] = None,
    max_finding_pages: Annotated[int, typer.Option(help="Above this many findings, findings are rows of their model's page.")] = 5000,
) -> None:
    """Write what a static host needs: the site, its Parquet export in data/, croissant.json, a dataset card.

    Serve the folder as it is; modelsci.open("https://host/path/") and `modelsci --catalogue URL sql` read it
    over HTTP, and datasets.load_dataset(folder, "findings") reads a table.
    Example: modelsci publish ./public
    """
    with _needs("site", "publish"):
        from modelsci.publish import publish as publish_catalogue

    with console.status("publishing ..."):
        report = publish_catalogue(_open(), out, max_finding_pages=max_finding_pages, url=url)
    for note in report.site.notes:
        err.print(f"note: {note}")
    console.print(f"published to {report.out}: the site ({report.site.pages} pages), data/ "
                  f"({len(report.manifest['tables'])} tables, {report.manifest['artifacts']['files']} artifact "
                  "files), croissant.json and README.md")


@app.command()
def demo(
    large: Annotated[bool, typer.Option("--large", help="Add the larger settings meant for GPU machines.")] = False,
    executor: Annotated[str, typer.Option(help="local, or ray (pip install 'modelsci\\[ray]').")] = "local",
    address: Annotated[str | None, typer.Option(help="With --executor ray: join this cluster.")] = None,
) -> None:
    """Build the catalogue of the embedded default (bundled models and data) and show it.

    Example: modelsci demo
    """
    with _needs("demo", "demo"):
        from modelsci.demo import run_demo

    run_demo(_open(create=True), console, large=large, executor=executor, address=address)


def main() -> None:
    """Console-script entry point: user errors in one line (exit 1), bugs with a traceback (exit 70)."""
    try:
        app()
    except ModelsciError as exc:
        _print_error(str(exc))
        sys.exit(1)
    except OSError as exc:
        if exc.filename is None:  # not about a path the user named: ours to fix
            _report_bug(exc)
        _print_error(f"{exc.strerror or exc}: {exc.filename}")
        sys.exit(1)
    except KeyboardInterrupt:
        _print_error("interrupted")
        sys.exit(130)
    except Exception as exc:
        _report_bug(exc)


def _report_bug(exc: BaseException) -> NoReturn:
    err.print("".join(traceback.format_exception(exc)), end="")
    _print_error(f"this is a bug in modelsci {modelsci.__version__} ({type(exc).__name__}); "
                 "please report it with the traceback above")
    sys.exit(BUG_EXIT_CODE)
