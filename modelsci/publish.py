"""``modelsci publish DIR``: everything a static host needs to publish the catalogue.

``DIR`` is served as it is (any static host; ``modelsci site serve --out DIR`` locally):

- ``index.html`` and the rest of the site (``modelsci site build``);
- ``data/``: the catalogue's export (``modelsci export``): ``manifest.json``,
  ``tables/<name>.parquet``, ``artifacts/<sha256>.parquet``, and its README. It is what the site's
  Query page reads, what ``modelsci.open("https://host/path/")`` reads over HTTP, and what
  ``modelsci import`` takes. The findings table is written sorted by model, in row groups of
  ``FINDINGS_ROW_GROUP`` rows: a reader asking about one model fetches the row groups whose
  statistics hold it, a small part of the file;
- ``croissant.json``: a Croissant 1.0 description of every table and its fields;
- ``README.md``: a dataset card whose front matter has one config per table, so that
  ``datasets.load_dataset(DIR_or_URL, "findings")`` reads a table.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from modelsci.catalogue.docs import tables_reference
from modelsci.catalogue.store import Catalogue
from modelsci.croissant import croissant
from modelsci.schemas.identity import sha256_file
from modelsci.site_build import MAX_FINDING_PAGES, SiteReport, build_site

__all__ = ["FINDINGS_ROW_GROUP", "PublishReport", "dataset_card", "publish"]

FINDINGS_ROW_GROUP = 2048
"""Rows per row group of the published findings: small enough that one model's findings span few."""
DATA = "data/"  # where the site keeps the export, relative to the published folder
_SORT = [("model_id", "ascending"), ("analysis_name", "ascending"), ("kind", "ascending"),
         ("subject", "ascending"), ("seed", "ascending"), ("version", "ascending")]


@dataclass
class PublishReport:
    """What was published where."""

    out: Path
    site: SiteReport
    manifest: dict[str, Any]
    findings_row_groups: int


def publish(cat: Catalogue, out: str | Path, *, max_finding_pages: int = MAX_FINDING_PAGES,
            url: str | None = None) -> PublishReport:
    """Write the site, its export, ``croissant.json`` and a dataset card into ``out`` (module docstring).

    ``url``, where the folder will be served, goes into ``croissant.json`` when given.
    """
    out = Path(out)
    site = build_site(cat, out, max_finding_pages=max_finding_pages)
    data = out / DATA
    manifest = json.loads((data / "manifest.json").read_text())
    groups = _sort_findings(data, manifest)
    schemas = {name: pq.read_schema(data / entry["path"]) for name, entry in manifest["tables"].items()}
    description = ("Findings about trained model instances (model science), with the models, datasets, "
                   "analyses and runs they come from, as a modelsci catalogue: typed, versioned and linked.")
    metadata = croissant(manifest, schemas, prefix=DATA, name="modelsci-catalogue", description=description,
                         url=url)
    _write(out / "croissant.json", json.dumps(metadata, indent=2) + "\n")
    _write(out / "README.md", dataset_card(manifest, prefix=DATA))
    return PublishReport(out, site, manifest, groups)


def _sort_findings(data: Path, manifest: dict[str, Any]) -> int:
    """Rewrite the findings file sorted by model in small row groups; update its sha256 in the manifest."""
    entry = manifest["tables"]["findings"]
    path = data / entry["path"]
    table = pq.read_table(path).sort_by(_SORT)
    tmp = path.with_name(f".{path.name}.new")
    pq.write_table(table, tmp, compression="zstd", row_group_size=FINDINGS_ROW_GROUP)
    os.replace(tmp, path)
    entry["sha256"] = sha256_file(path)
    _write(data / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    return pq.ParquetFile(path).num_row_groups


def dataset_card(manifest: dict[str, Any], *, prefix: str = "") -> str:
    """A dataset card (README.md): front matter with one config per table, then how to read it and the tables."""
    configs = "\n".join(f"- config_name: {name}\n  data_files: {prefix}{entry['path']}"
                        + ("\n  default: true" if name == "findings" else "")
                        for name, entry in manifest["tables"].items())
    commit = manifest.get("catalogue_commit") or {}
    rows = "\n".join(f"| `{name}` | `{prefix}{entry['path']}` | {entry['rows']} |"
                     for name, entry in manifest["tables"].items())
    return f"""---
pretty_name: modelsci catalogue
tags:
- modelsci
- model-science
configs:
{configs}
---

# modelsci catalogue

Findings about trained model instances, with the models, datasets, analyses and runs they come
from: a modelsci catalogue published at commit {commit.get('seq', '-')} (`{commit.get('id', 'empty')}`),
{manifest['exported_at']}.

| table | file | rows |
|---|---|---|
{rows}

Read it where it is served, without downloading it whole, or from a downloaded copy:

```python
import modelsci
cat = modelsci.open("https://host/path/")           # the folder holding this README
cat.sql("SELECT kind, subject, mean, ci_low, ci_high FROM findings_summary")

import datasets
datasets.load_dataset("path/to/folder", "findings")  # one config per table
datasets.load_dataset("parquet", data_files="https://host/path/{prefix}tables/findings.parquet")
```

`croissant.json` describes every table and field (Croissant 1.0); `{prefix}manifest.json` lists
each file with its sha256, and `modelsci import {prefix or '.'}` merges the catalogue into another,
verifying every id. The artifacts of findings are in `{prefix}artifacts/`, named by the sha256 of
their bytes (`SELECT * FROM 'artifacts/<sha256>.parquet'` in `modelsci.open(...).sql`).

## Tables

{tables_reference()}"""


def _write(path: Path, text: str) -> None:
    """Write a file whole or not at all (a reader of the folder never sees half of it)."""
    tmp = path.with_name(f".{path.name}.new")
    tmp.write_text(text)
    os.replace(tmp, path)
