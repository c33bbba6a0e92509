"""What the site's Query and Compare pages run in the browser: the catalogue's own SQL, as JSON.

DuckDB-WASM on those pages answers as ``modelsci sql`` does because it runs the same
definitions, written out at build time into ``assets/catalogue-sql.json``:

- ``tables``: each published table's file, by the name it is registered under in DuckDB-WASM
  (``tables/<name>.parquet``) and its URL relative to the site's root (``data/tables/...``);
  files are read with HTTP range requests, not downloaded whole;
- ``setup``: the statements making ``store.<name>`` views over those files and the public views
  over them (``findings_current``, ``findings_summary``, ``findings_lineage``, ...), exactly those
  of ``modelsci.open("https://...")``;
- ``history``: the same with the bookkeeping for an answer as of an earlier commit, the commit's
  sequence number written as ``AS_OF_SEQ`` (the page puts the number in);
- ``artifact_views``: each ``artifact_<name>`` view's files and SELECT, reading each file by its
  relative path ``artifacts/<sha256>.parquet``, registered under that name (so a query naming
  ``'artifacts/<sha256>.parquet'`` reads it too, as in the CLI);
- ``compare``: ``modelsci compare``'s SQL for one side, and for joining two models' sides
  (``side_a`` and ``side_b``) or the catalogue's at two commits;
- ``commit``: the catalogue commit the site was built from.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from modelsci.catalogue.artifact_views import artifact_views
from modelsci.catalogue.remote import store_statements
from modelsci.catalogue.schema import view_definitions
from modelsci.catalogue.store import Catalogue
from modelsci.compare import COMMITS_SQL, MODELS_SQL, SIDE_SQL

__all__ = ["AS_OF_SEQ", "CONFIG_PATH", "query_config", "write_query_config"]

CONFIG_PATH = "assets/catalogue-sql.json"
"""Where the config lies in the site, relative to its root."""
JSON_TYPE = "VARCHAR"  # DuckDB-WASM 1.28 has no json extension built in: JSON columns are text there
AS_OF_SEQ = 9_007_199_254_740_991  # a number no catalogue reaches (2^53 - 1), replaced in the browser


def query_config(cat: Catalogue, manifest: dict[str, Any], data: str = "data/") -> dict[str, Any]:
    """The pages' SQL for the catalogue exported with ``manifest`` into the site's folder ``data``."""
    def views(seq: int | None) -> list[str]:
        return [f"CREATE VIEW {name} AS {select}" for name, select in view_definitions(seq).items()]

    def registered(name: str) -> str:
        return f"tables/{name}.parquet"

    with cat.reader() as con:
        artifacts = {v.name: {"artifact": v.artifact, "paths": list(v.paths), "sql": v.select("")}
                     for v in artifact_views(con, f"{cat.root}/")}
    return {
        "commit": manifest.get("catalogue_commit"),
        "tables": {name: {"name": info["path"], "url": data + info["path"]}
                   for name, info in sorted(manifest["tables"].items())},
        "setup": [*store_statements(registered, history=False, json_type=JSON_TYPE), *views(None)],
        "history": [*store_statements(registered, history=True, json_type=JSON_TYPE), *views(AS_OF_SEQ)],
        "as_of_placeholder": str(AS_OF_SEQ),
        "artifact_views": artifacts,
        "compare": {"side": SIDE_SQL, "join": MODELS_SQL, "join_commits": COMMITS_SQL},
    }


def write_query_config(cat: Catalogue, manifest: dict[str, Any], docs: Path) -> None:
    """Write ``query_config`` into the site's sources ``docs`` (at ``CONFIG_PATH``)."""
    path = docs / CONFIG_PATH
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(query_config(cat, manifest), indent=1))
