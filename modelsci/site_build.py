"""``modelsci site build``: the catalogue as a static site (jinja2 -> Markdown -> mkdocs-material).

Pages: home, one per model instance, dataset, analysis and finding, and a Query page running
DuckDB-WASM on the catalogue's Parquet export shipped inside the site. Everything a
contributor wrote is HTML-escaped by the templates (jinja2 autoescape), so a model card
holding ``<script>`` shows as text. Plots are inline SVG drawn at build time.

Big catalogues: above ``max_finding_pages`` findings, findings are rows of their model's page
(with an anchor each) instead of pages of their own, and finding tables are excluded from the
search index, which keeps the index to the pages' prose (see the README's site section).
"""

from __future__ import annotations

import hashlib
import json
import os
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

from modelsci import plots
from modelsci.catalogue.schema import TABLES
from modelsci.catalogue.store import Catalogue
from modelsci.catalogue.transfer import export
from modelsci.resources import site_sources

__all__ = ["SiteReport", "build_site"]
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


def slug(entity_id: str) -> str:
    """File name of an entity's page: its hash without the ``sha256:`` prefix."""
    return entity_id.removeprefix("sha256:").replace("/", "_").replace("@", "-")


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

    def finding_href(self, finding_id: str, depth: int = 1) -> str:
        up = "../" * depth
        if self.finding_pages:
            return f"{up}findings/{slug(finding_id)}.html"
        model = self.findings[finding_id]["model_id"]
        return f"{up}models/{slug(model)}.html#f-{slug(finding_id)[:16]}"

    def artifact_rows(self, artifact: dict) -> list[dict]:
        return pq.read_table(self.cat.root / artifact["path"]).to_pylist()


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(site_sources() / "templates"),
        autoescape=True,  # every {{ }} is HTML-escaped: contributor text never becomes markup
        trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined,
    )
    env.filters["slug"] = slug
    env.filters["short"] = lambda v: (v or "")[:19]
    env.filters["num"] = _num
    env.filters["json"] = lambda v: json.dumps(v, indent=2, default=str, sort_keys=True)
    return env


def _num(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


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
        query_page = _vendor_duckdb(docs / "assets" / "vendor", notes)
        pages = _render_pages(site, env, docs, manifest, query_page)
        config = load_config(config_file=str(site_sources() / "mkdocs.yml"), docs_dir=str(docs),
                             site_dir=str(out), nav=_nav(site, query_page))
        build(config)
    return SiteReport(out, pages, site.finding_pages, query_page, notes)


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
        nav.append({"Query": "query.md"})
    return nav


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _render_pages(site: Site, env: jinja2.Environment, docs: Path, manifest: dict[str, Any], query_page: bool) -> int:
    head = manifest.get("catalogue_commit")
    common = {"site": site, "head": head, "pillars": PILLARS}
    pages = 0
    commits = sorted(site.tables["commits"], key=lambda c: -c["seq"])[:10]
    _write(docs / "index.md", env.get_template("index.md.j2").render(
        **common, commits=commits, counts={k: len(v) for k, v in site.tables.items()}, query_page=query_page))
    _write(docs / "models" / "index.md", env.get_template("models.md.j2").render(**common))
    _write(docs / "datasets" / "index.md", env.get_template("datasets.md.j2").render(**common))
    _write(docs / "analyses" / "index.md", env.get_template("analyses.md.j2").render(**common))
    pages += 4
    model_template = env.get_template("model.md.j2")
    by_model: dict[str, list[dict]] = defaultdict(list)
    for f in site.findings.values():
        by_model[f["model_id"]].append(f)
    for model in site.models.values():
        findings = sorted(by_model.get(model["id"], []), key=lambda f: (f["analysis_name"], f["kind"], f["subject"], f["version"]))
        current = [f for f in findings if f["status"] == "current"]
        _write(docs / "models" / f"{slug(model['id'])}.md", model_template.render(
            **common, model=model, groups=_groups(site, current, _model_plots(site, model, findings)),
            superseded=[f for f in findings if f["status"] != "current"],
            children=[m for m in site.models.values() if m.get("base_model_id") == model["id"]]))
        pages += 1
    dataset_template = env.get_template("dataset.md.j2")
    for dataset in site.datasets.values():
        used = sorted({f["model_id"] for f in site.findings.values() if f["dataset_id"] == dataset["id"]})
        _write(docs / "datasets" / f"{slug(dataset['id'])}.md", dataset_template.render(
            **common, dataset=dataset, models=[site.models[m] for m in used if m in site.models]))
        pages += 1
    analysis_template = env.get_template("analysis.md.j2")
    for name, versions in site.analyses_by_name.items():
        findings = [f for f in site.findings.values() if f["analysis_name"] == name and f["status"] == "current"]
        _write(docs / "analyses" / f"{slug(name)}.md", analysis_template.render(
            **common, name=name, versions=versions, leaderboard=_leaderboard(site, findings),
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
        pages += 1
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


def _leaderboard(site: Site, findings: list[dict]) -> dict[str, Any]:
    """Models x whole-model finding kinds (subject empty), when there is more than one model."""
    kinds = sorted({f["kind"] for f in findings if f["subject"] == "" and f["value"] is not None})
    rows: dict[str, dict[str, dict]] = defaultdict(dict)
    for f in findings:
        if f["subject"] == "" and f["kind"] in kinds:
            rows[f["model_id"]][f["kind"]] = f
    return {"kinds": kinds, "rows": [(site.models[m], r) for m, r in rows.items() if m in site.models]}


def _model_plots(site: Site, model: dict, findings: list[dict]) -> list[dict[str, str]]:
    """One or more plots per analysis family that has findings about this model."""
    shown: list[dict[str, str]] = []
    current = [f for f in findings if f["status"] == "current"]
    by_analysis: dict[str, list[dict]] = defaultdict(list)
    for f in current:
        by_analysis[f["analysis_name"]].append(f)
    for analysis, items in sorted(by_analysis.items()):
        family = analysis.split(".")[0]
        importance = [f for f in items if f["kind"] == "feature_importance"]
        if importance:
            svg = plots.bars([f["subject"] for f in importance], [f["value"] for f in importance],
                             [(f["ci_low"], f["ci_high"]) if f["ci_low"] is not None else None for f in importance],
                             title=f"{analysis}: mean |attribution|", xlabel="mean |attribution| (95% CI)")
            shown.append({"family": family, "analysis": analysis, "title": "feature importance", "html": svg})
        for f in items:
            if f["kind"] in ("attribution", "interactions", "meta_attribution") and f["subject"] != "example:0":
                continue  # one example per analysis on the model page; the rest on finding pages
            for artifact in site.artifacts.get(f["id"], []):
                plot = _artifact_plot(site, artifact, model)
                if plot:
                    shown.append({"family": family, "analysis": analysis,
                                  "title": f"{f['kind']} {f['subject']}".strip() + f" ({artifact['name']})", "html": plot})
    return [p for p in shown if p["html"]]


def _artifact_plot(site: Site, artifact: dict, model: dict | None) -> str | None:
    """The plot that fits an artifact, by its name; None when there is none."""
    try:
        return _plot_for(site, artifact, model)
    except (KeyError, ValueError, TypeError, IndexError):
        return None  # an artifact of a shape no plot knows: the page links it for download instead


def _plot_for(site: Site, artifact: dict, model: dict | None) -> str | None:
    name = artifact["name"]
    if artifact["rows"] == 0 or artifact["rows"] > 200_000:
        return None
    rows = site.artifact_rows(artifact)
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
        pairs = [r for r in rows if r["order"] == 2]
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
        return plots.matrix([names[p] for p in sorted(names)], values, title="order-2 interactions")
    if name == "meta_attributions":
        n = int(max(r["i"] for r in rows)) + 1
        values = np.zeros((n, n))
        labels = [""] * n
        for r in rows:
            values[r["i"], r["j"]] = r["value"]
            labels[r["i"]] = r["name_i"]
        return plots.matrix(labels, values, title="meta-attributions (row i, column j)")
    if name == "scores":
        finding = site.findings.get(artifact["finding_id"], {})
        threshold = (finding.get("metrics") or {}).get("threshold")
        return plots.histogram([float(r["score"]) for r in rows], threshold=threshold,
                               title=f"{finding.get('subject', 'filter')} scores", xlabel="score")
    if name == "points":
        return plots.histogram([float(r["share_of_members_flipping"]) for r in rows],
                               title="share of Rashomon-set members flipping each point", xlabel="share")
    if name == "predictions":
        key = "confidence" if "confidence" in rows[0] else ("cosine_similarity" if "cosine_similarity" in rows[0] else "prediction")
        return plots.histogram([float(r[key]) for r in rows], title=f"{key} per example", xlabel=key)
    numeric = [k for k, v in rows[0].items() if isinstance(v, float)]
    if numeric:
        return plots.histogram([float(r[numeric[-1]]) for r in rows if r[numeric[-1]] is not None],
                               title=f"{numeric[-1]} per row", xlabel=numeric[-1])
    return None
