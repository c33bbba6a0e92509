"""The published site: built from a real catalogue, opened in a real headless Chromium."""

from __future__ import annotations

import html
import html.parser
import json
import re
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelsci import catalogue
from modelsci.analyses.hallucination.toy import train_denoiser
from modelsci.compare import compare_commits, compare_models
from modelsci.executors import run_queue
from modelsci.planner import read_manifest, submit
from modelsci.site_build import as_text, build_site, slug
from tests.browser import Browser, chromium_or_skip, serving
from tests.conftest import REPO, modelsci
from tests.models import breast_cancer_skops, write_manifest

SCREENS = REPO / "tests" / "_screens"
PAYLOAD = "<script>alert(1)</script>"
IMG_PAYLOAD = '<img src=x onerror="document.body.dataset.pwned=1">'


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A catalogue with evaluation, attribution and interaction findings, and a hostile model card."""
    tmp = tmp_path_factory.mktemp("site")
    card = ("---\nlicense: \"" + IMG_PAYLOAD.replace('"', '\\"') + "\"\n"
            f"tags: [\"{PAYLOAD}\"]\ndescription: \"{PAYLOAD}\"\n---\nA card.\n")
    model = breast_cancer_skops(tmp / "lr", card=card)
    manifest = write_manifest(tmp / "m.yaml", str(model), analyses=[
        {"name": "evaluation.performance", "params": {"n_bootstrap": 100}},
        {"name": "attribution.kernel_shap", "params": {"examples": 2, "budget": 256}, "seeds": [0, 1]},
        {"name": "interactions.shapley", "params": {"examples": 1, "budget": 1024}},
        {"name": "multiplicity.rashomon_set", "params": {"n_candidates": 12, "n_bootstrap": 100, "epsilon": 0.05}},
    ])
    manifest.write_text(manifest.read_text().replace("Test Suite <tests@example.org>", PAYLOAD))
    train_denoiser([[1.0], [2.0], [3.0]], 0.05, steps=200, hidden=32, folder=tmp / "toy")
    toy = write_manifest(tmp / "toy.yaml", str(tmp / "toy"), task="unconditional-image-generation", dataset=False,
                         analyses=[{"name": "hallucination.trajectory_variance", "params": {"n_samples": 300}}])
    cat_dir = tmp / "cat"
    modelsci("submit", str(manifest), "--run", catalogue_dir=cat_dir, timeout=300)
    cat = catalogue.open(cat_dir, create=True)
    submit(cat, read_manifest(toy), base_dir=toy.parent)  # and run here: one `modelsci` process is enough
    assert not run_queue(cat, device="cpu").failed
    report = build_site(cat, tmp / "public")
    model_id = cat.sql("SELECT id FROM models WHERE framework = 'sklearn' AND base_model_id IS NULL").to_pylist()[0]["id"]
    toy_id = cat.sql("SELECT id FROM models WHERE framework = 'torch'").to_pylist()[0]["id"]
    return {"cat": cat, "report": report, "root": tmp / "public", "model_id": model_id, "toy_id": toy_id}


@pytest.fixture(scope="module")
def server(built: dict[str, object]) -> Iterator[str]:
    """The site served as a static host serves it: with byte ranges, which DuckDB-WASM reads Parquet by."""
    with serving(built["root"]) as url:  # type: ignore[arg-type]
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    yield from chromium_or_skip()


def test_pages_exist_for_every_entity(built: dict[str, object]) -> None:
    root: Path = built["root"]  # type: ignore[assignment]
    cat: catalogue.Catalogue = built["cat"]  # type: ignore[assignment]
    assert (root / "index.html").is_file() and (root / "query.html").is_file()
    for table, folder in (("models", "models"), ("datasets", "datasets"), ("findings", "findings")):
        for row in cat.sql(f"SELECT id FROM {table}").to_pylist():
            assert (root / folder / f"{slug(row['id'])}.html").is_file(), (table, row["id"])
    for row in cat.sql("SELECT DISTINCT name FROM analyses").to_pylist():
        assert (root / "analyses" / f"{slug(row['name'])}.html").is_file()


class Links(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.targets: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("href", "src") and value:
                self.targets.append(value)


def test_every_internal_link_and_asset_resolves(built: dict[str, object]) -> None:
    root: Path = built["root"]  # type: ignore[assignment]
    broken, checked = [], 0
    for page in root.rglob("*.html"):
        parser = Links()
        parser.feed(page.read_text())
        for target in parser.targets:
            parsed = urllib.parse.urlparse(target)
            if parsed.scheme or target.startswith(("#", "mailto:", "data:", "javascript:")):
                continue
            path = urllib.parse.unquote(parsed.path)
            base = root if path.startswith("/") else page.parent  # the 404 page links from the site root
            resolved = (base / path.lstrip("/")).resolve() if path else page
            if resolved.is_dir():
                resolved = resolved / "index.html"
            checked += 1
            if not resolved.exists():
                broken.append(f"{page.relative_to(root)} -> {target}")
    assert checked > 100 and broken == []


@pytest.mark.parametrize("model, analysis", [
    ("model_id", "evaluation.performance"), ("model_id", "attribution.kernel_shap"),
    ("model_id", "interactions.shapley"), ("model_id", "multiplicity.rashomon_set"),
    ("toy_id", "hallucination.trajectory_variance"),
])
def test_a_plot_per_family_on_the_model_page(built: dict[str, object], model: str, analysis: str) -> None:
    root: Path = built["root"]  # type: ignore[assignment]
    page = (root / "models" / f"{slug(built[model])}.html").read_text()  # type: ignore[arg-type]
    sections = re.split(r"<h4 id=", page)
    section = next(s for s in sections if html.unescape(s.split(">", 1)[1]).startswith(analysis))
    svg = re.search(r"<svg.*?</svg>", section, re.S)
    assert svg, f"no plot for {analysis}"
    assert len(re.findall(r"<(path|rect|use)\b", svg.group(0))) > 10, f"empty plot for {analysis}"


def test_contributor_text_is_escaped_in_the_files(built: dict[str, object]) -> None:
    root: Path = built["root"]  # type: ignore[assignment]
    for page in root.rglob("*.html"):
        text = page.read_text()
        assert PAYLOAD not in text and IMG_PAYLOAD not in text, page
    model_page = (root / "models" / f"{slug(built['model_id'])}.html").read_text()  # type: ignore[arg-type]
    assert as_text(PAYLOAD) in model_page


def test_browser_pages_render_and_the_hostile_card_stays_inert(built, server, browser) -> None:  # noqa: ANN001
    page = browser.page()
    try:
        for name, path in (("home", "/index.html"), ("model", f"/models/{slug(built['model_id'])}.html"),
                           ("finding", "/findings/" + next((built["root"] / "findings").glob("*.html")).name)):
            page.goto(server + path)
            page.screenshot(SCREENS / f"{name}.png")
            assert page.evaluate("document.querySelector('h1') !== null")
            assert page.csp_violations() == [], name  # the page works under its Content-Security-Policy
        page.goto(f"{server}/models/{slug(built['model_id'])}.html")
        text = page.evaluate("document.body.innerText")
        assert PAYLOAD in text  # shown as text
        assert page.evaluate("[...document.scripts].some(s => s.textContent.includes('alert(1)'))") is False
        assert page.evaluate("document.body.dataset.pwned === undefined") is True
        assert page.dialogs == []
        assert page.csp_violations() == []
    finally:
        page.close()


def test_query_page_answers_like_modelsci_sql(built, server, browser) -> None:  # noqa: ANN001
    expected = modelsci("sql", "SELECT count(*) FROM findings", "--format", "csv",
                        catalogue_dir=built["cat"].root).stdout.splitlines()[1]
    page = browser.page()
    try:
        query = urllib.parse.quote("SELECT count(*) FROM findings")
        page.goto(f"{server}/query.html?sql={query}")
        page.wait("document.body.dataset.queryDone === '1'", 90)
        page.screenshot(SCREENS / "query.png")
        cells = page.evaluate("[...document.querySelectorAll('#query-result td')].map(td => td.textContent)")
        assert cells == [expected], page.console
        head = built["cat"].head()
        assert head.id in page.evaluate("document.getElementById('query-commit').textContent")
        assert page.evaluate("document.getElementById('query-csv').hidden") is False
        assert page.csp_violations() == []  # DuckDB-WASM, its worker and the import map, under the policy
    finally:
        page.close()


def _table(page: object) -> list[list[str]]:
    """The result table's rows as text, its header first."""
    return page.evaluate("[...document.querySelectorAll('table.data tr')].map(tr => [...tr.cells].map(c => c.textContent))")


def test_query_page_reads_artifact_views_and_files_like_the_cli(built, server, browser) -> None:  # noqa: ANN001
    cat: catalogue.Catalogue = built["cat"]
    count = "SELECT count(*) AS n FROM artifact_interactions"
    expected = json.loads(modelsci("sql", count, "--format", "json", catalogue_dir=cat.root).stdout)[0]["n"]
    assert expected > 0
    path = cat.sql("SELECT path FROM artifacts WHERE name = 'interactions' ORDER BY path LIMIT 1").to_pylist()[0]["path"]
    one = f"SELECT * FROM '{path}'"
    rows = json.loads(modelsci("sql", one, "--format", "json", catalogue_dir=cat.root).stdout)
    page = browser.page()
    try:
        page.goto(f"{server}/query.html?sql={urllib.parse.quote(count)}")
        assert page.evaluate("document.getElementById('query-sql').value") == count
        page.wait("document.body.dataset.queryDone === '1'", 90)
        assert _table(page) == [["n"], [str(expected)]], page.console
        link = urllib.parse.urlparse(page.evaluate("document.getElementById('query-link').href"))
        assert urllib.parse.parse_qs(link.query) == {"sql": [count], "commit": [cat.head().id]}
        page.goto(f"{server}/query.html?sql={urllib.parse.quote(one)}")
        page.wait("document.body.dataset.queryDone === '1'", 90)
        header, *cells = _table(page)
        assert header == list(rows[0]) and len(cells) == len(rows) > 1, page.console
        for shown, row in zip(cells, rows, strict=True):
            shown_row = dict(zip(header, shown, strict=True))
            assert float(shown_row["value"]) == row["value"]
            assert json.loads(shown_row["players"]) == row["players"]  # a list column, shown as a list
        # a link pinned to an earlier commit answers as of it, as --as-of does
        current = "SELECT count(*) AS n FROM findings_current"
        then = cat.sql(current, as_of=2).to_pylist()[0]["n"]
        assert then != cat.sql(current).to_pylist()[0]["n"]
        page.goto(f"{server}/query.html?sql={urllib.parse.quote(current)}&commit=2")
        page.wait("document.body.dataset.queryDone === '1'", 90)
        assert _table(page) == [["n"], [str(then)]], page.console
        second = cat.sql("SELECT id FROM commits WHERE seq = 2").to_pylist()[0]["id"]
        assert page.evaluate("document.getElementById('query-commit').textContent") == second
        assert page.csp_violations() == []
    finally:
        page.close()


def test_compare_page_matches_modelsci_compare(built, server, browser) -> None:  # noqa: ANN001
    cat: catalogue.Catalogue = built["cat"]
    model, toy = built["model_id"], built["toy_id"]
    accuracy = cat.sql(f"SELECT mean FROM findings_summary WHERE model_id = '{model}' AND kind = 'accuracy'"
                       ).to_pylist()[0]["mean"]
    page = browser.page()
    try:
        for a, b in ((model, model), (model, toy)):
            page.goto(f"{server}/compare.html?a={a[7:19]}&b={b[7:19]}")
            page.wait("document.body.dataset.compareDone === '1'", 90)
            header, *cells = _table(page)
            shown = [dict(zip(header, row, strict=True)) for row in cells]
            assert len(shown) == compare_models(cat, a, b).num_rows > 1, page.console
            row = next(r for r in shown if r["kind"] == "accuracy")
            assert float(row["mean_a"]) == accuracy
            if a == b:  # a model beside itself: both sides, every key overlapping
                assert float(row["mean_b"]) == accuracy and {r["overlap"] for r in shown if r["mean_a"]} == {"true"}
            else:  # the toy model has no accuracy: its side is empty
                assert row["mean_b"] == "" and row["overlap"] == ""
        # the catalogue at two commits, each side read as of its commit in the browser
        head = cat.head().seq
        expected = compare_commits(cat, 2, head)
        page.goto(f"{server}/compare.html?c1=2&c2={head}")
        page.wait("document.body.dataset.compareDone === '1'", 90)
        header, *cells = _table(page)
        shown = [dict(zip(header, row, strict=True)) for row in cells]
        assert [(r["model_id"], r["kind"], r["subject"], r["mean_a"] == "", r["overlap"]) for r in shown] == [
            (r["model_id"], r["kind"], r["subject"], r["mean_a"] is None, "" if r["overlap"] is None else
             str(r["overlap"]).lower()) for r in expected.to_pylist()], page.console
        assert any(r["mean_a"] == "" for r in shown) and any(r["mean_a"] for r in shown)
        assert page.csp_violations() == []
    finally:
        page.close()


# -- Overview parts: captions, lineage, inherited findings, the indexes and the home page ----------

def _page(built: dict[str, object], path: str) -> str:
    return (built["root"] / path).read_text()  # type: ignore[operator]


def _members(built: dict[str, object]) -> list[str]:
    cat: catalogue.Catalogue = built["cat"]  # type: ignore[assignment]
    rows = cat.sql(f"SELECT id FROM models WHERE base_model_id = '{built['model_id']}' ORDER BY id").to_pylist()
    return [r["id"] for r in rows]


def test_each_plot_has_its_caption_above_it(built: dict[str, object]) -> None:
    page = _page(built, f"models/{slug(built['model_id'])}.html")  # type: ignore[arg-type]
    figures = re.findall(r'<figure class="plot">(.*?)</figure>', page, re.S)
    assert len(figures) >= 6
    for figure in figures:
        caption, drawing = figure.find("<figcaption>"), figure.find("<svg")
        assert 0 <= caption < drawing, figure[:200]


def test_plot_labels_claim_whiskers_only_where_they_are_drawn(built: dict[str, object]) -> None:
    from modelsci import plots

    page = _page(built, f"models/{slug(built['model_id'])}.html")  # type: ignore[arg-type]
    claims = [svg for svg in re.findall(r"<svg.*?</svg>", page, re.S) if "whiskers: 95% CI" in svg]
    assert claims and all(svg.count('class="whisker"') >= 10 for svg in claims)  # 15 features, most with a CI
    assert "whiskers" not in plots.bars(["a", "b"], [0.5, -0.25], xlabel="value")
    # A negative value is a bar to the left of the zero line, as wide as the positive one of twice its size.
    widths = [float(w) for w in re.findall(r'<rect x="[^"]+" y="[^"]+" width="([^"]+)"',
                                          plots.bars(["a", "b"], [0.5, -0.25], xlabel="value"))]
    assert widths[0] == pytest.approx(2 * widths[1], abs=0.2) and widths[1] > 50


def test_lineage_is_a_table_with_one_row_per_derived_model(built: dict[str, object]) -> None:
    members = _members(built)
    assert len(members) == 12
    page = _page(built, f"models/{slug(built['model_id'])}.html")  # type: ignore[arg-type]
    table = re.search(r'<table class="data lineage.*?</table>', page, re.S).group(0)
    rows = re.findall(r'<tr data-relation="descendant">.*?</tr>', table, re.S)
    assert sorted(re.search(r'href="([^"]+)\.html"', r).group(1) for r in rows) == sorted(slug(m) for m in members)
    member_page = _page(built, f"models/{slug(members[0])}.html")
    base_rows = re.findall(r'<tr data-relation="ancestor">.*?</tr>', member_page, re.S)
    assert len(base_rows) == 1 and f'href="{slug(built["model_id"])}.html"' in base_rows[0]  # type: ignore[arg-type]


def test_a_derived_model_shows_its_base_models_findings_marked_inherited(built: dict[str, object]) -> None:
    from tests.test_site_leaderboards import num, parse

    cat: catalogue.Catalogue = built["cat"]  # type: ignore[assignment]
    member, base = _members(built)[0], built["model_id"]
    expected = cat.query(
        "SELECT s.kind, s.mean FROM findings_summary s WHERE s.subject = '' AND s.model_id = ? AND s.replication_key IN "
        "(SELECT replication_key FROM findings_lineage WHERE model_id = ? AND relation = 'ancestor') "
        "ORDER BY s.analysis_name, s.kind", [base, member]).to_pylist()
    assert len(expected) > 10
    page = parse(built["root"] / "models" / f"{slug(member)}.html")  # type: ignore[operator]
    table = next(t for t in page.tables if "inherited" in (t["attrs"].get("class") or "").split())
    assert table["attrs"]["data-from"] == slug(base)  # type: ignore[arg-type]
    assert [(row[1], row[2]) for row in table["rows"]] == [(r["kind"], num(r["mean"])) for r in expected]
    name = cat.query("SELECT * FROM models WHERE id = ?", [base]).to_pylist()[0]
    shown = name.get("name") or name["source_uri"].rsplit("/", 1)[-1]
    assert {row[-1] for row in table["rows"]} == {f"inherited from {shown}"}
    assert [links[-1] for links in table["links"]] == [f"{slug(base)}.html"] * len(expected)  # type: ignore[arg-type]
    # The base model's own page inherits nothing.
    assert 'class="data inherited' not in _page(built, f"models/{slug(base)}.html")  # type: ignore[arg-type]


def test_the_summary_card_names_the_strongest_interaction(built: dict[str, object]) -> None:
    from tests.test_site_leaderboards import num, parse

    cat: catalogue.Catalogue = built["cat"]  # type: ignore[assignment]
    row = cat.query("SELECT s.mean, f.metrics FROM findings_summary s JOIN findings f ON f.id = s.first_id "
                    "WHERE s.kind = 'strongest_interaction' AND s.model_id = ?", [built["model_id"]]).to_pylist()
    names = json.loads(row[0]["metrics"])["names"]
    page = parse(built["root"] / "models" / f"{slug(built['model_id'])}.html")  # type: ignore[operator,arg-type]
    card = next(t for t in page.tables if "card-interactions" in (t["attrs"].get("class") or ""))
    assert [(r[0], r[1]) for r in card["rows"]] == [(" × ".join(names), num(row[0]["mean"]))]


def test_the_models_index_lists_derived_models_apart_with_filters(built: dict[str, object]) -> None:
    from tests.test_site_leaderboards import parse

    cat: catalogue.Catalogue = built["cat"]  # type: ignore[assignment]
    counts = cat.sql("SELECT count(*) FILTER (WHERE base_model_id IS NULL) AS submitted, "
                     "count(*) FILTER (WHERE base_model_id IS NOT NULL) AS derived FROM models").to_pylist()[0]
    assert counts == {"submitted": 2, "derived": 12}
    text = _page(built, "models/index.html")
    assert "2 submitted models, 12 derived" in text
    for column in ("task", "framework", "license"):
        assert f'<select data-filter="{column}">' in text
    assert '<script src="../assets/filter.js" defer></script>' in text
    page = parse(built["root"] / "models" / "index.html")  # type: ignore[operator]
    tables = {t["attrs"]["id"]: t for t in page.tables if t["attrs"].get("id")}
    assert len(tables["models-submitted"]["rows"]) == 2 and len(tables["models-derived"]["rows"]) == 12
    findings = cat.query("SELECT count(*) AS n FROM findings_summary WHERE model_id = ?",
                         [built["model_id"]]).to_pylist()[0]["n"]
    lr = next(r for r in tables["models-submitted"]["rows"] if r[0] == "lr")
    assert lr[5] == str(findings) and lr[6] == "12"


def test_the_home_page_has_headline_findings_and_recent_changes_in_words(built: dict[str, object]) -> None:
    from tests.test_site_leaderboards import num, parse

    cat: catalogue.Catalogue = built["cat"]  # type: ignore[assignment]
    page = parse(built["root"] / "index.html")  # type: ignore[operator]
    headlines = next(t for t in page.tables if "headlines" in (t["attrs"].get("class") or "").split())
    accuracy = cat.sql("SELECT mean, ci_low, ci_high FROM findings_summary WHERE kind = 'accuracy'").to_pylist()[0]
    row = next(r for r in headlines["rows"] if r[0].startswith("accuracy"))
    assert row[2:5] == ["lr", num(accuracy["mean"]), f"{num(accuracy['ci_low'])} – {num(accuracy['ci_high'])}"]
    assert all(r[2] in ("lr", "toy") for r in headlines["rows"])  # derived models are not headlines
    changes = [text for cls, text in page.items if cls == "changes"]
    assert len(changes) == cat.sql("SELECT count(*) AS n FROM commits").to_pylist()[0]["n"]
    rashomon = next(c for c in changes if "multiplicity.rashomon_set" in c)
    assert "12 derived models of " in rashomon and "50 findings from multiplicity.rashomon_set" in rashomon


def test_in_chromium_the_models_index_filters_by_framework(built, server, browser) -> None:  # noqa: ANN001
    page = browser.page()
    try:
        page.goto(f"{server}/models/index.html")
        page.screenshot(SCREENS / "models_index.png")
        visible = ("['models-submitted', 'models-derived'].map(id => [...document.getElementById(id).tBodies[0].rows]"
                   ".filter(r => !r.hidden).length)")
        assert page.evaluate(visible) == [2, 12]
        page.evaluate("(() => { const s = document.querySelector('select[data-filter=framework]'); s.value = 'torch';"
                      " s.dispatchEvent(new Event('change')); })()")
        assert page.evaluate(visible) == [1, 0]
        assert page.evaluate("document.querySelector('[data-count-of=models-submitted]').textContent") == "1"
        assert page.csp_violations() == []
    finally:
        page.close()
