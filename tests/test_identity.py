"""Content identities: tensor hash across files and shards, dataset hash."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from safetensors.numpy import save_file

from modelsci.schemas.identity import (
    dataset_id,
    safetensors_records,
    tensor_hash_of_arrays,
    tensor_hash_of_files,
)

WEIGHTS = {
    "encoder.weight": np.arange(12, dtype=np.float32).reshape(3, 4) / 7,
    "encoder.bias": np.array([1, -2, 3], dtype=np.int64),
    "head.weight": np.linspace(0, 1, 5, dtype=np.float16),
}


def independent_hash(tensors: dict[str, np.ndarray]) -> str:
    """The encoding as the module docstring writes it, with hashlib alone."""
    h = hashlib.sha256(b"modelsci-tensors-v1\n")
    dtypes = {"float32": "F32", "int64": "I64", "float16": "F16"}
    for name in sorted(tensors):
        arr = tensors[name]
        header = json.dumps({"dtype": dtypes[arr.dtype.name], "name": name, "shape": list(arr.shape)},
                            sort_keys=True, separators=(",", ":")).encode()
        data = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
        h.update(len(header).to_bytes(8, "little"))
        h.update(header)
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return "sha256:" + h.hexdigest()


def test_two_tensor_example_matches_independent_hashlib(tmp_path: Path) -> None:
    two = {"a": np.array([[1.0, 2.0]], dtype=np.float32), "b": np.array([7, 8, 9], dtype=np.int64)}
    save_file(two, tmp_path / "model.safetensors")
    expected = independent_hash(two)
    assert tensor_hash_of_files([tmp_path / "model.safetensors"]) == expected
    assert tensor_hash_of_arrays(two) == expected


def test_one_file_and_two_shards_give_one_id(tmp_path: Path) -> None:
    save_file(WEIGHTS, tmp_path / "model.safetensors")
    names = sorted(WEIGHTS)
    save_file({k: WEIGHTS[k] for k in names[:1]}, tmp_path / "model-00001-of-00002.safetensors")
    save_file({k: WEIGHTS[k] for k in names[1:]}, tmp_path / "model-00002-of-00002.safetensors",
              metadata={"format": "pt"})
    one = tensor_hash_of_files([tmp_path / "model.safetensors"])
    shards = tensor_hash_of_files(sorted(tmp_path.glob("model-0000*.safetensors")))
    assert one == shards == independent_hash(WEIGHTS)


def test_renamed_and_resaved_file_keeps_its_id(tmp_path: Path) -> None:
    save_file(WEIGHTS, tmp_path / "a.safetensors")
    save_file(dict(reversed(list(WEIGHTS.items()))), tmp_path / "renamed.safetensors",
              metadata={"note": "saved again"})
    assert tensor_hash_of_files([tmp_path / "a.safetensors"]) == tensor_hash_of_files([tmp_path / "renamed.safetensors"])


def test_one_changed_element_changes_the_id() -> None:
    changed = {k: v.copy() for k, v in WEIGHTS.items()}
    changed["encoder.weight"][2, 3] += 1e-3
    assert tensor_hash_of_arrays(changed) != tensor_hash_of_arrays(WEIGHTS)


def test_torch_tensors_hash_like_their_numpy_twins() -> None:
    as_torch = {k: torch.from_numpy(v) for k, v in WEIGHTS.items()}
    assert tensor_hash_of_arrays(as_torch) == tensor_hash_of_arrays(WEIGHTS)


def test_bf16_round_trips_through_safetensors(tmp_path: Path) -> None:
    from safetensors.torch import save_file as save_torch

    tensors = {"w": torch.linspace(-1, 1, 6, dtype=torch.bfloat16).reshape(2, 3)}
    save_torch(tensors, tmp_path / "bf16.safetensors")
    [(name, dtype, shape, data)] = list(safetensors_records(tmp_path / "bf16.safetensors"))
    assert (name, dtype, shape) == ("w", "BF16", [2, 3])
    assert tensor_hash_of_files([tmp_path / "bf16.safetensors"]) == tensor_hash_of_arrays(tensors)


def test_duplicate_tensor_across_shards_is_an_error(tmp_path: Path) -> None:
    save_file({"w": np.zeros(2, np.float32)}, tmp_path / "s1.safetensors")
    save_file({"w": np.ones(2, np.float32)}, tmp_path / "s2.safetensors")
    with pytest.raises(ValueError, match="'w' appears twice"):
        tensor_hash_of_files([tmp_path / "s1.safetensors", tmp_path / "s2.safetensors"])


@pytest.mark.parametrize("content", [b"", b"\x00" * 3, (10**9).to_bytes(8, "little") + b"{}"])
def test_truncated_or_foreign_files_are_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="not a safetensors file"):
        tensor_hash_of_files([path])


def test_dataset_id_covers_what_the_model_reads_and_nothing_else() -> None:
    table = pa.table({"a": [1.0, 2.0, 3.0], "b": [4.0, 5.0, 6.0], "label": [0, 1, 0]})
    roles = {"features": ["a", "b"], "label": "label"}
    base = dataset_id(table, roles, "test", None)
    # file order, chunking and columns the model does not read leave it unchanged
    shuffled = pa.concat_tables([table.slice(0, 1), table.slice(1)]).select(["label", "b", "a"])
    assert dataset_id(shuffled.append_column("note", pa.array(["x", "y", "z"])), roles, "test", None) == base
    # what is fed, in which order, with which roles, which rows: each changes it
    assert dataset_id(table, {"features": ["b", "a"], "label": "label"}, "test", None) != base
    assert dataset_id(table, {"features": ["a"], "label": "label"}, "test", None) != base
    assert dataset_id(table, {"features": ["a", "b"], "text": "label"}, "test", None) != base
    assert dataset_id(table, roles, "train", None) != base
    assert dataset_id(table, roles, "test", 2) != base
    assert dataset_id(table.slice(0, 2), roles, "test", None) != base


def test_dataset_id_follows_its_documented_encoding() -> None:
    import hashlib
    import io
    import json

    table = pa.table({"z": [1.5, 2.5], "a": [3.0, 4.0], "y": [1, 0], "unused": ["p", "q"]})
    roles = {"features": ["z", "a"], "label": "y"}
    sink = io.BytesIO()
    fed = pa.table({"z": [1.5, 2.5], "a": [3.0, 4.0], "y": [1, 0]})
    with pa.ipc.new_stream(sink, fed.schema) as writer:
        writer.write_table(fed)
    h = hashlib.sha256(b"modelsci-dataset-v2\n" + sink.getvalue())
    h.update(json.dumps({"limit": 5, "roles": roles, "split": None}, sort_keys=True, separators=(",", ":")).encode())
    assert dataset_id(table, roles, None, 5) == "sha256:" + h.hexdigest()
