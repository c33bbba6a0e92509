"""Docs that cannot rot, and the CLI's contract: help with examples, one-line errors, the demo."""

from __future__ import annotations

import re
import sys

import pytest
import typer
from typer.testing import CliRunner

import modelsci as modelsci_package
from modelsci import catalogue
from modelsci.catalogue.docs import README_BEGIN, README_END, tables_reference
from modelsci.catalogue.schema import TABLES
from modelsci.cli import app
from tests.conftest import REPO, modelsci
from tests.models import installed_plugin

README = (REPO / "README.md").read_text()


def leaf_commands(typer_app: typer.Typer, prefix: tuple[str, ...] = ()) -> list[str]:
    """Every command a user can call, ``site build`` included: sub-apps are walked, not only the top level."""
    names = [" ".join((*prefix, c.name or c.callback.__name__.replace("_", "-")))
             for c in typer_app.registered_commands if not c.hidden]
    for group in typer_app.registered_groups:
        if not group.hidden:
            names += leaf_commands(group.typer_instance, (*prefix, group.name or group.typer_instance.info.name))
    return names


COMMANDS = sorted(leaf_commands(app))


def test_readme_table_reference_is_the_generated_one() -> None:
    start, end = README.index(README_BEGIN) + len(README_BEGIN), README.index(README_END)
    assert README[start:end].strip() == tables_reference().strip(), (
        "README's table reference is stale: regenerate it with `python -m modelsci.catalogue.docs`")


def test_every_column_has_a_description() -> None:
    missing = [f"{t.name}.{c.name}" for t in TABLES.values() for c in t.columns if not c.description]
    assert missing == []


def test_the_command_list_reaches_the_sub_apps() -> None:
    assert {"site build", "site serve", "sql", "run"} <= set(COMMANDS) and "site" not in COMMANDS


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_is_in_the_readme_and_its_help_has_an_example(command) -> None:
    cli_section = README[README.index("<!-- cli:begin -->"):README.index("<!-- cli:end -->")]
    assert f"`modelsci {command}" in cli_section
    # in this process: the same text as the installed command prints (COLUMNS as modelsci() sets it), without
    # a Python start per command
    result = CliRunner().invoke(app, [*command.split(), "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    help_text = result.output
    assert re.search(r"Example:?\s+modelsci\s+" + r"\s+".join(map(re.escape, command.split())), help_text), help_text


def in_process(*args: str, catalogue_dir, capsys, monkeypatch) -> tuple[int, str]:  # noqa: ANN001
    """Exit code and stderr of the console script's entry point (``modelsci.cli:main``) run in this
    process, as the installed ``modelsci`` runs it, without a Python start per call."""
    from modelsci.cli import main

    monkeypatch.setattr(sys, "argv", ["modelsci", "--catalogue", str(catalogue_dir), *args])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main()
    return exit_.value.code, capsys.readouterr().err


def test_user_errors_are_one_line_with_a_nonzero_exit(tmp_path, capsys, monkeypatch) -> None:
    cases = [
        (["show", "sha256:nothing"], "nothing in the catalogue has the id"),
        (["sql", "SELECT * FROM findings", "--as-of", "99"], "no commit '99' in the catalogue"),
        (["sql", "SELEC oops"], "could not parse the SQL"),
        (["import", str(tmp_path / "nowhere")], "is not a modelsci export"),
        (["history", "sha256:nothing"], "no finding or finding key"),
        (["show", "[/x] [bold]y"], "nothing in the catalogue has the id '[/x] [bold]y'"),  # printed literally
        (["sql", "SELECT nothing_here FROM findings"], 'column "nothing_here" not found'),
        (["sql", "SELECT 1", "--format", "csv", "--out", str(tmp_path / "no" / "dir.csv")],
         f"No such file or directory: {tmp_path / 'no' / 'dir.csv'}"),
    ]
    catalogue.open(tmp_path / "cat", create=True)
    for args, message in cases:
        code, stderr = in_process(*args, catalogue_dir=tmp_path / "cat", capsys=capsys, monkeypatch=monkeypatch)
        assert code == 1, (args, stderr)
        assert message in stderr and "Traceback" not in stderr, stderr
    # and once through the installed command
    result = modelsci(*cases[0][0], catalogue_dir=tmp_path / "cat", check=False)
    assert result.returncode == 1 and cases[0][1] in result.stderr and "Traceback" not in result.stderr, result.stderr


@pytest.mark.parametrize("args", [["sql", "SELECT 1"], ["findings"], ["status"], ["check"], ["export", "out"],
                                  ["run"], ["site", "build"]], ids=lambda a: " ".join(a))
def test_commands_on_a_folder_without_a_catalogue_say_so_and_create_nothing(tmp_path, args, capsys,
                                                                           monkeypatch) -> None:
    typo = tmp_path / "typo"
    monkeypatch.chdir(tmp_path)  # where `export out` would write
    code, stderr = in_process(*args, catalogue_dir=typo, capsys=capsys, monkeypatch=monkeypatch)
    assert code == 1 and "Traceback" not in stderr, stderr
    assert f"error: {typo} holds no modelsci catalogue (no catalogue.duckdb)" in stderr
    assert not typo.exists()


def test_version_prints_the_installed_version() -> None:
    assert modelsci("--version").stdout == f"modelsci {modelsci_package.__version__}\n"


NOT_A_PLUGIN = "Broken = 42\n"


def test_a_bug_prints_its_traceback_and_says_so_with_its_own_exit_code(tmp_path) -> None:
    env = installed_plugin(tmp_path / "site", "broken_lab", NOT_A_PLUGIN, "testing.broken", "Broken")
    result = modelsci("analyses", env=env, check=False)
    assert result.returncode == 70, (result.stdout, result.stderr)
    assert "Traceback (most recent call last)" in result.stderr
    assert "TypeError: entry point testing.broken = broken_lab:Broken is not an AnalysisPlugin subclass" in result.stderr
    assert f"error: this is a bug in modelsci {modelsci_package.__version__} (TypeError)" in result.stderr


def test_demo_builds_a_checked_catalogue_and_a_second_run_reuses_it(tmp_path) -> None:
    cat_dir = tmp_path / "cat"
    first = modelsci("demo", catalogue_dir=cat_dir, timeout=600).stdout
    cat = catalogue.open(cat_dir, create=True)
    runs = cat.sql("SELECT count(*) AS n FROM runs WHERE status = 'succeeded'").to_pylist()[0]["n"]
    assert f"{runs} run(s) succeeded, 0 failed" in first and f"catalogue: {cat_dir}" in first
    families = cat.sql("SELECT DISTINCT split_part(analysis_name, '.', 1) AS f FROM findings ORDER BY f").to_pylist()
    assert [f["f"] for f in families] == ["attribution", "evaluation", "hallucination", "interactions", "multiplicity"]
    accuracy = cat.sql("SELECT f.value FROM findings_current f JOIN models m ON m.id = f.model_id "
                       "WHERE f.kind = 'accuracy' AND m.architecture = 'Pipeline'").to_pylist()[0]["value"]
    assert f"model=breast_cancer_logreg, architecture=Pipeline, kind=accuracy, value={round(accuracy, 4)}" \
        in first.replace("\n", " ").replace(",  ", ", ")
    commits = cat.sql("SELECT count(*) AS n FROM commits").to_pylist()
    second = modelsci("demo", catalogue_dir=cat_dir, timeout=600).stdout
    assert "0 run(s) succeeded, 0 failed" in second and "0 run(s) queued" in second
    assert cat.sql("SELECT count(*) AS n FROM commits").to_pylist() == commits
    assert "ok: catalogue consistent" in modelsci("check", catalogue_dir=cat_dir).stdout
    assert (cat_dir / "export/manifest.json").is_file()
    assert f"site: {cat_dir / 'site' / 'index.html'}" in first and (cat_dir / "site/query.html").is_file()


@pytest.mark.parametrize("manifest", sorted((REPO / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_manifest_names_files_that_exist_and_local_ones_submit(manifest, tmp_path) -> None:
    import yaml

    from modelsci.planner import read_manifest, submit

    data = yaml.safe_load(manifest.read_text())
    sources = [data["model"]["source"], *([data["dataset"]["source"]] if data.get("dataset") else [])]
    local = [s for s in sources if "://" not in s]
    for source in local:
        assert (manifest.parent / source).exists(), f"{manifest.name} names {source}, which does not exist"
    if len(local) == len(sources):  # hub sources would need the network
        submission = submit(catalogue.open(tmp_path / "cat", create=True), read_manifest(manifest), base_dir=manifest.parent)
        assert submission.queued
