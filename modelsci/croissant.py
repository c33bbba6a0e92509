"""A Croissant 1.0 description (JSON-LD) of a published catalogue's tables.

Croissant (MLCommons) is what dataset search engines and loaders read: one ``cr:FileObject``
per table's Parquet file (with its sha256), and one ``cr:RecordSet`` per table with one
``cr:Field`` per column, its type mapped from the schema's SQL type and its description taken
from the schema (``catalogue.schema.TABLES``), each field's values extracted from the file's
column of the same name.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from modelsci.catalogue.schema import TABLES

__all__ = ["CONTEXT", "croissant"]

CONTEXT: dict[str, Any] = {
    "@language": "en",
    "@vocab": "https://schema.org/",
    "citeAs": "cr:citeAs",
    "column": "cr:column",
    "conformsTo": "dct:conformsTo",
    "cr": "http://mlcommons.org/croissant/",
    "rai": "http://mlcommons.org/croissant/RAI/",
    "data": {"@id": "cr:data", "@type": "@json"},
    "dataType": {"@id": "cr:dataType", "@type": "@vocab"},
    "dct": "http://purl.org/dc/terms/",
    "equivalentProperty": "cr:equivalentProperty",
    "examples": {"@id": "cr:examples", "@type": "@json"},
    "extract": "cr:extract",
    "field": "cr:field",
    "fileProperty": "cr:fileProperty",
    "fileObject": "cr:fileObject",
    "fileSet": "cr:fileSet",
    "format": "cr:format",
    "includes": "cr:includes",
    "isLiveDataset": "cr:isLiveDataset",
    "jsonPath": "cr:jsonPath",
    "key": "cr:key",
    "md5": "cr:md5",
    "parentField": "cr:parentField",
    "path": "cr:path",
    "recordSet": "cr:recordSet",
    "references": "cr:references",
    "regex": "cr:regex",
    "repeated": "cr:repeated",
    "replace": "cr:replace",
    "samplingRate": "cr:samplingRate",
    "sc": "https://schema.org/",
    "separator": "cr:separator",
    "source": "cr:source",
    "subField": "cr:subField",
    "transform": "cr:transform",
}
"""The JSON-LD context of Croissant 1.0, as its specification gives it."""

_DATA_TYPES = {"VARCHAR": "sc:Text", "JSON": "sc:Text", "BIGINT": "sc:Integer", "DOUBLE": "sc:Float",
               "BOOLEAN": "sc:Boolean", "TIMESTAMP": "sc:DateTime"}
# Columns an exported table has beyond its entity's: the views add them.
_EXTRA = {("findings", "status"): ("VARCHAR", "`current` or `superseded`, or `verification` for a verification "
                                              "run's finding (never current).")}
_ARROW_TYPES = [(pa.types.is_integer, "sc:Integer"), (pa.types.is_floating, "sc:Float"),
                (pa.types.is_boolean, "sc:Boolean"), (pa.types.is_timestamp, "sc:DateTime")]


def croissant(manifest: dict[str, Any], schemas: dict[str, pa.Schema], *, prefix: str, name: str,
              description: str, url: str | None = None) -> dict[str, Any]:
    """The Croissant JSON-LD of an export: ``manifest`` is its ``manifest.json``, ``schemas`` each
    table file's Arrow schema, ``prefix`` the path from the JSON-LD file to the export folder."""
    distribution, record_sets = [], []
    for table, entry in manifest["tables"].items():
        file_id = f"{table}-parquet"
        distribution.append({
            "@type": "cr:FileObject", "@id": file_id, "name": f"{table}.parquet",
            "description": f"The {table} table as Parquet.", "contentUrl": prefix + entry["path"],
            "encodingFormat": "application/x-parquet", "sha256": entry["sha256"],
        })
        spec = TABLES[table]
        columns = {c.name: (c.sql_type, c.description) for c in spec.columns}
        fields = []
        for column in schemas[table]:
            sql_type, text = columns.get(column.name) or _EXTRA.get((table, column.name)) or (None, "")
            fields.append({
                "@type": "cr:Field", "@id": f"{table}/{column.name}", "name": column.name,
                "description": text or f"The {column.name} column.",
                "dataType": _DATA_TYPES[sql_type] if sql_type else _arrow_data_type(column.type),
                "source": {"fileObject": {"@id": file_id}, "extract": {"column": column.name}},
            })
        record_sets.append({"@type": "cr:RecordSet", "@id": table, "name": table,
                            "description": spec.description, "field": fields})
    metadata: dict[str, Any] = {
        "@context": CONTEXT, "@type": "sc:Dataset", "name": name, "description": description,
        "conformsTo": "http://mlcommons.org/croissant/1.0",
        "datePublished": manifest["exported_at"],
        "version": f"{(manifest.get('catalogue_commit') or {}).get('seq', 0)}.0.0",
        "distribution": distribution, "recordSet": record_sets,
    }
    if url:
        metadata["url"] = url
    return metadata


def _arrow_data_type(arrow_type: pa.DataType) -> str:
    for test, data_type in _ARROW_TYPES:
        if test(arrow_type):
            return data_type
    return "sc:Text"
