"""The published site: built from a real catalogue, opened in a real headless Chromium."""

from __future__ import annotations

import html
import html.parser
import re
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelsci import catalogue
from modelsci.analyses.hallucination.toy import train_denoiser
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
    modelsci("submit", str(toy), "--run", catalogue_dir=cat_dir, timeout=300)
    cat = catalogue.open(cat_dir, create=True)
    report = build_site(cat, tmp / "public")
    model_id = cat.sql("SELECT id FROM models WHERE framework = 'sklearn' AND base_model_id IS NULL").to_pylist()[0]["id"]
    toy_id = cat.sql("SELECT id FROM models WHERE framework = 'torch'").to_pylist()[0]["id"]
    return {"cat": cat, "report": report, "root": tmp / "public", "model_id": model_id, "toy_id": toy_id}


@pytest.fixture(scope="module")
def server(built: dict[str, object]) -> Iterator[str]:
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
