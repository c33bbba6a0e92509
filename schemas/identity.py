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
``Dataset.id`` hashes what the model reads, and nothing else: the columns that play a role,
in the order they are fed (the ``features`` in order, then ``label``, ``text``, ``text_pair``,
``image`` where present; a column is taken once), so extra columns and the file's column
order do not change it, and another feature list does. The rows as used (after split and
limit) are written as an Arrow IPC stream, no schema metadata, one chunk::

    columns = [*roles.get("features", []), *(roles[r] for r in (label, text, text_pair, image) if r in roles)]
    columns = list(dict.fromkeys(columns))
    h = hashlib.sha256(b"modelsci-dataset-v2\n")
    h.update(ipc_stream(table.select(columns)))            # metadata removed, combine_chunks()
    h.update(canonical_json({"limit": limit, "roles": roles, "split": split}).encode())
    dataset_id = "sha256:" + h.hexdigest()

Everything else
---------------
``content_id(obj)`` hashes canonical JSON (sorted keys, no spaces, UTF-8); finding keys and
finding ids are built from it (see ``schemas.findings``).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa

from modelsci.schemas.untrusted_files import limit, open_regular

__all__ = [
    "TensorRecord",
    "canonical_json",
    "content_id",
    "dataset_columns",
    "dataset_id",
    "check_skops",
    "safetensors_header",
    "safetensors_records",
    "sha256_file",
    "skops_hash",
    "tensor_hash",
    "tensor_hash_of_arrays",
    "tensor_hash_of_files",
]

TENSOR_HASH_PREFIX = b"modelsci-tensors-v1\n"

SAFETENSORS_DTYPE_BITS = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E4M3": 8, "F8_E5M2": 8, "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
    "I32": 32, "U32": 32, "F32": 32, "I64": 64, "U64": 64, "F64": 64, "C64": 64,
}
"""Bits per element of each dtype a safetensors header may name."""

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


def safetensors_header(f: BinaryIO, size: int, name: str) -> tuple[int, dict[str, tuple[str, list[int], int, int]]]:
    """Validate a safetensors file's header before anything is allocated from it.

    Returns the data's start and, per tensor, (dtype, shape, start, end) within the data. The
    header must be a JSON object of known dtypes whose shape x dtype size is exactly the byte
    span each tensor claims, spans that lie inside the file; so no header can claim more
    elements than the file holds bytes.
    """
    raw = f.read(8)
    if len(raw) < 8:
        raise ValueError(f"{name}: not a safetensors file (it is {size} bytes long)")
    (header_len,) = struct.unpack("<Q", raw)
    if header_len > size - 8:
        raise ValueError(f"{name}: not a safetensors file (header length {header_len} exceeds the file's {size} bytes)")
    if header_len > limit("safetensors_header"):
        raise ValueError(f"{name}: its safetensors header is {header_len:,} bytes, over the limit of "
                         f"{limit('safetensors_header'):,}")
    try:
        header = json.loads(f.read(header_len))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{name}: not a safetensors file (header is not JSON: {exc})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{name}: not a safetensors file (header is a JSON {type(header).__name__}, not an object)")
    data_size = size - 8 - header_len
    tensors = {}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        tensors[key] = _tensor_entry(name, key, info, data_size)
    return 8 + header_len, tensors


def _tensor_entry(name: str, key: str, info: Any, data_size: int) -> tuple[str, list[int], int, int]:
    where = f"{name}: tensor {key!r}"
    if not isinstance(info, dict):
        raise ValueError(f"{where}: its header entry is not an object")
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if dtype not in SAFETENSORS_DTYPE_BITS:
        raise ValueError(f"{where}: unknown dtype {dtype!r}")
    if not (isinstance(shape, list) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
        raise ValueError(f"{where}: shape {shape!r} is not a list of non-negative whole numbers")
    if not (isinstance(offsets, list) and len(offsets) == 2
            and all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)):
        raise ValueError(f"{where}: data_offsets {offsets!r} is not [start, end]")
    start, end = offsets
    if not 0 <= start <= end <= data_size:
        raise ValueError(f"{where}: data_offsets [{start}, {end}] lie outside the file's {data_size} bytes of data")
    elements = 1
    for d in shape:
        elements *= d
    if elements * SAFETENSORS_DTYPE_BITS[dtype] != (end - start) * 8:
        raise ValueError(f"{where}: shape {shape} of {dtype} is {elements:,} elements, "
                         f"but its data is {end - start:,} bytes")
    return dtype, shape, start, end


def safetensors_records(path: str | Path) -> Iterator[TensorRecord]:
    """Read (name, dtype, shape, bytes) from a safetensors file without a framework, header checked first."""
    path = Path(path)
    with open_regular(path, what="weights") as f:
        size = os.fstat(f.fileno()).st_size
        base, tensors = safetensors_header(f, size, str(path))
        for name in sorted(tensors):
            dtype, shape, start, end = tensors[name]
            f.seek(base + start)
            yield name, dtype, shape, f.read(end - start)


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


def check_skops(path: str | Path) -> None:
    """Check a skops archive member by member before anything is read from it.

    Only a regular file; declared sizes within the limit; no member compressed more than the
    compression-ratio limit (a zip bomb inflates 1.5 MB into gigabytes); each ``.npy`` member's
    header (dtype and shape) describing exactly the bytes the member holds.
    """
    import zipfile

    path = Path(path)
    with open_regular(path, what="skops file") as f:
        try:
            archive = zipfile.ZipFile(f)
        except zipfile.BadZipFile as exc:
            raise ValueError(f"{path}: not a skops file ({exc})") from None
        with archive:
            infos = archive.infolist()
            total = sum(i.file_size for i in infos)
            if total > limit("skops"):
                raise ValueError(f"{path}: its members hold {total:,} bytes uncompressed, over the limit "
                                 f"of {limit('skops'):,}")
            for info in infos:
                ratio = info.file_size / max(info.compress_size, 1)
                if info.file_size > 16 << 20 and ratio > limit("compression_ratio"):
                    raise ValueError(f"{path}: member {info.filename} inflates {ratio:,.0f}-fold "
                                     f"({info.compress_size:,} to {info.file_size:,} bytes); refusing a zip bomb")
                if info.filename.endswith(".npy"):
                    _check_npy_member(archive, info, path)


def _check_npy_member(archive: Any, info: Any, path: Path) -> None:
    with archive.open(info) as member:
        try:
            version = np.lib.format.read_magic(member)
            read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                           (2, 0): np.lib.format.read_array_header_2_0}.get(version)
            if read_header is None:
                raise ValueError(f"numpy format version {version} is not supported")
            shape, _, dtype = read_header(member)  # the header only: nothing is allocated from it
        except (ValueError, OSError) as exc:
            raise ValueError(f"{path}: member {info.filename} is not a numpy array ({exc})") from None
        if dtype.hasobject:
            return  # object arrays are skops' own encoding; their types are checked before loading
        offset = member.tell()
    elements = 1
    for d in shape:
        elements *= d
    if offset + elements * dtype.itemsize != info.file_size:
        raise ValueError(f"{path}: member {info.filename} declares {elements:,} elements of {dtype} "
                         f"but holds {info.file_size - offset:,} bytes of data")


def skops_hash(path: str | Path) -> str:
    """Identity of a scikit-learn model saved with skops: its schema and arrays, not its bytes."""
    import zipfile

    check_skops(path)
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


DATASET_HASH_PREFIX = b"modelsci-dataset-v2\n"
_OTHER_ROLES = ("label", "text", "text_pair", "image", "boxes")


def dataset_columns(roles: Mapping[str, Any]) -> list[str]:
    """The columns a model reads, in the order fed: the features, then the other roles' columns."""
    columns = [*roles.get("features", []), *(roles[r] for r in _OTHER_ROLES if r in roles)]
    return list(dict.fromkeys(columns))


def dataset_id(table: pa.Table, roles: Mapping[str, Any], split: str | None, limit: int | None) -> str:
    """Identity of what the model reads: the role columns in the order fed, the roles, split and limit."""
    table = table.select(dataset_columns(roles)).replace_schema_metadata(None)
    table = table.cast(pa.schema([f.remove_metadata() for f in table.schema])).combine_chunks()
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    h = hashlib.sha256(DATASET_HASH_PREFIX)
    h.update(sink.getvalue())
    h.update(canonical_json({"limit": limit, "roles": dict(roles), "split": split}).encode())
    return "sha256:" + h.hexdigest()
