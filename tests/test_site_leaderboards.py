"""Leaderboards per (analysis, dataset, parameters, kind) and the model page's summary card, on the built site."""

from __future__ import annotations

import html.parser
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelsci import catalogue
from modelsci.planner import read_manifest, submit
from modelsci.site_build import build_site, slug
from tests.browser import Browser, chromium_or_skip, serving
from tests.conftest import REPO, modelsci
from tests.models import breast_cancer_skops, installed_plugin, write_manifest
from tests.test_submit import PLUGIN

SCREENS = REPO / "tests" / "_screens"
LIMITED = {"source": "sklearn://breast_cancer", "split": "test", "limit": 60}


def stump_skops(folder: Path) -> Path:
    """A depth-1 decision tree on the same train split as breast_cancer_skops: a weaker model to rank below it."""
    import skops.io as sio
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split
    from sklearn.tree import DecisionTreeClassifier

    frame = load_breast_cancer(as_frame=True).frame
    train, _ = train_test_split(frame, test_size=0.25, random_state=0, stratify=frame["target"])
    model = DecisionTreeClassifier(max_depth=1, random_state=0)
    model.fit(train.drop(columns="target").to_numpy(), train["target"].to_numpy())
    folder.mkdir(parents=True, exist_ok=True)
    sio.dump(model, folder / "model.skops")
    return folder


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One model on two datasets (the test split, and its first 60 rows), a weaker model, a failed run."""
    tmp = tmp_path_factory.mktemp("boards")
    env = installed_plugin(tmp / "plugin_site", "flaky_plugin", PLUGIN, "testing.flaky", "Flaky")
    lr = breast_cancer_skops(tmp / "lr")
    evaluation = {"name": "evaluation.performance", "params": {"n_bootstrap": 100}}
    manifests = [
        write_manifest(tmp / "full.yaml", str(lr), analyses=[
            evaluation, {"name": "attribution.kernel_shap", "params": {"examples": 2, "budget": 128}},
            {"name": "testing.flaky", "params": {"fail_on_seed": 0}}]),
        write_manifest(tmp / "limited.yaml", str(lr), dataset=LIMITED, analyses=[evaluation]),
        write_manifest(tmp / "stump.yaml", str(stump_skops(tmp / "stump")), analyses=[evaluation]),
    ]
    cat_dir = tmp / "cat"
    cat = catalogue.open(cat_dir, create=True)
    for manifest in manifests[1:]:  # queued here; the command below runs them with its own
        submit(cat, read_manifest(manifest), base_dir=manifest.parent)
    # the flaky run fails on purpose: submit --run then exits 1
    result = modelsci("submit", str(manifests[0]), "--run", catalogue_dir=cat_dir, env=env, check=False, timeout=300)
    assert result.returncode == 1 and "4 run(s) succeeded, 1 failed" in result.stdout, result.stdout + result.stderr
    build_site(cat, tmp / "public")
    lr_id = cat.sql("SELECT model_id FROM runs WHERE analysis_id LIKE 'testing.flaky%'").to_pylist()[0]["model_id"]
    return {"cat": cat, "root": tmp / "public", "lr_id": lr_id}


class Tables(html.parser.HTMLParser):
    """Each table of a page: its attributes and its body's rows as cell texts (and the first link of each cell)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[dict] = []
        self.items: list[tuple[str, str]] = []  # (class of its list, text) of each <li>
        self._cell: list[str] | None = None
        self._href: str | None = None
        self._in_body = False
        self._lists: list[str] = []
        self._item: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table":
            self.tables.append({"attrs": a, "rows": [], "links": []})
        elif tag == "tbody":
            self._in_body = True
        elif tag == "tr" and self._in_body:
            self.tables[-1]["rows"].append([])
            self.tables[-1]["links"].append([])
        elif tag in ("td", "th") and self._in_body:
            self._cell, self._href = [], None
        elif tag == "a" and self._cell is not None and self._href is None:
            self._href = a.get("href")
        elif tag in ("ul", "ol"):
            self._lists.append(a.get("class") or "")
        elif tag == "li":
            self._item = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "tbody":
            self._in_body = False
        elif tag in ("td", "th") and self._cell is not None:
            self.tables[-1]["rows"][-1].append("".join(self._cell).strip())
            self.tables[-1]["links"][-1].append(self._href)
            self._cell = None
        elif tag in ("ul", "ol") and self._lists:
            self._lists.pop()
        elif tag == "li" and self._item is not None:
            self.items.append((self._lists[-1] if self._lists else "", "".join(self._item).strip()))
            self._item = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        if self._item is not None:
            self._item.append(data)


def parse(path: Path) -> Tables:
    parser = Tables()
    parser.feed(path.read_text())
    return parser


def num(value: float) -> str:
    """A number as the pages show it (site_build._num), recomputed here."""
    return f"{value:.4g}"


def summaries(cat: catalogue.Catalogue, kind: str) -> list[dict]:
    return cat.sql("SELECT model_id, dataset_id, mean, ci_low, ci_high, n_seeds FROM findings_summary "
                   f"WHERE analysis_name = 'evaluation.performance' AND kind = '{kind}' AND subject = ''").to_pylist()


def boards(tables: Tables, kind: str) -> dict[str, dict]:
    """The leaderboard tables of one kind, by dataset slug."""
    found = [t for t in tables.tables if "leaderboard" in (t["attrs"].get("class") or "").split()
             and t["attrs"].get("data-kind") == kind]
    by_dataset = {t["attrs"]["data-dataset"]: t for t in found}
    assert len(by_dataset) == len(found), "two tables for one dataset"
    return by_dataset


def test_the_analysis_page_has_one_leaderboard_per_dataset_with_the_summary_values(built: dict) -> None:
    cat = built["cat"]
    page = parse(built["root"] / "analyses" / "evaluation.performance.html")
    expected = summaries(cat, "accuracy")
    datasets = {r["dataset_id"] for r in expected}
    assert len(datasets) == 2
    tables = boards(page, "accuracy")
    assert set(tables) == {slug(d) for d in datasets}
    for dataset in datasets:
        # Best first: accuracy is larger-is-better, so descending mean (ties by model id).
        rows = sorted((r for r in expected if r["dataset_id"] == dataset), key=lambda r: (-r["mean"], r["model_id"]))
        table = tables[slug(dataset)]
        assert [row[2] for row in table["rows"]] == [num(r["mean"]) for r in rows]
        assert [row[3] for row in table["rows"]] == [f"{num(r['ci_low'])} – {num(r['ci_high'])}" for r in rows]
        assert [links[1] for links in table["links"]] == [f"../models/{slug(r['model_id'])}.html" for r in rows]
        assert [row[0] for row in table["rows"]] == [str(i + 1) for i in range(len(rows))]
    # The test split has both models, the limited one the logistic regression alone; their values differ.
    full = max(datasets, key=lambda d: sum(r["dataset_id"] == d for r in expected))
    assert len(tables[slug(full)]["rows"]) == 2 and len(tables[slug(next(iter(datasets - {full})))]["rows"]) == 1
    assert len({r["mean"] for r in expected if r["model_id"] == built["lr_id"]}) == 2


def test_a_lower_is_better_kind_lists_the_smallest_first(built: dict) -> None:
    expected = [r for r in summaries(built["cat"], "expected_calibration_error") if r["n_seeds"]]
    page = parse(built["root"] / "analyses" / "evaluation.performance.html")
    for dataset, table in boards(page, "expected_calibration_error").items():
        rows = sorted((r for r in expected if slug(r["dataset_id"]) == dataset), key=lambda r: (r["mean"], r["model_id"]))
        assert [row[2] for row in table["rows"]] == [num(r["mean"]) for r in rows]


def test_each_dataset_page_shows_its_own_leaderboards(built: dict) -> None:
    expected = summaries(built["cat"], "accuracy")
    for dataset in {r["dataset_id"] for r in expected}:
        tables = boards(parse(built["root"] / "datasets" / f"{slug(dataset)}.html"), "accuracy")
        assert list(tables) == [slug(dataset)]
        rows = sorted((r for r in expected if r["dataset_id"] == dataset), key=lambda r: (-r["mean"], r["model_id"]))
        assert [row[2] for row in tables[slug(dataset)]["rows"]] == [num(r["mean"]) for r in rows]


def test_the_summary_card_shows_metrics_top_features_and_failed_runs(built: dict) -> None:
    cat, lr_id = built["cat"], built["lr_id"]
    page = parse(built["root"] / "models" / f"{slug(lr_id)}.html")
    card = next(t for t in page.tables if "card-metrics" in (t["attrs"].get("class") or ""))
    shown = {(row[0], row[1], row[2]) for row in card["rows"]}
    for kind in ("accuracy", "roc_auc"):
        for r in summaries(cat, kind):
            if r["model_id"] == lr_id:
                assert (kind, num(r["mean"]), f"{num(r['ci_low'])} – {num(r['ci_high'])}") in shown
    assert len(card["rows"]) == len(cat.sql(
        "SELECT * FROM findings_summary WHERE analysis_name = 'evaluation.performance' AND subject = '' "
        f"AND model_id = '{lr_id}'").to_pylist())
    top = cat.sql("SELECT subject, mean FROM findings_summary WHERE kind = 'feature_importance' "
                  f"AND model_id = '{lr_id}' ORDER BY mean DESC LIMIT 3").to_pylist()
    features = next(t for t in page.tables if "card-features" in (t["attrs"].get("class") or ""))
    assert [(row[0], row[1]) for row in features["rows"]] == [(r["subject"], num(r["mean"])) for r in top]
    failed = [text for cls, text in page.items if cls == "card-failed"]
    error = cat.sql("SELECT error FROM runs WHERE status = 'failed'").to_pylist()[0]["error"]
    assert error == "RuntimeError: half-way failure on seed 0"
    assert failed == [f"testing.flaky@1, seed 0: {error}"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    yield from chromium_or_skip()


def test_in_chromium_the_leaderboard_sorts_and_short_columns_stay_on_one_line(built: dict, browser: Browser) -> None:
    with serving(built["root"]) as url:
        page = browser.page()
        try:
            page.goto(f"{url}/models/{slug(built['lr_id'])}.html")
            page.screenshot(SCREENS / "model_card.png")
            assert page.csp_violations() == []
            # Short columns keep their text on one line (no kind broken letter by letter): the text's
            # box is less than two lines tall, while a statement beside it wraps.
            height = ("(td => { const r = document.createRange(); r.selectNodeContents(td); "
                      "return r.getBoundingClientRect().height / parseFloat(getComputedStyle(td).fontSize); })")
            lines = page.evaluate(f"[...document.querySelectorAll('td.nowrap')].map({height})")
            assert len(lines) > 50 and max(lines) < 2
            assert max(page.evaluate(f"[...document.querySelectorAll('td.statement')].map({height})")) > 2
            page.goto(f"{url}/analyses/evaluation.performance.html")
            page.screenshot(SCREENS / "leaderboards.png")
            assert page.evaluate("document.querySelectorAll('table.leaderboard[data-kind=accuracy]').length") == 2
            board = ("[...document.querySelectorAll('table.leaderboard[data-kind=accuracy]')]"
                     ".find(t => t.tBodies[0].rows.length > 1)")
            values = f"[...{board}.tBodies[0].rows].map(r => parseFloat(r.cells[2].textContent))"
            before = page.evaluate(values)
            assert len(before) == 2 and before == sorted(before, reverse=True)
            page.evaluate(f"{board}.tHead.rows[0].cells[2].click()")  # ascending
            assert page.evaluate(values) == sorted(before)
            page.evaluate(f"{board}.tHead.rows[0].cells[2].click()")  # descending again
            assert page.evaluate(values) == sorted(before, reverse=True)
            assert page.csp_violations() == []
        finally:
            page.close()
