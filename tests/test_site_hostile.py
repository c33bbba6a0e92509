"""The site against hostile contributor text: a small real catalogue, built, read as files and in Chromium.

Every field a contributor writes holds HTML, Markdown links and images to ``javascript:`` and
``data:`` URLs, emphasis, autolinks, line breaks that would start blocks, and a ``</title>``
that would run a script in the page's title. The built site must show all of it as text, link
only to its own pages and the Hub pages it builds, and carry a Content-Security-Policy.
"""

from __future__ import annotations

import hashlib
import html
import html.parser
import posixpath
import re
from base64 import b64encode
from collections.abc import Iterator
from pathlib import Path

import jinja2
import pyarrow as pa
import pytest

import modelsci
from modelsci.schemas import Analysis, Dataset, FindingLink, ModelInstance, ResultBundle, Run, params_hash
from modelsci.schemas.entities import source_name
from modelsci.site_build import _environment, as_text, build_site, slug
from tests.browser import Browser, chromium_or_skip, serving
from tests.conftest import accuracy_bundle, toy_model

LINK = "[x](javascript:alert(1))"
IMG = "<img src=x onerror=alert(1)>"
TITLE = "</title><script>document.title=7*191</script>"
DATA = "![i](data:image/svg+xml;base64,PHN2Zz48L3N2Zz4=) [d](data:text/html,hi)"
EMPH = "*stars* _under_ **bold** `tick` ~~strike~~ ==mark== :smile:"
AUTOLINK = "<https://evil.example/a> <javascript:alert(4)> https://evil.example/b"
BLOCK = "\n\n<div id=injected-block onclick=alert(5)>block</div>\n\n# injected heading\n\n1. item\n    code"
EVERYTHING = " ".join((LINK, IMG, TITLE, DATA, EMPH, AUTOLINK)) + BLOCK
SITE = "modelsci catalogue"
HUB = "https://huggingface.co/acme/tiny-model"


def hostile_catalogue(root: Path) -> tuple[modelsci.Catalogue, dict[str, ModelInstance]]:
    """Hostile text in every field a contributor writes: names, paths, URIs, card, columns, statements."""
    cat = modelsci.open(root, create=True)
    models = {
        "base": toy_model(0).model_copy(update={
            "source_uri": f"/uploads/{LINK}{IMG}", "base_model": f"{LINK}{IMG}", "architecture": TITLE,
            "license": DATA, "pipeline_tag": EMPH, "revision": AUTOLINK, "task": BLOCK,
            "tags": [EVERYTHING, "[t](javascript:alert(6))"], "card": {"base_model": f"{LINK}{IMG}", "notes": EVERYTHING}}),
        "child": toy_model(1).model_copy(update={   # its base is in the catalogue: a link to the base's page
            "source_uri": "hf://acme/tiny-model", "base_model": f"{LINK}{IMG}", "base_model_id": toy_model(0).id}),
        "bad_hub": toy_model(2).model_copy(update={"source_uri": f'hf://acme/x"onmouseover=alert(7) {LINK}'}),
    }
    dataset = Dataset(id="sha256:" + "e" * 64, source_uri=f"/data/{TITLE}{LINK}.parquet", rows=3,
                      split=EMPH, config=LINK, license=DATA, revision=IMG,
                      features={TITLE: "float64", LINK: "int64", "roles": {"label": IMG}})
    analysis = Analysis(id=f"evaluation.{LINK}@1{LINK}{IMG}", name=f"evaluation.{LINK}", version=f"1{LINK}{IMG}",
                        family="evaluation", pillar="verify", description=EVERYTHING,
                        params_schema={"properties": {LINK: {"type": IMG, "default": TITLE, "description": DATA}}})
    bundle = ResultBundle(models=list(models.values()), datasets=[dataset], analyses=[analysis])
    for model in models.values():
        params = {LINK: TITLE}
        run = Run(id=f"run-{model.id[-8:]}{IMG}", model_id=model.id, dataset_id=dataset.id, analysis_id=analysis.id,
                  params=params, params_hash=params_hash(params), seed=0, status="succeeded", device=IMG,
                  environment={"python": LINK, IMG: DATA})
        bundle.runs.append(run)
        importance = bundle.add_finding(  # a column name as subject: the finding page's title
            run, kind="feature_importance", subject=TITLE, statement=EVERYTHING, value=0.5, ci=(0.4, 0.6), n=3,
            unit=EMPH, metrics={LINK: 1.0, "note": IMG}, artifacts={
                "attributions": pa.table({"name": [TITLE, LINK, IMG], "value": [0.3, -0.2, 0.1]}),
                f"{LINK}{IMG}": pa.table({TITLE: [0.1, 0.2, 0.3]})})
        other = bundle.add_finding(run, kind=f"kind{LINK}", subject=f"{IMG}{DATA}", statement=TITLE, value=1.0)
        bundle.add_finding(run, kind="accuracy", subject="", statement=LINK, value=0.9, ci=(0.8, 0.95), n=3)
        bundle.links.append(FindingLink(src_id=other.id, dst_id=importance.id, relation="extends",
                                        evidence={"why": EVERYTHING}))
    cat.commit(bundle, author=f"{IMG} {LINK}", message=EVERYTHING)
    return cat, models


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    tmp = tmp_path_factory.mktemp("hostile")
    cat, models = hostile_catalogue(tmp / "cat")
    report = build_site(cat, tmp / "public")
    assert report.query_page, report.notes  # the Query page is under the policy too
    return {"root": tmp / "public", "cat": cat, "models": models}


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same kinds of pages from plain text: the scripts and outside links the site itself writes."""
    tmp = tmp_path_factory.mktemp("clean")
    cat = modelsci.open(tmp / "cat", create=True)
    cat.commit(accuracy_bundle(0.9, (0.8, 0.95)), author="Test Suite", message="plain")
    build_site(cat, tmp / "public")
    return tmp / "public"


@pytest.fixture(scope="module")
def server(hostile: dict[str, object]) -> Iterator[str]:
    with serving(hostile["root"]) as url:  # type: ignore[arg-type]
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    yield from chromium_or_skip()


# -- the files ---------------------------------------------------------------------------------

URL_ATTRIBUTES = {"href", "src", "xlink:href", "action", "formaction", "poster", "srcset", "data", "background"}


class Page(html.parser.HTMLParser):
    """What a page links to, runs and declares, as the browser's parser sees it."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.handlers: list[str] = []
        self.scripts: list[tuple[dict[str, str | None], str]] = []
        self.policies: list[tuple[str, int]] = []  # (content, how many scripts came before it)
        self._script: dict[str, str | None] | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in URL_ATTRIBUTES and value is not None:
                self.urls.append(value)
            if name.startswith("on"):
                self.handlers.append(f"<{tag} {name}={value!r}>")
        named = dict(attrs)
        if tag == "meta" and (named.get("http-equiv") or "").lower() == "content-security-policy":
            self.policies.append((named.get("content") or "", len(self.scripts)))
        if tag == "script":
            self._script = named
            self.scripts.append((named, ""))

    def handle_data(self, data: str) -> None:
        if self._script is not None:
            self.scripts[-1] = (self._script, self.scripts[-1][1] + data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._script = None


def pages(root: Path) -> dict[str, Page]:
    return {page.relative_to(root).as_posix(): Page(page.read_text()) for page in root.rglob("*.html")}


def scheme(url: str) -> str:
    """The scheme a browser would read (it drops control characters and blanks first)."""
    match = re.match(r"([a-z][a-z0-9+.-]*):", re.sub(r"[\x00-\x20]", "", url).lower())
    return match[1] if match else ""


def script_tags(root: Path) -> set[tuple[str, str, str]]:
    """Every script tag of a site: (type, the file it loads from the site's root, its inline text)."""
    tags = set()
    for name, page in pages(root).items():
        for attrs, text in page.scripts:
            src = attrs.get("src") or ""
            if src and not scheme(src):
                src = posixpath.normpath(posixpath.join(posixpath.dirname(name), src))
            tags.add((attrs.get("type") or "", src, text))
    return tags


def outside_urls(root: Path) -> set[str]:
    return {url for page in pages(root).values() for url in page.urls if scheme(url)}


def test_links_point_only_to_the_site_and_the_urls_it_builds(hostile: dict[str, object], clean: Path) -> None:
    built = pages(hostile["root"])  # type: ignore[arg-type]
    schemes = {scheme(url) for page in built.values() for url in page.urls}
    assert schemes <= {"", "http", "https"}, schemes  # relative links, and http(s) ones checked next
    assert outside_urls(hostile["root"]) == outside_urls(clean) | {HUB}  # type: ignore[arg-type]
    assert [h for page in built.values() for h in page.handlers] == []  # no onerror=, onclick=, ...


def test_no_script_but_those_a_clean_build_has(hostile: dict[str, object], clean: Path) -> None:
    assert script_tags(hostile["root"]) <= script_tags(clean)  # type: ignore[arg-type]


def test_every_page_carries_a_policy_without_unsafe_inline(hostile: dict[str, object]) -> None:
    built = pages(hostile["root"])  # type: ignore[arg-type]
    assert {"index.html", "query.html", "404.html"} <= set(built) and len(built) > 15
    for name, page in built.items():
        assert len(page.policies) == 1, name
        content, scripts_before = page.policies[0]
        assert scripts_before == 0, name  # a policy applies to what comes after it only
        directives = {d.split()[0]: d.split()[1:] for d in content.split(";") if d.strip()}
        assert directives["default-src"] == ["'none'"] and directives["object-src"] == ["'none'"], name
        sources = directives["script-src"]
        allowed = {"'self'"} | ({"'wasm-unsafe-eval'"} if name in ("query.html", "compare.html") else set())
        assert {s for s in sources if not s.startswith("'sha256-")} == allowed, (name, sources)
        inline = [text for attrs, text in page.scripts if not attrs.get("src")
                  and (attrs.get("type") or "") in ("", "module", "importmap")]
        assert inline, name  # the theme's own inline scripts: the policy must allow them, by hash
        for text in inline:
            digest = b64encode(hashlib.sha256(text.encode()).digest()).decode()
            assert f"'sha256-{digest}'" in sources, (name, text[:60])


def test_as_text_shows_every_character_as_itself() -> None:
    for value in (EVERYTHING, TITLE, "a  b\tc\r\n\u2028 é 😀 ", "  leading and trailing  "):
        escaped = as_text(value)
        assert html.unescape(escaped) == value  # what the browser shows
        assert re.fullmatch(r"[A-Za-z0-9&#;/,?@% é😀]*", escaped), escaped  # nothing Markdown or YAML reads
    assert re.fullmatch(r"[0-9&#;]*", as_text("\x00\x1b\x85\ufffe"))  # controls YAML front matter rejects


def test_template_filters_cannot_skip_the_escaping() -> None:
    """jinja2's filters that make Markup escape for HTML only: replaced, or gone."""
    env = _environment()
    for source in ("{{ x }}", "{{ x | e }}", "{{ x | escape }}", "{{ x | forceescape }}", "{{ [x] | join(x) }}",
                   "{{ [x | slug, x] | join(' ') }}", "{{ x | short }}{{ x | num }}{{ {x: x} | json }}"):
        shown = env.from_string(source).render(x=LINK)
        assert "[" not in shown and "(" not in shown and "javascript:" not in shown, (source, shown)
    for name in ("tojson", "urlize", "xmlattr"):
        with pytest.raises(jinja2.TemplateAssertionError, match=name):
            env.from_string(f"{{{{ x | {name} }}}}")


def test_slugs_are_safe_in_paths_and_urls_and_stay_distinct() -> None:
    names = [f"evaluation.{LINK}", f"evaluation.{IMG}", "../../etc/passwd", ".hidden", "sha256:" + "a" * 64]
    slugs = [slug(n) for n in names]
    assert all(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", s) for s in slugs), slugs
    assert len(set(slugs)) == len(slugs) and slugs[-1] == "a" * 64


# -- in Chromium -------------------------------------------------------------------------------

# What the contributor tried to make: elements, attributes, links, scripts, emphasis, blocks.
INJECTED = """(() => {
  const found = [];
  for (const el of document.querySelectorAll("*")) {
    for (const a of el.attributes) {
      if (a.name.startsWith("on")) found.push(`${el.tagName} ${a.name}`);
      if (/^\\s*(javascript|data|vbscript):/i.test(a.value)) found.push(`${el.tagName} ${a.name}=${a.value}`);
    }
  }
  for (const el of document.querySelectorAll('img[src="x"], #injected-block')) found.push(el.outerHTML);
  for (const s of document.scripts) if (/7\\*191|alert\\(/.test(s.textContent)) found.push(s.outerHTML);
  const words = ["stars", "under", "bold", "tick", "strike", "mark", "smile", "x", "d", "t", "i", "item", "injected heading"];
  for (const el of document.querySelectorAll("article em, article strong, article code, article del, article mark, "
                                             + "article a, article h1, article h2, article h3, article li, article pre"))
    if (words.includes(el.textContent.trim())) found.push(el.outerHTML);
  return found;
})()"""


def shown(text: str) -> str:
    """Text as document.title and innerText give it: runs of blanks collapsed."""
    return re.sub(r"\s+", " ", text).strip()


def hostile_pages(hostile: dict[str, object]) -> list[tuple[str, str]]:
    """(path, the title it must show) of the pages whose titles and bodies hold hostile text."""
    cat: modelsci.Catalogue = hostile["cat"]  # type: ignore[assignment]
    base: ModelInstance = hostile["models"]["base"]  # type: ignore[index]
    findings = cat.sql(f"SELECT id, kind FROM findings WHERE model_id = '{base.id}'").to_pylist()
    by_kind = {f["kind"]: f for f in findings}
    return [
        ("index.html", SITE),
        (f"models/{slug(base.id)}.html", f"{LINK}{IMG} - {SITE}"),
        # an unnamed dataset is named by its source's last part: here a hostile one, "</" splits it
        (f"datasets/{'e' * 64}.html", shown(f"{source_name(f'/data/{TITLE}{LINK}.parquet')} ({EMPH}) - {SITE}")),
        (f"analyses/{slug(f'evaluation.{LINK}')}.html", f"evaluation.{LINK} - {SITE}"),
        (f"findings/{slug(by_kind['feature_importance']['id'])}.html", f"feature_importance: {TITLE} - {SITE}"),
        (f"findings/{slug(by_kind[f'kind{LINK}']['id'])}.html", f"kind{LINK}: {IMG}{DATA} - {SITE}"),
    ]


def test_titles_show_the_text_and_nothing_injected_exists(hostile, server, browser) -> None:  # noqa: ANN001
    page = browser.page()
    try:
        for path, title in hostile_pages(hostile):
            page.goto(f"{server}/{path}")
            assert page.evaluate("document.title") == title, path  # not "1337": the </title> stayed text
            assert page.evaluate(INJECTED) == [], path
            assert page.csp_violations() == [], path
            if path != "index.html":
                text = page.evaluate("document.body.innerText")
                assert all(shown(v) in text for v in (LINK, IMG, TITLE)), path  # shown as typed
        assert page.dialogs == []
    finally:
        page.close()


def test_hub_links_only_for_hub_ids(hostile: dict[str, object]) -> None:
    root: Path = hostile["root"]  # type: ignore[assignment]
    models: dict[str, ModelInstance] = hostile["models"]  # type: ignore[assignment]
    urls = {name: outside_urls_of(root / "models" / f"{slug(m.id)}.html") for name, m in models.items()}
    assert HUB in urls["child"]
    assert not any("huggingface.co" in u for u in urls["bad_hub"] | urls["base"])
    child = (root / "models" / f"{slug(models['child'].id)}.html").read_text()
    assert f'href="{slug(models["base"].id)}.html"' in child  # its base model, a page of the site


def outside_urls_of(page: Path) -> set[str]:
    return {url for url in Page(page.read_text()).urls if scheme(url)}
