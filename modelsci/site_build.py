"""``modelsci site build``: the catalogue as a static site (jinja2 -> Markdown -> mkdocs-material).

Pages: home, one per model instance, dataset, analysis and finding, and a Query page running
DuckDB-WASM on the catalogue's Parquet export shipped inside the site. Plots are inline SVG
drawn at build time.

Contributor text is data, never markup, in three layers:

1. Every ``{{ value }}`` in the templates goes through ``as_text`` (the environment's
   ``finalize``): HTML-escaped, and every character Markdown or YAML front matter gives a
   meaning written as a numeric character reference, so a name, path, card field, column or
   statement shows as the same text in a cell, a paragraph, a heading, an attribute or the
   page's title, and can form no tag, link, image, emphasis or block. Page titles come from
   front matter (``page_start`` in ``_macros.j2``): mkdocs-material unescapes a title taken
   from the h1 before writing it into ``<title>``.
2. Links are built here, never taken from contributor text: pages of this site (``slug``,
   ``Site.finding_href``) and hub pages of ``hf://`` sources (``hub_url``).
3. After mkdocs writes the pages, each gets a Content-Security-Policy ``<meta>`` allowing
   scripts from the site itself and, by sha256, the inline scripts the theme's partials and
   the templates write literally; a page holding any other inline script fails the build.

Big catalogues: above ``max_finding_pages`` findings, findings are rows of their model's page
(with an anchor each) instead of pages of their own, and finding tables are excluded from the
search index, which keeps the index to the pages' prose (see the README's site section).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pyarrow.parquet as pq
from markupsafe import Markup

from modelsci import plots, site_views
from modelsci.analyses.base import registry
from modelsci.catalogue.schema import TABLES
from modelsci.catalogue.store import Catalogue
from modelsci.catalogue.transfer import export
from modelsci.plots_vision_language import example_image, faithfulness_comparison, vision_language_view
from modelsci.query_page import write_query_config
from modelsci.resources import site_sources

__all__ = ["SiteReport", "as_text", "build_site", "hub_url", "slug"]
MAX_FINDING_PAGES = 5000
_DUCKDB_FILES = ("duckdb-browser.mjs", "duckdb-browser-eh.worker.js", "duckdb-eh.wasm")
PILLARS = ("verify", "explore", "steer", "refine")


@dataclass
class SiteReport:
    out: Path
    pages: int
    finding_pages: bool
    query_page: bool
    notes: list[str] = field(default_factory=list)


# Characters HTML, Markdown (python-markdown and the pymdownx extensions a config might add) or
# YAML front matter give a meaning; as_text writes each as a numeric character reference. Line
# breaks (and C0/C1 controls, which YAML rejects) go too: a value stays on its line, so it can
# never start a heading, list, table, code or HTML block.
_SPECIAL = "&<>\"'\\`*_{}[]()#+-.!|~:=^$"
_ESCAPES = {ord(c): f"&#{ord(c)};" for c in _SPECIAL}
_ESCAPES.update({c: f"&#{c};" for c in (*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029, 0xFFFE, 0xFFFF)})
_EDGE_SPACES = re.compile(r"^ +| +$")  # leading spaces make a code block, trailing ones a line break
_SURROGATES = re.compile(r"[\ud800-\udfff]")


def as_text(value: Any) -> Markup:
    """``value`` as page text: it shows as itself in HTML, Markdown and a front-matter title, and forms no markup."""
    text = _SURROGATES.sub("\ufffd", str(value)).translate(_ESCAPES)
    return Markup(_EDGE_SPACES.sub(lambda m: "&#32;" * len(m.group(0)), text))


_SLUG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def slug(entity_id: str) -> str:
    """File name of an entity's page: its hash without the ``sha256:`` prefix.

    Safe in a path and a URL (letters, digits, ``.``, ``_``, ``-``); an id or name with other
    characters keeps its safe ones and gets a hash of the whole, so that slugs stay distinct.
    """
    plain = entity_id.removeprefix("sha256:").replace("/", "_").replace("@", "-")
    if _SLUG.fullmatch(plain):
        return plain
    kept = re.sub(r"[^A-Za-z0-9._-]+", "_", plain).strip("._-")[:80]
    return f"{kept or 'x'}-{hashlib.sha256(entity_id.encode()).hexdigest()[:16]}"


_HUB_REPO = re.compile(r"hf://([A-Za-z0-9][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]+)*/[A-Za-z0-9][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]+)*)")


def hub_url(source_uri: str | None, *, dataset: bool = False) -> Markup | None:
    """The Hugging Face page of an ``hf://org/name`` source, or None: the one outside address pages link to."""
    match = _HUB_REPO.fullmatch(source_uri or "")
    if match is None:
        return None
    return Markup(f"https://huggingface.co/{'datasets/' if dataset else ''}{match[1]}")


class Site:
    """The catalogue's rows, loaded once, and the links between its pages."""

    def __init__(self, cat: Catalogue, max_finding_pages: int) -> None:
        self.cat = cat
        tables = {name: cat.query(f"SELECT * FROM {name}").to_pylist() for name in
                  ("models", "datasets", "analyses", "runs", "findings", "finding_links", "artifacts", "commits")}
        for name, rows in tables.items():  # JSON columns arrive as text; the schema says which they are
            for column in TABLES[name].json_columns:
                for row in rows:
                    row[column] = json.loads(row[column]) if row[column] is not None else None
        self.tables = tables
        self.models = {m["id"]: m for m in tables["models"]}
        self.datasets = {d["id"]: d for d in tables["datasets"]}
        self.runs = {r["id"]: r for r in tables["runs"]}
        self.commits = {c["id"]: c for c in tables["commits"]}
        self.findings = {f["id"]: f for f in tables["findings"]}
        self.analyses_by_name: dict[str, list[dict]] = defaultdict(list)
        for a in tables["analyses"]:
            self.analyses_by_name[a["name"]].append(a)
        self.artifacts: dict[str, list[dict]] = defaultdict(list)
        for a in tables["artifacts"]:
            self.artifacts[a["finding_id"]].append(a)
        self.links: dict[str, list[dict]] = defaultdict(list)
        for link in tables["finding_links"]:
            self.links[link["src_id"]].append({**link, "direction": "to", "other": link["dst_id"]})
            self.links[link["dst_id"]].append({**link, "direction": "from", "other": link["src_id"]})
        self.finding_pages = len(self.findings) <= max_finding_pages
        # One row per replication key (the seeds of a finding summarised): what pages show first.
        self.summaries: dict[str, list[dict]] = defaultdict(list)
        for row in cat.query("SELECT * FROM findings_summary ORDER BY analysis_name, kind, subject").to_pylist():
            self.summaries[row["model_id"]].append({**row, "id": row["first_id"]})
        self.children = site_views.children_of(self.models)
        # Ancestors' findings each model inherits (findings_lineage), shown beside its own.
        self.ancestors = site_views.ancestor_findings(cat)

    def finding_href(self, finding_id: str, depth: int = 1) -> Markup:
        """Where a finding is shown: its page, or its row of its model's page."""
        up = "../" * depth
        if self.finding_pages:
            return Markup(f"{up}findings/{slug(finding_id)}.html")
        model = self.findings[finding_id]["model_id"]
        return Markup(f"{up}models/{slug(model)}.html#f-{slug(finding_id)[:16]}")

    def artifact_rows(self, artifact: dict) -> list[dict]:
        return pq.read_table(self.cat.root / artifact["path"]).to_pylist()


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(site_sources() / "templates"),
        # Every {{ }} goes through as_text; Markup (macros, slugs, numbers, links built here, the
        # SVG of plots.py marked `safe`) passes as it is. The rule is written in _macros.j2.
        autoescape=True, finalize=_finalize,
        trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined,
    )
    # jinja2's own filters that turn text into Markup escape for HTML only: replaced by ones that
    # use as_text, or removed (a template that uses one fails to load, with the filter's name).
    for name in ("e", "escape", "forceescape"):
        env.filters[name] = as_text
    env.filters["join"] = _join
    for name in ("tojson", "urlize", "xmlattr"):
        del env.filters[name]
    env.filters["slug"] = lambda v: Markup(slug(v))
    env.filters["short"] = lambda v: (v or "")[:19]
    env.filters["num"] = _num
    env.filters["json"] = lambda v, indent=2: json.dumps(v, indent=indent, default=str, sort_keys=True)
    env.globals["hub_url"] = hub_url
    return env


def _finalize(value: Any) -> Any:
    if value is None:
        return ""
    return value if hasattr(value, "__html__") else as_text(value)


def _join(items: Any, separator: str = "") -> Markup:
    return Markup(as_text(separator).join(_finalize(item) for item in items))


def _num(value: Any) -> Markup:
    """A number as the pages show it (4 significant digits for floats); anything else as text."""
    if value is None:
        return Markup("")
    if isinstance(value, float):
        return Markup(f"{value:.4g}")
    if isinstance(value, int) and not isinstance(value, bool):
        return Markup(str(value))
    return as_text(value)


def build_site(cat: Catalogue, out: str | Path | None = None, *,
               max_finding_pages: int = MAX_FINDING_PAGES) -> SiteReport:
    """Render the catalogue into ``out`` (default: ``<catalogue>/site``) and return what was built."""
    from mkdocs.commands.build import build
    from mkdocs.config import load_config

    out = Path(out) if out is not None else cat.root / "site"
    site = Site(cat, max_finding_pages)
    env = _environment()
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="modelsci-site-") as tmp:
        docs = Path(tmp) / "docs"
        (docs / "assets").mkdir(parents=True)
        shutil.copytree(site_sources() / "assets", docs / "assets", dirs_exist_ok=True)
        manifest = export(cat, docs / "data")
        # The export's README is a file of the export, not a page: as Markdown it would render
        # catalogue text (the head commit's id) that no template escaped.
        readme = (docs / "data" / "README.md").read_bytes()
        (docs / "data" / "README.md").unlink()
        query_page = _vendor_duckdb(docs / "assets" / "vendor", notes)
        if query_page:
            write_query_config(cat, manifest, docs)
        pages = _render_pages(site, env, docs, manifest, query_page)
        config = load_config(config_file=str(site_sources() / "mkdocs.yml"), docs_dir=str(docs),
                             site_dir=str(out), nav=_nav(site, query_page))
        build(config)
        (out / "data" / "README.md").write_bytes(readme)
        _add_content_security_policy(out, _own_inline_scripts(config, out))
    return SiteReport(out, pages, site.finding_pages, query_page, notes)


# -- Content-Security-Policy -------------------------------------------------------------------

_SCRIPT = re.compile(r"<script\b([^>]*)>(.*?)</script\s*>", re.S | re.I)
_SCRIPT_TYPE = re.compile(r"""\btype\s*=\s*["']?([^"' >]*)""", re.I)
_EXECUTED_TYPES = {"", "text/javascript", "application/javascript", "module", "importmap"}
# DuckDB-WASM compiles WebAssembly in its worker. Chromium gives a worker served over http the
# policy of its own response (none), not the page's, and runs without it; 'wasm-unsafe-eval' is
# for browsers that hand the page's policy to its workers. It allows WebAssembly, not eval().
_WASM_PAGES = {"query.html", "compare.html"}


def _content_security_policy(script_hashes: list[str], *, wasm: bool = False) -> str:
    """The policy of one page: scripts from the site and the given inline ones, nothing from elsewhere.

    Styles may be inline (the theme's and the plots' ``style`` attributes, matplotlib's SVG
    ``<style>``); images may be ``data:`` (the theme's icons in its CSS, matplotlib's rasters).
    """
    scripts = " ".join(["'self'", *(f"'{h}'" for h in script_hashes), *(["'wasm-unsafe-eval'"] if wasm else [])])
    return (f"default-src 'none'; script-src {scripts}; worker-src 'self'; connect-src 'self'; "
            "style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self'; manifest-src 'self'; "
            "object-src 'none'; frame-src 'none'; base-uri 'self'; form-action 'self'")


def _inline_scripts(html: str) -> list[str]:
    """The text of each inline script a browser would run (or read as an import map)."""
    found = []
    for attrs, body in _SCRIPT.findall(html):
        kind = _SCRIPT_TYPE.search(attrs)
        if not re.search(r"\bsrc\s*=", attrs, re.I) and (kind[1].lower() if kind else "") in _EXECUTED_TYPES:
            found.append(body)
    return found


def _own_inline_scripts(config: Any, out: Path) -> set[str]:
    """Inline scripts written by the theme's script partials (for each page depth) and, literally, by the templates."""
    env = config.theme.get_env()
    partials = [name for name in env.list_templates() if name.startswith("partials/javascripts/")]
    depths = {len(page.relative_to(out).parts) - 1 for page in out.rglob("*.html")}
    base_urls = {"/".join([".."] * depth) or "." for depth in depths} | {"/"}  # "/": the 404 page
    own: set[str] = set()
    for name in partials:
        for base_url in base_urls:
            own.update(_inline_scripts(env.get_template(name).render(
                config=config, base_url=base_url, features=config.theme.get("features") or [])))
    for template in (site_sources() / "templates").glob("*.j2"):
        own.update(s for s in _inline_scripts(template.read_text()) if "{{" not in s and "{%" not in s)
    return own


def _add_content_security_policy(out: Path, own: set[str]) -> None:
    """Put a CSP ``<meta>`` first in every page's head, allowing the inline scripts it holds by hash.

    An inline script that neither the theme nor the templates wrote can only be contributor text
    that became markup: a bug of the escaping, so the build stops instead of publishing it.
    """
    for page in out.rglob("*.html"):
        html = page.read_text()
        scripts = _inline_scripts(html)
        foreign = [s for s in scripts if s not in own]
        if foreign:
            raise RuntimeError(f"{page.relative_to(out)} holds an inline script that neither the theme nor "
                               f"the templates wrote ({foreign[0][:80]!r}): contributor text became markup")
        hashes = sorted({"sha256-" + base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()
                         for s in scripts if s in own})
        policy = _content_security_policy(hashes, wasm=page.relative_to(out).as_posix() in _WASM_PAGES)
        # Right after the charset (which must come first), before anything the policy governs.
        anchor = re.search(r"<meta charset=[^>]*>", html) or re.search(r"<head>", html)
        if anchor is None:
            raise RuntimeError(f"{page.relative_to(out)} has no <head> to put the Content-Security-Policy in")
        meta = f'\n    <meta http-equiv="Content-Security-Policy" content="{policy}">'
        page.write_text(html[:anchor.end()] + meta + html[anchor.end():])


def _vendor_duckdb(vendor: Path, notes: list[str]) -> bool:
    """Copy DuckDB-WASM and Apache Arrow (installed from the shipped package-lock.json) into the site."""
    modules = _node_modules()
    if not (modules / "@duckdb" / "duckdb-wasm").exists():
        npm = shutil.which("npm")
        if npm is None:
            notes.append("npm is not installed: the Query page is left out (install Node.js and npm, "
                         "e.g. apt-get install npm, and rebuild)")
            return False
        # npm works in a cache folder of its own: the shipped sources may be read-only.
        for name in ("package.json", "package-lock.json"):
            shutil.copyfile(site_sources() / name, modules.parent / name)
        subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--silent"], cwd=modules.parent, check=True)
    dist = modules / "@duckdb" / "duckdb-wasm" / "dist"
    (vendor / "duckdb").mkdir(parents=True, exist_ok=True)
    for name in _DUCKDB_FILES:
        shutil.copyfile(dist / name, vendor / "duckdb" / name)
    # The ES module trees duckdb-browser.mjs imports, mapped by the Query page's import map.
    for package, pattern in (("apache-arrow", "*.mjs"), ("flatbuffers", "mjs/*.js"), ("tslib", "tslib.es6.mjs")):
        root = modules / package
        for file in root.glob(pattern) if "/" in pattern or package == "tslib" else root.rglob(pattern):
            relative = file.relative_to(root)
            if "node_modules" in relative.parts or relative.parts[0] in ("bin", "io") and package == "apache-arrow" and "node" in file.name:
                continue
            target = vendor / package / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(file, target)
    return True


def _node_modules() -> Path:
    """Where npm installs the lock's packages: a cache folder named by the lock's hash."""
    lock = (site_sources() / "package-lock.json").read_bytes()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    folder = cache / "modelsci" / f"duckdb-wasm-{hashlib.sha256(lock).hexdigest()[:12]}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / "node_modules"


def _nav(site: Site, query_page: bool) -> list[Any]:
    nav: list[Any] = [{"Home": "index.md"}, {"Models": "models/index.md"},
                      {"Datasets": "datasets/index.md"}, {"Analyses": "analyses/index.md"}]
    if query_page:
        nav += [{"Query": "query.md"}, {"Compare": "compare.md"}]
    return nav


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _render_pages(site: Site, env: jinja2.Environment, docs: Path, manifest: dict[str, Any], query_page: bool) -> int:
    head = manifest.get("catalogue_commit")
    common = {"site": site, "head": head, "pillars": PILLARS}
    pages = 0
    boards = _leaderboards(site)
    counts = {k: len(v) for k, v in site.tables.items()}
    derived = sum(site_views.is_derived(m) for m in site.models.values())
    counts.update(derived_models=derived, submitted_models=len(site.models) - derived)
    _write(docs / "index.md", env.get_template("index.md.j2").render(
        **common, counts=counts, query_page=query_page, headlines=site_views.home_headlines(boards),
        newest=site_views.newest_findings(site.summaries, site.findings, site.commits, site.models),
        changes=site_views.recent_changes(site.tables, site.models)))
    _write(docs / "models" / "index.md", env.get_template("models.md.j2").render(
        **common, **site_views.model_index(site.models, site.summaries)))
    _write(docs / "datasets" / "index.md", env.get_template("datasets.md.j2").render(
        **common, **site_views.dataset_index(site.datasets, site.summaries)))
    _write(docs / "analyses" / "index.md", env.get_template("analyses.md.j2").render(**common))
    pages += 4
    boards_by_analysis: dict[str, list[dict]] = defaultdict(list)
    boards_by_dataset: dict[str, list[dict]] = defaultdict(list)
    for board in boards:
        boards_by_analysis[board["analysis"]].append(board)
        boards_by_dataset[board["dataset_id"]].append(board)
    failed_runs: dict[str, list[dict]] = defaultdict(list)
    for run in sorted(site.runs.values(), key=lambda r: (r["analysis_id"], r["seed"], r["id"])):
        if run["status"] == "failed":
            failed_runs[run["model_id"]].append(run)
    model_template = env.get_template("model.md.j2")
    by_model: dict[str, list[dict]] = defaultdict(list)
    for f in site.findings.values():
        by_model[f["model_id"]].append(f)
    for model in site.models.values():
        findings = sorted(by_model.get(model["id"], []),
                          key=lambda f: (f["analysis_name"], f["kind"], f["subject"], f["seed"], f["version"] or 0))
        _write(docs / "models" / f"{slug(model['id'])}.md", model_template.render(
            **common, model=model, card=_summary_card(site, model, failed_runs.get(model["id"], [])),
            groups=_groups(site, site.summaries.get(model["id"], []), _model_plots(site, model, findings)),
            seeds=[f for f in findings if f["status"] == "current"],
            superseded=[f for f in findings if f["status"] == "superseded"],
            verifications=[f for f in findings if f["status"] == "verification"],
            lineage=site_views.lineage(site.models, site.children, model),
            inherited=site_views.inherited_findings(model, site.ancestors.get(model["id"], {}), site.models,
                                                    site.summaries)))
        pages += 1
    dataset_template = env.get_template("dataset.md.j2")
    for dataset in site.datasets.values():
        used = sorted({f["model_id"] for f in site.findings.values() if f["dataset_id"] == dataset["id"]})
        _write(docs / "datasets" / f"{slug(dataset['id'])}.md", dataset_template.render(
            **common, dataset=dataset, models=[site.models[m] for m in used if m in site.models],
            boards=boards_by_dataset.get(dataset["id"], [])))
        pages += 1
    analysis_template = env.get_template("analysis.md.j2")
    for name, versions in site.analyses_by_name.items():
        findings = [f for f in site.findings.values() if f["analysis_name"] == name and f["status"] == "current"]
        _write(docs / "analyses" / f"{slug(name)}.md", analysis_template.render(
            **common, name=name, versions=versions, boards=boards_by_analysis.get(name, []),
            doc=registry().get(name), describe_command=f"modelsci analyses --describe {name}",
            models=[site.models[m] for m in sorted({f["model_id"] for f in findings}) if m in site.models]))
        pages += 1
    if site.finding_pages:
        finding_template = env.get_template("finding.md.j2")
        for finding in site.findings.values():
            _write(docs / "findings" / f"{slug(finding['id'])}.md", finding_template.render(
                **common, finding=finding, run=site.runs.get(finding["run_id"]),
                commit=site.commits.get(finding["commit_id"]), links=site.links.get(finding["id"], []),
                artifacts=[(a, _artifact_plot(site, a, site.models.get(finding["model_id"])))
                           for a in site.artifacts.get(finding["id"], [])]))
            pages += 1
    if query_page:
        _write(docs / "query.md", env.get_template("query.md.j2").render(**common, tables=sorted(manifest["tables"])))
        _write(docs / "compare.md", env.get_template("compare.md.j2").render(**common))
        pages += 2
    return pages


def _groups(site: Site, current: list[dict], model_plots: list[dict]) -> list[tuple[str, list]]:
    """Current findings by pillar, then analysis, each analysis with its plots."""
    grouped = []
    for pillar in PILLARS:
        analyses = []
        for name in sorted({f["analysis_name"] for f in current}):
            versions = site.analyses_by_name.get(name)
            if versions and versions[0]["pillar"] == pillar:
                analyses.append((name, [f for f in current if f["analysis_name"] == name],
                                 [p for p in model_plots if p["analysis"] == name]))
        if analyses:
            grouped.append((pillar, analyses))
    return grouped


def lower_is_better() -> frozenset[str]:
    """Kinds whose smaller values are better, as the installed analyses declare them: their leaderboards
    list the smallest first. Every other kind lists the largest first (for most, larger is better; for
    the rest no order is "best")."""
    return frozenset(k.kind for plugin in registry().values() for k in plugin.kinds if k.lower_is_better)


def _leaderboards(site: Site) -> list[dict[str, Any]]:
    """One board per (analysis, dataset, params_hash, kind) of whole-model summaries, its models best first.

    Only findings on the same data with the same parameters are comparable, so each such group
    is a table of its own; seeds are summarised (``findings_summary``: mean and interval).
    """
    groups: dict[tuple[str, str, str, str], list[dict]] = defaultdict(list)
    for model_id, rows in site.summaries.items():
        if model_id not in site.models:
            continue
        for s in rows:
            if s["subject"] == "" and s["mean"] is not None and s["mean"] == s["mean"]:  # NaN != NaN
                groups[(s["analysis_name"], s["dataset_id"] or "", s["params_hash"], s["kind"])].append(s)
    boards = []
    smallest_first = lower_is_better()
    for (analysis, dataset_id, params_hash, kind), rows in sorted(groups.items()):
        ascending = kind in smallest_first
        rows.sort(key=lambda s: (s["mean"] if ascending else -s["mean"], s["model_id"]))
        first = site.findings.get(rows[0]["first_id"])
        run = site.runs.get(first["run_id"]) if first else None
        boards.append({"analysis": analysis, "dataset": site.datasets.get(dataset_id), "dataset_id": dataset_id,
                       "params_hash": params_hash, "params": run["params"] if run else None, "kind": kind,
                       "ascending": ascending, "rows": [(site.models[s["model_id"]], s) for s in rows]})
    return boards


def _summary_card(site: Site, model: dict, failed: list[dict]) -> dict[str, list]:
    """What the top of a model's page says at a glance: headline summaries, each a finding to link to."""
    rows = site.summaries.get(model["id"], [])
    family = {name: versions[0]["family"] for name, versions in site.analyses_by_name.items()}
    metrics = sorted((s for s in rows if s["analysis_name"] == "evaluation.performance" and s["subject"] == ""),
                     key=lambda s: (s["dataset_id"] or "", s["params_hash"], s["kind"]))
    features: list[dict] = []
    by_group: dict[tuple, list[dict]] = defaultdict(list)
    for s in rows:
        if s["kind"] == "feature_importance" and s["mean"] is not None:
            by_group[(s["analysis_name"], s["dataset_id"] or "", s["params_hash"])].append(s)
    for _, importance in sorted(by_group.items()):
        features.extend(sorted(importance, key=lambda s: -s["mean"])[:3])
    if not features:  # an attribution that writes the top feature alone
        features = [s for s in rows if s["kind"] == "most_important_feature"]
    # Whole-model findings, and whether a manifold filter matches or exceeds the temporal one.
    headlines = [s for s in rows if family.get(s["analysis_name"]) in ("multiplicity", "hallucination")
                 and (s["subject"] == "" or s["kind"] == "auroc_difference")]
    # The strongest interaction of each interaction analysis: its players' names are in the first seed's metrics.
    interactions = []
    for s in sorted((s for s in rows if s["kind"] == "strongest_interaction" and s["mean"] is not None),
                    key=lambda s: -abs(s["mean"])):
        names = ((site.findings.get(s["first_id"]) or {}).get("metrics") or {}).get("names")
        interactions.append({"summary": s, "names": names if isinstance(names, list) else None})
    return {"metrics": metrics, "features": features, "interactions": interactions, "headlines": headlines,
            "failed": failed}


def _model_plots(site: Site, model: dict, findings: list[dict]) -> list[dict[str, str]]:
    """One or more plots per analysis family that has findings about this model, each with a caption saying what it shows."""
    shown: list[dict[str, str]] = []
    current = [f for f in findings if f["status"] == "current"]
    by_analysis: dict[str, list[dict]] = defaultdict(list)
    for f in current:
        by_analysis[f["analysis_name"]].append(f)
    for analysis, items in sorted(by_analysis.items()):
        family = analysis.split(".")[0]
        first_seed: dict[tuple[str, str], int] = {}
        for f in items:
            key = (f["kind"], f["subject"])
            first_seed[key] = min(first_seed.get(key, f["seed"]), f["seed"])
        # Seeds summarised, as in the table below the plot: one bar per feature, whiskers its interval.
        importance = [s for s in site.summaries.get(model["id"], [])
                      if s["analysis_name"] == analysis and s["kind"] == "feature_importance" and s["mean"] is not None]
        if importance:
            svg = plots.bars([s["subject"] for s in importance], [s["mean"] for s in importance],
                             [(s["ci_low"], s["ci_high"]) if s["ci_low"] is not None else None for s in importance],
                             title=f"{analysis}: mean |attribution|", xlabel="mean |attribution|")
            seeds = max(s["n_seeds"] for s in importance)
            shown.append({"family": family, "analysis": analysis, "html": svg,
                          "title": "Feature importance: the mean |attribution| of each feature over the examples"
                                   + (f", averaged over {seeds} seeds" if seeds > 1 else "") + " (the 15 largest)."})
        shown.extend(_comparison_plots(family, analysis, items, first_seed))
        for f in items:
            if f["kind"] in ("attribution", "interactions", "meta_attribution") and f["subject"] != "example:0":
                continue  # one example per analysis on the model page; the rest on finding pages
            if f["seed"] != first_seed[(f["kind"], f["subject"])]:
                continue  # the first seed's artifacts: the others' are on their finding pages
            for artifact in site.artifacts.get(f["id"], []):
                plot = _artifact_plot(site, artifact, model)
                if plot:
                    about = f" about {f['subject']}" if f["subject"] else ""
                    shown.append({"family": family, "analysis": analysis, "html": plot,
                                  "title": f"The {artifact['name']} table of the {f['kind']} finding{about}"
                                           f" (seed {f['seed']})."})
    return [p for p in shown if p["html"]]


def _comparison_plots(family: str, analysis: str, items: list[dict],
                      first_seed: dict[tuple[str, str], int]) -> list[dict[str, str]]:
    """The first seed's filter AUROCs and mitigated rates, each with its interval, as bars (the comparison's)."""
    shown = []
    for kind, title, xlabel, caption in (
            ("filter_auroc", "AUROC of each filter", "AUROC",
             "How well each filter separates hallucinated from in-support samples: AUROC with its bootstrap 95% CI"),
            ("mitigated_rate", "hallucination rate after each method", "hallucination rate",
             "The true hallucination rate without mitigation, after the quench and after its baselines at the same "
             "sampling compute, with Wilson 95% intervals")):
        chosen = sorted((f for f in items if f["kind"] == kind and f["value"] is not None
                         and f["seed"] == first_seed[(f["kind"], f["subject"])]), key=lambda f: f["subject"])
        if len(chosen) < 2 or not any(f["kind"] == "auroc_difference" for f in items):
            continue  # one analysis' own kinds: the filter analyses plot their scores instead
        svg = plots.bars([f["subject"] for f in chosen], [f["value"] for f in chosen],
                         [(f["ci_low"], f["ci_high"]) if f["ci_low"] is not None else None for f in chosen],
                         title=f"{analysis}: {title}", xlabel=xlabel)
        shown.append({"family": family, "analysis": analysis, "html": svg,
                      "title": f"{caption} (seed {chosen[0]['seed']})."})
    return shown


def _artifact_plot(site: Site, artifact: dict, model: dict | None) -> str | None:
    """The plot that fits an artifact, by its name; None when there is none."""
    try:
        return _plot_for(site, artifact, model)
    except (KeyError, ValueError, TypeError, IndexError):
        return None  # an artifact of a shape no plot knows: the page links it for download instead


def _example_image(site: Site, artifact: dict, example: int | None) -> np.ndarray | None:
    """A vision-language example's image, from the ``example_images`` artifact of its run."""
    by_run = getattr(site, "_findings_by_run", None)
    if by_run is None:  # built once per site: every explanation's plot looks its run up
        by_run = defaultdict(list)
        for f in site.findings.values():
            by_run[f["run_id"]].append(f)
        site._findings_by_run = by_run
    for finding in by_run.get(site.findings[artifact["finding_id"]]["run_id"], []):
        if finding["kind"] == "insertion_deletion_area":
            for images in site.artifacts.get(finding["id"], []):
                if images["name"] == "example_images" and 0 < images["rows"] <= 1000:
                    return example_image(site.artifact_rows(images), example)
    return None


def _faithfulness_curves(site: Site, finding: dict) -> dict[str, list[dict]]:
    """Insertion and deletion curves of every explanation of the finding's model and data, first- and
    second-order: per analysis, its latest version of the lowest seed."""
    chosen: dict[tuple[str, str], dict] = {}
    for f in site.findings.values():
        if (f["kind"], f["model_id"], f["dataset_id"]) != ("insertion_deletion_area", finding["model_id"],
                                                           finding["dataset_id"]):
            continue
        key = (f["analysis_name"], f["params_hash"])
        best = chosen.get(key)
        if best is None or (f["seed"], -(f["version"] or 0)) < (best["seed"], -(best["version"] or 0)):
            chosen[key] = f
    curves: dict[str, list[dict]] = {}
    for (analysis, params), f in sorted(chosen.items()):
        label = str((f["metrics"] or {}).get("method") or analysis)
        label = label if label not in curves else f"{label} [{params.removeprefix('sha256:')[:8]}]"
        for a in site.artifacts.get(f["id"], []):
            if a["name"] == "insertion_deletion" and 0 < a["rows"] <= 200_000:
                curves[label] = site.artifact_rows(a)
    return curves
def _plot_for(site: Site, artifact: dict, model: dict | None) -> str | None:
    name = artifact["name"]
    if artifact["rows"] == 0 or artifact["rows"] > 200_000:
        return None
    rows = site.artifact_rows(artifact)
    if model and model.get("modality") == "vision-language":
        if name in ("attributions", "interactions"):
            return vision_language_view(name, rows, _example_image(site, artifact, rows[0].get("example")))
        if name == "insertion_deletion":
            return faithfulness_comparison(_faithfulness_curves(site, site.findings[artifact["finding_id"]]))
        if name == "example_images":
            return None  # drawn under the explanations
    if name == "calibration":
        return plots.calibration(rows)
    if name == "curves":
        return plots.curves(rows)
    if name == "attributions":
        names, values = [r["name"] for r in rows], [r["value"] for r in rows]
        if model and model.get("modality") == "text":
            return plots.token_highlight(names, values)
        if model and model.get("modality") == "image" and all(n.startswith("(") for n in names):
            cells = [tuple(int(v) for v in n.strip("()").split(",")) for n in names]
            grid = np.zeros((max(c[0] for c in cells) + 1, max(c[1] for c in cells) + 1))
            for (r, c), v in zip(cells, values):
                grid[r, c] = v
            return plots.heatmap(grid, title="patch attributions")
        return plots.bars(names, values, title="attributions")
    if name == "interactions":
        # One example's interactions: an artifact may hold several examples, and a cell shows one value.
        example = rows[0].get("example")
        pairs = [r for r in rows if r["order"] == 2 and r.get("example") == example]
        if not pairs:
            return None
        names = {}
        for r in rows:
            for p, n in zip(r["players"], r["names"]):
                names[p] = n
        index = {p: i for i, p in enumerate(sorted(names))}
        values = np.zeros((len(index), len(index)))
        for r in pairs:
            a, b = (index[p] for p in r["players"])
            values[a, b] = values[b, a] = r["value"]
        title = "order-2 interactions" + (f", example {example}" if example is not None else "")
        return plots.matrix([names[p] for p in sorted(names)], values, title=title, colorbar="interaction value")
    if name == "meta_attributions":
        n = int(max(r["i"] for r in rows)) + 1
        values = np.zeros((n, n))
        labels = [""] * n
        for r in rows:
            values[r["i"], r["j"]] = r["value"]
            labels[r["i"]] = r["name_i"]
        return plots.matrix(labels, values, title="meta-attributions (row i, column j)", colorbar="meta-attribution")
    if name == "series" and {"guidance_scale", "rate", "ci_low", "ci_high"} <= set(rows[0]):
        own = (site.findings.get(artifact["finding_id"], {}).get("metrics") or {}).get("guidance_scale")
        return plots.interval_curve([float(r["guidance_scale"]) for r in rows], [float(r["rate"]) for r in rows],
                                    [float(r["ci_low"]) for r in rows], [float(r["ci_high"]) for r in rows],
                                    title="hallucination rate by guidance scale (same noise)",
                                    xlabel="guidance scale", ylabel="hallucination rate",
                                    marked=float(own) if isinstance(own, (int, float)) else None)
    if name == "scores":
        finding = site.findings.get(artifact["finding_id"], {})
        threshold = (finding.get("metrics") or {}).get("threshold")
        return plots.histogram([float(r["score"]) for r in rows], threshold=threshold,
                               title=f"{finding.get('subject', 'filter')} scores", xlabel="score", ylabel="samples")
    if name == "points":
        return plots.histogram([float(r["share_of_members_flipping"]) for r in rows],
                               title="share of Rashomon-set members flipping each point",
                               xlabel="share of members", ylabel="points")
    if name == "members" and rows[0].get("loss") is not None:
        return plots.histogram([float(r["loss"]) for r in rows], title="training loss of each member",
                               xlabel="loss", ylabel="members")
    if name == "importances" and {"member", "feature", "importance"} <= set(rows[0]):
        by_feature: dict[str, list[float]] = defaultdict(list)
        for r in rows:
            by_feature[str(r["feature"])].append(float(r["importance"]))
        features = sorted(by_feature)
        return plots.bars(features, [float(np.mean(by_feature[f])) for f in features],
                          [(min(by_feature[f]), max(by_feature[f])) for f in features],
                          title="importance of each feature across the members", xlabel="mean importance",
                          error_label="range over members")
    if name == "predictions":
        key = "confidence" if "confidence" in rows[0] else ("cosine_similarity" if "cosine_similarity" in rows[0] else "prediction")
        unit, counted = ("member and example", "(member, example) pairs") if "member" in rows[0] else ("example", "examples")
        return plots.histogram([float(r[key]) for r in rows], title=f"{key} per {unit}", xlabel=key, ylabel=counted)
    numeric = [k for k, v in rows[0].items() if isinstance(v, float)]
    if numeric:
        return plots.histogram([float(r[numeric[-1]]) for r in rows if r[numeric[-1]] is not None],
                               title=f"{numeric[-1]} over the {len(rows)} rows of {name}", xlabel=numeric[-1],
                               ylabel="rows")
    return None
