"""Images in datasets: the ``image`` role's column as the ``datasets`` Image feature.

A column of images may come as the ``datasets`` Image feature (a struct of ``bytes`` and
``path``), as raw encoded bytes, or as file paths; an image folder holds the files beside a
``metadata.jsonl`` whose rows name them in ``file_name`` (the layout of the hub's
imagefolder). Whatever the form, the resolved column is the Image feature with every
image's encoded bytes inside it, read from the submitted folder through bounded reads, so
that the dataset's id covers the image bytes, not only their names. Each image is checked
to be one Pillow can read (its header only) before the dataset is registered, and decoding
refuses images over ``MAX_PIXELS``.

An image-text dataset may also give boxes (the ``boxes`` role): per row a list of
``{span: [start_char, end_char], box: [x0, y0, x1, y1]}``, the characters of the row's text
that name a region and that region in pixels of the original image (x rightwards, y
downwards, edges not centres). ``check_boxes`` validates them and stores them as
``BOXES_TYPE``; a JSON string per row (a CSV's column) is read the same way.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import pyarrow as pa

from modelsci.schemas.errors import ModelsciError
from modelsci.schemas.untrusted_files import limit, read_bytes, read_text, regular_file, walk

__all__ = ["BOXES_TYPE", "IMAGE_TYPE", "MAX_PIXELS", "ImageError", "check_boxes", "decode_image", "embed_images",
           "image_folder", "is_image_folder"]

IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
"""The ``datasets`` Image feature's storage type."""
BOXES_TYPE = pa.list_(pa.struct([("span", pa.list_(pa.int64())), ("box", pa.list_(pa.float64()))]))
"""A row's boxes: text spans (characters) and their regions (pixels of the original image)."""
MAX_PIXELS = 64_000_000
"""Largest image decoded (width x height): a small file can declare a huge canvas."""


class ImageError(ModelsciError, ValueError):
    """An image column or image folder that cannot be read."""


def is_image_folder(path: Path) -> bool:
    return path.is_dir() and (path / "metadata.jsonl").is_file()


def image_folder(path: Path, place: str = "dataset") -> pa.Table:
    """An image folder's rows: the metadata.jsonl columns, with ``file_name`` read into an ``image`` column."""
    for file in walk(path, what=f"{place}.source"):
        regular_file(file, within=path, what=f"{place}.source")
    text = read_text(path / "metadata.jsonl", limit("dataset"), within=path, what=f"{place}.source")
    rows: list[dict[str, Any]] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ImageError(f"{place}.source: {path / 'metadata.jsonl'} line {number} is not JSON: {exc}") from None
        if not isinstance(row, dict) or not isinstance(row.get("file_name"), str):
            raise ImageError(f"{place}.source: {path / 'metadata.jsonl'} line {number} has no file_name")
        rows.append(row)
    if not rows:
        raise ImageError(f"{place}.source: {path / 'metadata.jsonl'} lists no images")
    table = pa.Table.from_pylist([{**{k: v for k, v in r.items() if k != "file_name"},
                                   "image": {"bytes": None, "path": r["file_name"]}} for r in rows])
    return embed_images(table, "image", path, place)


def embed_images(table: pa.Table, column: str, base: Path | None, place: str = "dataset",
                 within: Path | None = None) -> pa.Table:
    """``column`` as the Image feature with every image's bytes inside, each checked to be an image.

    Paths are read relative to ``base`` (the data's folder) and must stay inside ``within``
    (default ``base``; a hub snapshot's repository folder, whose files link into its blobs).
    """
    kind = table.schema.field(column).type
    values = table.column(column).to_pylist()
    if pa.types.is_struct(kind) and {f.name for f in kind} >= {"bytes"}:
        items = [((v or {}).get("bytes"), (v or {}).get("path")) for v in values]
    elif pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        items = [(v, None) for v in values]
    elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
        items = [(None, v) for v in values]
    else:
        raise ImageError(f"{place}.columns.image: column {column!r} holds {kind}, not images (the datasets "
                         "Image feature, encoded bytes or file paths)")
    out = []
    for row, (data, name) in enumerate(items):
        if data is None:
            if not name:
                raise ImageError(f"{place}.columns.image: row {row} has neither image bytes nor a path")
            if base is None:
                raise ImageError(f"{place}.columns.image: row {row} names the file {name!r} but the data has "
                                 "no folder to read it from; embed the image bytes")
            file = (base / name)
            if not file.exists():
                raise ImageError(f"{place}.columns.image: row {row}: {file} does not exist")
            data = read_bytes(file, limit("dataset"), within=within or base, what=f"{place}.columns.image")
        _check(data, f"{place}.columns.image: row {row}" + (f" ({name})" if name else ""))
        out.append({"bytes": data, "path": Path(name).name if name else None})
    index = table.column_names.index(column)
    return table.set_column(index, column, pa.array(out, IMAGE_TYPE))


def _check(data: bytes, where: str) -> None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError) as exc:
        raise ImageError(f"{where} is not an image Pillow can read: {exc}") from None
    if width * height > MAX_PIXELS:
        raise ImageError(f"{where} declares {width}x{height} pixels, more than {MAX_PIXELS:,}")


def decode_image(value: dict[str, Any] | bytes) -> Any:
    """A PIL RGB image from an Image feature value (its bytes) or raw bytes."""
    from PIL import Image

    data = value.get("bytes") if isinstance(value, dict) else value
    if data is None:
        raise ImageError("an image without bytes (resolve the dataset to embed them)")
    image = Image.open(io.BytesIO(data))
    if image.size[0] * image.size[1] > MAX_PIXELS:
        raise ImageError(f"an image of {image.size[0]}x{image.size[1]} pixels, more than {MAX_PIXELS:,}")
    return image.convert("RGB")


def check_boxes(table: pa.Table, column: str, texts: list[str], place: str = "dataset") -> pa.Table:
    """``column`` as ``BOXES_TYPE``, every span inside its row's text and every box with x0 < x1, y0 < y1."""
    where = f"{place}.columns.boxes"
    kind = table.schema.field(column).type
    values = table.column(column).to_pylist()
    out: list[list[dict[str, list[float]]]] = []
    for row, value in enumerate(values):
        if isinstance(value, str):  # a CSV holds each row's list as JSON
            try:
                value = json.loads(value) if value.strip() else None
            except json.JSONDecodeError as exc:
                raise ImageError(f"{where}: row {row} is not JSON: {exc}") from None
        elif value is not None and not (pa.types.is_list(kind) or pa.types.is_large_list(kind)):
            raise ImageError(f"{where}: column {column!r} holds {kind}, not lists of {{span, box}}")
        if value is None:
            out.append([])
            continue
        if not isinstance(value, list):
            raise ImageError(f"{where}: row {row} is {type(value).__name__}, not a list of {{span, box}}")
        items = []
        for item in value:
            span, box = (item.get("span"), item.get("box")) if isinstance(item, dict) else (None, None)
            if not (isinstance(span, list) and len(span) == 2 and all(isinstance(v, int) for v in span)
                    and 0 <= span[0] < span[1] <= len(texts[row])):
                raise ImageError(f"{where}: row {row}: span {span!r} is not [start_char, end_char] inside the "
                                 f"row's text of {len(texts[row])} characters")
            if not (isinstance(box, list) and len(box) == 4 and all(_finite(v) for v in box)
                    and box[0] < box[2] and box[1] < box[3]):
                raise ImageError(f"{where}: row {row}: box {box!r} is not [x0, y0, x1, y1] with x0 < x1, y0 < y1")
            items.append({"span": span, "box": [float(v) for v in box]})
        out.append(items)
    return table.set_column(table.column_names.index(column), column, pa.array(out, BOXES_TYPE))


def _finite(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
