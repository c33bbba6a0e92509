"""The site's Query page on a generated catalogue of 1,000 models and 100,000 findings, in headless Chromium.

Publishes the catalogue (``modelsci publish``: site and export, findings sorted by model in small
row groups), serves it with the range-request server (``modelsci.http_serve``), and reports:

- ``first_answer_s``: from opening ``query.html?sql=SELECT count(*) FROM findings`` to its answer
  (DuckDB-WASM loading included);
- ``count_s``: the same query run again on the loaded page (target: under 2 s);
- ``one_model_bytes``: bytes of the findings file the server sent for a query on one model,
  and their share of the file (target: at most 10%).

Run: python benchmarks/bench_query_page.py [--models 1000] [--findings-per-model 100]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.browser, bench_site

from benchmarks.bench_site import generate  # noqa: E402
from modelsci import catalogue  # noqa: E402
from modelsci.http_serve import make_server  # noqa: E402
from modelsci.publish import publish  # noqa: E402
from tests.browser import Browser  # noqa: E402

FINDINGS = "/data/tables/findings.parquet"


def _answer(page: object, sql: str) -> tuple[float, list[str]]:
    """Run ``sql`` on the loaded Query page; seconds until its answer, and the answer's cells."""
    page.evaluate("document.body.dataset.queryDone = '0'")
    page.evaluate(f"document.getElementById('query-sql').value = {json.dumps(sql)}")
    start = time.perf_counter()
    page.evaluate("document.getElementById('query-run').click()")
    page.wait("document.body.dataset.queryDone === '1'", 120)
    seconds = time.perf_counter() - start
    return seconds, page.evaluate("[...document.querySelectorAll('#query-result td')].map(td => td.textContent)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--findings-per-model", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cat = catalogue.open(Path(tmp) / "cat", create=True)
        generate(cat, args.models, args.findings_per_model)
        findings = cat.sql("SELECT count(*) AS n FROM findings").to_pylist()[0]["n"]
        model_id = cat.sql("SELECT id FROM models ORDER BY id LIMIT 1 OFFSET 500").to_pylist()[0]["id"]
        start = time.perf_counter()
        publish(cat, Path(tmp) / "public")
        publish_s = time.perf_counter() - start
        size = (Path(tmp) / "public" / "data" / "tables" / "findings.parquet").stat().st_size
        server = make_server(Path(tmp) / "public")
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}"
        browser = Browser()
        page = browser.page()
        try:
            start = time.perf_counter()
            page.goto(f"{url}/query.html?sql={urllib.parse.quote('SELECT count(*) FROM findings')}", 120)
            page.wait("document.body.dataset.queryDone === '1'", 120)
            first_s = time.perf_counter() - start
            first = page.evaluate("[...document.querySelectorAll('#query-result td')].map(td => td.textContent)")
            count_s, again = _answer(page, "SELECT count(*) FROM findings")
            server.sent.clear()
            one_s, cells = _answer(page, f"SELECT kind, subject, value FROM findings WHERE model_id = '{model_id}'")
            one_bytes = server.sent[FINDINGS]
        finally:
            page.close()
            browser.close()
            server.shutdown()
        result = {
            "models": args.models, "findings": findings, "publish_s": round(publish_s, 1),
            "answers": {"first": first, "again": again, "one_model_rows": len(cells) // 3},
            "first_answer_s": round(first_s, 2), "count_s": round(count_s, 2), "one_model_s": round(one_s, 2),
            "findings_file_bytes": size, "one_model_bytes": one_bytes,
            "one_model_share": round(one_bytes / size, 4),
            "targets": {"count_s": "< 2", "one_model_share": "<= 0.10"},
        }
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "query_page.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
