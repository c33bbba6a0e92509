"""One import package with one-way layers, a wheel that holds it all, and a core install without torch."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO, accuracy_bundle, modelsci
from tests.models import breast_cancer_skops, installed_plugin, write_manifest

# Each folder's layer; a module may import its own layer's package and earlier layers only,
# and the two packages of layer 1 do not import each other.
LAYERS = {"schemas": 0, "ingest": 1, "catalogue": 1, "analyses": 2, "modelsci": 3}
SOURCE_FOLDERS = tuple(LAYERS)


def _package(module: str) -> str | None:
    """The layer package of a dotted module name: ``modelsci.catalogue.store`` -> ``catalogue``."""
    parts = module.split(".")
    if parts[0] != "modelsci":
        return None
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS and parts[1] != "modelsci" else "modelsci"


def _module_of(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts if parts[0] == "modelsci" else ["modelsci", *parts])


def _imports(path: Path) -> set[str]:
    """Every absolute module an import statement names, at any depth (lazy imports count too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def layer_violations(root: Path) -> list[str]:
    """Imports against the layer order, and circles of modules, in the source folders under ``root``."""
    modules = {_module_of(p, root): p for folder in SOURCE_FOLDERS for p in (root / folder).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    problems = []
    for module, path in sorted(modules.items()):
        source = _package(module)
        edges = set()
        for name in _imports(path):
            target = name if name in modules else name.rpartition(".")[0]
            if target not in modules or target == module:
                continue
            edges.add(target)
            dest = _package(target)
            if dest != source and LAYERS[dest] >= LAYERS[source]:
                problems.append(f"{path.relative_to(root)} imports {target} ({source} -> {dest})")
        graph[module] = edges
    problems += [f"circle: {' <-> '.join(c)}" for c in _circles(graph)]
    return problems


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while (w := stack.pop()) != v:
                component.append(w)
            if component:
                out.append(sorted([v, *component]))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_imports_run_one_way_down_the_layers() -> None:
    assert layer_violations(REPO) == []


def test_a_back_edge_or_a_circle_fails_the_layer_check(tmp_path: Path) -> None:
    for folder in SOURCE_FOLDERS:
        shutil.copytree(REPO / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    entities = tmp_path / "schemas" / "entities.py"
    entities.write_text(entities.read_text() + "\nfrom modelsci.analyses.base import registry\n")
    problems = layer_violations(tmp_path)
    assert "schemas/entities.py imports modelsci.analyses.base (schemas -> analyses)" in problems
    assert any(p.startswith("circle: ") and "modelsci.schemas.entities" in p for p in problems)


# -- the wheel ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from a copy of the repository's tracked and untracked-but-not-ignored files."""
    copy = tmp_path_factory.mktemp("repo")
    listed = subprocess.run(["git", "-C", str(REPO), "ls-files", "-co", "--exclude-standard", "-z"],
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        if (REPO / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, copy / name)
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(out), str(copy)], check=True, capture_output=True, timeout=300)
    (built,) = out.glob("modelsci-*.whl")
    return built


def test_the_wheel_installs_one_import_name_with_its_site_sources_and_demo_inputs(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        record = next(n for n in archive.namelist() if n.endswith(".dist-info/RECORD"))
        files = [line.split(",")[0] for line in archive.read(record).decode().splitlines()]
    python = [f for f in files if f.endswith(".py")]
    assert python and all(f.startswith("modelsci/") for f in python), [f for f in python if not f.startswith("modelsci/")]
    top_level = {f.split("/")[0] for f in files if ".dist-info/" not in f}
    assert top_level == {"modelsci"}
    sources = {_module_of(p, REPO) for folder in SOURCE_FOLDERS for p in (REPO / folder).rglob("*.py")}
    shipped = {_module_of(Path(f), Path()) for f in python}
    assert sources - shipped == set(), "modules missing from the wheel"
    for name in ("modelsci/site/mkdocs.yml", "modelsci/site/package-lock.json", "modelsci/site/templates/model.md.j2",
                 "modelsci/site/assets/query.js", "modelsci/demo_inputs/breast_cancer_logreg.yaml",
                 "modelsci/demo_inputs/sentence_pairs.csv", "modelsci/demo_inputs/large/toy_grid_2d.yaml"):
        assert name in files, name
    assert not any("node_modules" in f for f in files)


@pytest.fixture(scope="session")
def core_env(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with the wheel installed without extras, and PyPI's `catalogue` beside it."""
    env = tmp_path_factory.mktemp("core-env")
    venv.create(env, with_pip=True)
    pip = [str(env / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, str(wheel), "catalogue"], check=True, capture_output=True, timeout=600, cwd=env)
    return env


def _in_core_env(env: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    # Outside the repository: from its root, `import catalogue` would find the repository's folder.
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=cwd,
                          env={**clean, "PATH": f"{env / 'bin'}:{clean.get('PATH', '')}", "COLUMNS": "200"})


def test_a_core_install_answers_sql_without_torch_and_says_how_to_add_analyses(
        core_env: Path, tmp_path: Path) -> None:
    import modelsci

    cat = modelsci.open(tmp_path / "cat", create=True)
    cat.commit(accuracy_bundle(0.875, (0.8, 0.95)))
    version = _in_core_env(core_env, "modelsci", "--version", cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.strip() == f"modelsci {modelsci.__version__}", version
    answer = _in_core_env(core_env, "modelsci", "-C", str(tmp_path / "cat"), "sql",
                          "SELECT kind, value FROM findings_current", "--format", "csv", cwd=tmp_path)
    assert answer.returncode == 0 and answer.stdout == "kind,value\naccuracy,0.875\n", answer
    no_torch = _in_core_env(core_env, "python", "-c", "import torch", cwd=tmp_path)
    assert no_torch.returncode == 1 and "No module named 'torch'" in no_torch.stderr
    listing = _in_core_env(core_env, "modelsci", "analyses", cwd=tmp_path)
    assert listing.returncode == 0, listing
    assert "attribution.shapley: pip install 'modelsci[hf,explain]'" in listing.stdout
    assert "hallucination.lid: pip install 'modelsci[hf,diffusion,sklearn]'" in listing.stdout
    assert "missing: huggingface_hub" in listing.stdout


def test_pypis_catalogue_package_and_modelsci_live_side_by_side(core_env: Path, tmp_path: Path) -> None:
    import modelsci

    modelsci.open(tmp_path / "cat", create=True).commit(accuracy_bundle(0.5, None))
    theirs = _in_core_env(core_env, "python", "-c",
                          "import catalogue; print(catalogue.create('modelsci_test', 'things').namespace)",
                          cwd=tmp_path)
    assert theirs.returncode == 0 and theirs.stdout.strip() == "('modelsci_test', 'things')", theirs
    ours = _in_core_env(core_env, "modelsci", "-C", str(tmp_path / "cat"), "sql",
                        "SELECT count(*) AS n FROM findings", "--format", "csv", cwd=tmp_path)
    assert ours.returncode == 0 and ours.stdout == "n\n1\n", ours


# -- an analysis whose extras are missing -----------------------------------------------------------

NEEDS_A_GPU_PACKAGE = '''
from modelsci.analyses.base import AnalysisPlugin
from modelsci.schemas.entities import Pillar

raise ImportError("an analysis whose extras are missing is never imported")


class Never(AnalysisPlugin):
    name = "testing.never"
'''


def test_an_analysis_whose_extras_are_missing_is_listed_with_its_install_line_and_refused_at_submit(
        tmp_path: Path) -> None:
    env = installed_plugin(tmp_path / "site", "gpu_lab", NEEDS_A_GPU_PACKAGE, "testing.never", "Never",
                           extras={"gpu": ["not-an-installed-package>=1", "numpy>=1"]})
    listing = modelsci("analyses", env=env).stdout
    assert "testing.never: pip install 'gpu-lab[gpu]'\n    missing: not-an-installed-package>=1\n" in listing
    assert "evaluation.performance @" in listing  # the installed ones are still listed in full
    manifest = write_manifest(tmp_path / "m.yaml", str(breast_cancer_skops(tmp_path / "lr")),
                              analyses=[{"name": "testing.never"}])
    cat_dir = tmp_path / "cat"
    result = modelsci("submit", str(manifest), catalogue_dir=cat_dir, env=env, check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert ("analyses[0].name: testing.never is not installed here (what it needs is missing): "
            "pip install 'gpu-lab[gpu]'") in result.stderr.replace("\n", " ")


def test_every_package_the_code_imports_is_declared() -> None:
    import re
    import tomllib
    from importlib.metadata import packages_distributions

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = {re.split(r"[<>=!~\[; ]", r)[0].lower().replace("_", "-")
                for r in [*project["dependencies"], *sum(project["optional-dependencies"].values(), [])]}
    distributions = packages_distributions()
    imported = set()
    for folder in SOURCE_FOLDERS:
        for path in (REPO / folder).rglob("*.py"):
            imported |= {name.split(".")[0] for name in _imports(path)}
    third_party = {n for n in imported - set(sys.stdlib_module_names) - {"modelsci", "__future__"}}
    undeclared = {name: distributions.get(name) for name in third_party
                  if not {d.lower().replace("_", "-") for d in distributions.get(name, [name])} & declared}
    assert undeclared == {}
