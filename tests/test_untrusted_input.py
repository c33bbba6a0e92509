"""Contributed files that try to hang, exhaust or mislead `modelsci submit`: each gets one line, nothing lands.

Every case runs the real command in a child process that reports its own peak memory, against
a catalogue that already holds a model, and checks: exit code 1, a one-line error naming the
problem, no traceback, within 60 s, peak memory under 1 GB above a clean submission's, and
every table and the artifacts folder exactly as before.
"""

from __future__ import annotations

import json
import os
import re
import resource
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

import modelsci
from tests.models import breast_cancer_skops, write_manifest

# The CLI in a child that prints its own peak resident memory on the way out.
_WRAPPER = ("import resource, sys\nfrom modelsci.cli import main\ntry:\n    main()\nfinally:\n"
            "    print(f'PEAK {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}', file=sys.stderr)\n")
GB = 1 << 30
TABLES = ("models", "datasets", "analyses", "runs", "findings", "finding_links", "artifacts", "commits")


def _safety_cap() -> None:
    # Only a generous cap so that a regression cannot take the machine down: torch alone maps
    # gigabytes of address space; the real check is the peak resident memory below.
    resource.setrlimit(resource.RLIMIT_AS, (16 * GB, 16 * GB))


def run_cli(*args: str, catalogue_dir: Path, timeout: float = 60) -> tuple[subprocess.CompletedProcess[str], int, float]:
    """The command's result, its peak resident memory in bytes, and its wall time."""
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", _WRAPPER, "--catalogue", str(catalogue_dir), *args],
                            capture_output=True, text=True, timeout=timeout, preexec_fn=_safety_cap,
                            env={**os.environ, "COLUMNS": "200"})
    elapsed = time.perf_counter() - start
    peak = re.search(r"PEAK (\d+)", result.stderr)
    return result, int(peak[1]) * 1024 if peak else 0, elapsed


def snapshot(cat_dir: Path) -> dict[str, object]:
    cat = modelsci.open(cat_dir, create=True)
    tables = {name: cat.sql(f"SELECT * FROM {name} ORDER BY ALL").to_pylist() for name in TABLES}
    return {"tables": tables, "artifacts": sorted(p.name for p in (cat_dir / "artifacts").iterdir())}


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A catalogue holding one clean submission, and that submission's peak memory."""
    root = tmp_path_factory.mktemp("untrusted")
    manifest = write_manifest(root / "clean.yaml", str(breast_cancer_skops(root / "clean")))
    result, peak, _ = run_cli("submit", str(manifest), catalogue_dir=root / "cat")
    assert result.returncode == 0, result.stderr
    return {"root": root, "cat": root / "cat", "peak": peak}


def assert_refused(base: dict[str, object], manifest: Path, message: str) -> None:
    """Refused by the command, in a child whose time and memory are measured."""
    cat_dir: Path = base["cat"]  # type: ignore[assignment]
    before = snapshot(cat_dir)
    result, peak, elapsed = run_cli("submit", str(manifest), catalogue_dir=cat_dir)
    errors = [line for line in result.stderr.splitlines() if not line.startswith("PEAK")]
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and message in "\n".join(errors), result.stderr
    assert errors[0].startswith("error: "), errors
    assert elapsed < 60
    assert peak - base["peak"] < GB, f"peak {peak / GB:.2f} GB against a clean submission's {base['peak'] / GB:.2f} GB"
    assert snapshot(cat_dir) == before


def assert_refused_here(base: dict[str, object], manifest: Path, message: str) -> None:
    """Refused by ``submit`` in this process: for inputs that are malformed rather than large."""
    from modelsci.planner import read_manifest, submit
    from modelsci.schemas.errors import ModelsciError

    cat_dir: Path = base["cat"]  # type: ignore[assignment]
    before = snapshot(cat_dir)
    with pytest.raises(ModelsciError) as refused:
        submit(modelsci.open(cat_dir, create=True), read_manifest(manifest), base_dir=manifest.parent)
    assert message in str(refused.value)
    assert snapshot(cat_dir) == before


def model_folder(base: dict[str, object], name: str) -> Path:
    folder = base["root"] / name  # type: ignore[operator]
    folder.mkdir()
    return folder


def manifest_for(base: dict[str, object], folder: Path | str, **kwargs: object) -> Path:
    return write_manifest(Path(str(base["root"])) / f"{Path(str(folder)).name or 'root'}.yaml", str(folder), **kwargs)


def test_dev_zero_as_a_skops_file(base) -> None:
    folder = model_folder(base, "zero_skops")
    (folder / "model.skops").symlink_to("/dev/zero")
    assert_refused(base, manifest_for(base, folder), "model.skops is a link to /dev/zero, outside")


def test_dev_zero_given_directly(base) -> None:
    assert_refused(base, manifest_for(base, "/dev/zero"), "/dev/zero is a character device")


def test_dev_zero_as_weights(base) -> None:
    folder = model_folder(base, "zero_weights")
    (folder / "modelsci.json").write_text(json.dumps({"architecture": "mlp", "args": {"in_features": 30}}))
    (folder / "model.safetensors").symlink_to("/dev/zero")
    assert_refused(base, manifest_for(base, folder), "model.safetensors is a link to /dev/zero, outside")


def test_dev_zero_as_the_model_card(base) -> None:
    folder = breast_cancer_skops(Path(str(base["root"])) / "zero_card")
    (folder / "README.md").symlink_to("/dev/zero")
    assert_refused(base, manifest_for(base, folder), "README.md is a link to /dev/zero, outside")


def test_a_card_linked_from_another_folder_is_refused(base) -> None:
    other = breast_cancer_skops(Path(str(base["root"])) / "other_card", card="---\nlicense: mit\n---\n")
    folder = breast_cancer_skops(Path(str(base["root"])) / "borrowed_card")
    (folder / "README.md").symlink_to(other / "README.md")
    assert_refused_here(base, manifest_for(base, folder), "README.md is a link to")


def test_a_fifo_as_the_model(base) -> None:
    folder = model_folder(base, "fifo_model")
    os.mkfifo(folder / "model.skops")
    assert_refused(base, manifest_for(base, folder), "model.skops is a FIFO; modelsci reads only regular files")


def test_a_fifo_as_the_dataset(base) -> None:
    fifo = Path(str(base["root"])) / "rows.csv"
    os.mkfifo(fifo)
    manifest = manifest_for(base, breast_cancer_skops(Path(str(base["root"])) / "fifo_data"),
                            dataset={"source": str(fifo), "columns": {"label": "target"}})
    assert_refused(base, manifest, "rows.csv is a FIFO; modelsci reads only regular files")


def test_a_skops_zip_bomb(base) -> None:
    folder = model_folder(base, "bomb")
    with zipfile.ZipFile(folder / "model.skops", "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.writestr("schema.json", json.dumps({"__class__": "LogisticRegression", "__module__": "sklearn"}))
        with archive.open("bomb.npy", "w", force_zip64=True) as member:
            zeros = bytes(64 << 20)
            for _ in range(24):  # 1.5 GiB of zeros, about 1.5 MB compressed
                member.write(zeros)
    assert (folder / "model.skops").stat().st_size < 3 << 20
    assert_refused(base, manifest_for(base, folder), "member bomb.npy inflates")


def test_a_yaml_alias_bomb_in_the_card(base) -> None:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 9) + "]" for i in range(8)]
    card = "---\n" + "\n".join(lines) + "\n---\n"
    assert len(card.encode()) < 600
    folder = breast_cancer_skops(Path(str(base["root"])) / "alias_card", card=card)
    assert_refused(base, manifest_for(base, folder), "aliases (*a) are not allowed")


def test_duplicate_keys_in_a_card_are_an_error(base) -> None:
    folder = breast_cancer_skops(Path(str(base["root"])) / "dup_card", card="---\nlicense: mit\nlicense: gpl-3.0\n---\n")
    assert_refused_here(base, manifest_for(base, folder), "duplicate key 'license'")


def _safetensors(path: Path, header: object, data: bytes) -> None:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)


def test_a_safetensors_header_claiming_a_trillion_elements(base) -> None:
    folder = model_folder(base, "trillion")
    (folder / "modelsci.json").write_text(json.dumps({"architecture": "mlp", "args": {"in_features": 30}}))
    _safetensors(folder / "model.safetensors",
                 {"w": {"dtype": "F32", "shape": [1_000_000, 1_000_000], "data_offsets": [0, 16]}}, bytes(16))
    assert_refused(base, manifest_for(base, folder),
                   "tensor 'w': shape [1000000, 1000000] of F32 is 1,000,000,000,000 elements, but its data is 16 bytes")


@pytest.mark.parametrize(("header", "message"), [
    ([1, 2, 3], "header is a JSON list, not an object"),
    ({"w": "F32"}, "tensor 'w': its header entry is not an object"),
    ({"w": {"dtype": "F99", "shape": [2], "data_offsets": [0, 8]}}, "tensor 'w': unknown dtype 'F99'"),
    ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 800]}}, "lie outside the file's 8 bytes of data"),
], ids=["list", "entry", "dtype", "offsets"])
def test_safetensors_headers_of_the_wrong_shape_get_one_line(base, header, message) -> None:
    folder = model_folder(base, f"header_{abs(hash(message)) % 10**8}")
    (folder / "modelsci.json").write_text(json.dumps({"architecture": "mlp", "args": {"in_features": 30}}))
    _safetensors(folder / "model.safetensors", header, bytes(8))
    assert_refused_here(base, manifest_for(base, folder), message)


def test_an_oversized_architecture_is_refused_before_it_is_built(base) -> None:
    import torch

    from modelsci.ingest.architectures import MLP, save_torch_model

    torch.manual_seed(0)
    folder = save_torch_model(MLP(30, [8], 2), "mlp", {"in_features": 30, "hidden": [8], "out_features": 2},
                              Path(str(base["root"])) / "huge_arch")
    (folder / "modelsci.json").write_text(json.dumps(
        {"architecture": "mlp", "args": {"in_features": 30, "hidden": [20000, 20000], "out_features": 2}}))
    assert_refused(base, manifest_for(base, folder), "the weights lack net.4.bias, net.4.weight")


def test_the_whole_filesystem_as_a_model_folder(base) -> None:
    assert_refused(base, manifest_for(base, "/"), "point it at the model's or dataset's own folder")


@pytest.mark.parametrize("source", ["hf://../etc", "hf://../dir", "hf://a/b/c", "hf://org/name@../x"])
def test_only_hub_ids_are_hub_sources(base, source) -> None:
    manifest = manifest_for(base, breast_cancer_skops(Path(str(base["root"])) / f"hub_{abs(hash(source)) % 10**8}"),
                            dataset={"source": source, "split": "test"})
    assert_refused_here(base, manifest, "a hub source is hf://org/name or hf://org/name@revision")


def test_a_manifest_that_is_not_utf8(base) -> None:
    manifest = Path(str(base["root"])) / "latin1.yaml"
    manifest.write_bytes("submitter: Zoë\n".encode("latin-1"))
    assert_refused_here(base, manifest, "latin1.yaml is not UTF-8 text")


def test_duplicate_keys_in_a_manifest_are_an_error(base) -> None:
    manifest = Path(str(base["root"])) / "dup.yaml"
    manifest.write_text("submitter: a\nsubmitter: b\nmodel: {source: x, task: tabular-classification}\n")
    assert_refused_here(base, manifest, "duplicate key 'submitter'")


def test_a_manifest_larger_than_its_limit(base) -> None:
    manifest = Path(str(base["root"])) / "big.yaml"
    manifest.write_text("# " + "x" * (2 << 20) + "\n")
    assert_refused(base, manifest, "over the limit of 1,048,576")
