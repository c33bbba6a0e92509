"""Content identities: every id in modelsci is ``sha256:`` + a hex digest of content.

Model instances: the tensor hash
--------------------------------
``ModelInstance.id`` depends on the tensors and nothing else, so re-sharding, saving again,
renaming a file or editing a README keeps the id, and changing one element makes a new one.
The encoding, in full (``dtype`` is the safetensors dtype string such as ``F32``, ``BF16``,
``I64``; ``data`` is the tensor's raw bytes, little-endian, C order, exactly as safetensors
stores them)::

    h = hashlib.sha256(b"modelsci-tensors-v1\\n")
    for name in sorted(tensors):                  # sorted by the name's UTF-8 bytes
        header = json.dumps({"dtype": dtype, "name": name, "shape": shape},
                            sort_keys=True, separators=(",", ":")).encode()
        h.update(len(header).to_bytes(8, "little")); h.update(header)
        h.update(len(data).to_bytes(8, "little"));   h.update(data)
    model_id = "sha256:" + h.hexdigest()

With safetensors and hashlib alone: ``safe_open(path, "np")`` gives names, ``get_slice(name)
.get_dtype()`` / ``.get_shape()`` the dtype and shape, and ``get_tensor(name).tobytes()`` the
data (for dtypes numpy lacks, such as BF16, read the bytes at the header's ``data_offsets``).

scikit-learn models (skops files)
---------------------------------
A skops file is a zip of ``schema.json`` and one ``.npy`` member per array, the members named
after Python object ids, so the bytes differ on every save. The identity canonicalises it::

    schema = json.loads(zip.read("schema.json")); del schema["_skops_version"]
    walk schema: replace each node's "file" by the hex sha256 of that .npy member's bytes,
    and drop each "__id__" (object ids, which Python recycles, so they are not content)
    model_id = "sha256:" + sha256(b"modelsci-skops-v1\n" + canonical_json(schema)).hexdigest()

Datasets
--------
``Dataset.id`` hashes the rows as used: the Arrow table with its columns sorted by name, no
schema metadata, one chunk, written as an Arrow IPC stream, then the split and the row limit.

Everything else
---------------
``content_id(obj)`` hashes canonical JSON (sorted keys, no spaces, UTF-8); finding keys and
finding ids are built from it (see ``schemas.findings``).
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

__all__ = [
    "TensorRecord",
    "canonical_json",
    "content_id",
    "dataset_id",
    "safetensors_records",
    "sha256_file",
    "skops_hash",
    "tensor_hash",
    "tensor_hash_of_arrays",
    "tensor_hash_of_files",
]

TENSOR_HASH_PREFIX = b"modelsci-tensors-v1\n"

# numpy dtype -> safetensors dtype string, for tensors hashed from memory.
_NUMPY_TO_SAFETENSORS = {
    "float64": "F64", "float32": "F32", "float16": "F16",
    "int64": "I64", "int32": "I32", "int16": "I16", "int8": "I8",
    "uint64": "U64", "uint32": "U32", "uint16": "U16", "uint8": "U8", "bool": "BOOL",
}

TensorRecord = tuple[str, str, list[int], bytes]
"""(name, safetensors dtype, shape, raw little-endian bytes)"""


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: the form every content id hashes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def content_id(obj: Any) -> str:
    """``sha256:`` + digest of the canonical JSON of ``obj``."""
    return "sha256:" + hashlib.sha256(canonical_json(obj).encode()).hexdigest()


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def tensor_hash(records: Iterable[TensorRecord]) -> str:
    """The model identity over tensor records; names must be unique."""
    by_name: dict[str, TensorRecord] = {}
    for record in records:
        if record[0] in by_name:
            raise ValueError(f"tensor {record[0]!r} appears twice (in two shards?)")
        by_name[record[0]] = record
    if not by_name:
        raise ValueError("no tensors to hash: the model has no weights")
    h = hashlib.sha256(TENSOR_HASH_PREFIX)
    for name in sorted(by_name, key=lambda n: n.encode()):
        _, dtype, shape, data = by_name[name]
        header = canonical_json({"dtype": dtype, "name": name, "shape": list(shape)}).encode()
        h.update(len(header).to_bytes(8, "little"))
        h.update(header)
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return "sha256:" + h.hexdigest()


def safetensors_records(path: str | Path) -> Iterator[TensorRecord]:
    """Read (name, dtype, shape, bytes) from a safetensors file without a framework."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise ValueError(f"{path}: not a safetensors file (it is {size} bytes long)")
        (header_len,) = struct.unpack("<Q", raw)
        if header_len > size - 8:
            raise ValueError(f"{path}: not a safetensors file (header length {header_len} "
                             f"exceeds the file's {size} bytes)")
        try:
            header = json.loads(f.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: not a safetensors file (header is not JSON: {exc})") from None
        base = 8 + header_len
        for name, info in sorted(header.items()):
            if name == "__metadata__":
                continue
            start, end = info["data_offsets"]
            if base + end > size:
                raise ValueError(f"{path}: tensor {name!r} runs past the end of the file")
            f.seek(base + start)
            yield name, info["dtype"], list(info["shape"]), f.read(end - start)


def tensor_hash_of_files(paths: Iterable[str | Path]) -> str:
    """Tensor hash over one safetensors file or several shards of one model."""
    return tensor_hash(r for p in paths for r in safetensors_records(p))


def tensor_hash_of_arrays(tensors: Mapping[str, Any]) -> str:
    """Tensor hash of in-memory tensors (numpy arrays or torch tensors on any device)."""
    def records() -> Iterator[TensorRecord]:
        for name, t in tensors.items():
            arr, dtype = _as_little_endian_array(t)
            yield name, dtype, list(arr.shape), arr.tobytes()
    return tensor_hash(records())


def _as_little_endian_array(t: Any) -> tuple[np.ndarray, str]:
    if hasattr(t, "detach"):  # a torch tensor
        import torch
        t = t.detach().cpu().contiguous()
        if t.dtype == torch.bfloat16:  # numpy has no bfloat16: hash its raw 16-bit words
            return np.ascontiguousarray(t.view(torch.int16).numpy()), "BF16"
        t = t.numpy()
    arr = np.ascontiguousarray(t)
    if arr.dtype.byteorder == ">":
        arr = arr.byteswap().view(arr.dtype.newbyteorder("<"))
    return arr, _NUMPY_TO_SAFETENSORS[arr.dtype.name]


def skops_hash(path: str | Path) -> str:
    """Identity of a scikit-learn model saved with skops: its schema and arrays, not its bytes."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            schema = json.loads(archive.read("schema.json"))
            members = {name: archive.read(name) for name in archive.namelist() if name != "schema.json"}
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a skops file ({exc})") from None
    schema.pop("_skops_version", None)
    def canonical(node: Any) -> Any:
        if isinstance(node, list):
            return [canonical(v) for v in node]
        if not isinstance(node, dict):
            return node
        out = {}
        for key, value in node.items():
            if key == "__id__":
                continue
            if key == "file" and isinstance(value, str) and value in members:
                out[key] = hashlib.sha256(members[value]).hexdigest()
            else:
                out[key] = canonical(value)
        return out

    data = b"modelsci-skops-v1\n" + canonical_json(canonical(schema)).encode()
    return "sha256:" + hashlib.sha256(data).hexdigest()


def dataset_id(table: pa.Table, split: str | None, limit: int | None) -> str:
    """Identity of the rows as used: sorted columns, Arrow IPC stream, split and limit."""
    table = table.select(sorted(table.column_names)).replace_schema_metadata(None)
    table = table.cast(pa.schema([f.remove_metadata() for f in table.schema])).combine_chunks()
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    h = hashlib.sha256(sink.getvalue())
    h.update(canonical_json({"limit": limit, "split": split}).encode())
    return "sha256:" + h.hexdigest()
