"""Model and dataset adapters: hub cache, frameworks, identities, refusals."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from modelsci.ingest.datasets import DatasetError, resolve_dataset
from modelsci.ingest.hub import HubError
from modelsci.ingest.loading import ModelError, load_model
from modelsci.ingest.models import resolve_model
from modelsci.schemas.identity import tensor_hash_of_files
from modelsci.schemas.manifest import DatasetSpec, ModelSpec
from tests.models import (
    MINILM_SHA,
    breast_cancer_skops,
    hf_cache_with_minilm,
    minilm_folder,
    tiny_bert_classifier,
    tiny_unet,
)


@pytest.fixture
def offline_hf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "hf"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return home


def test_minilm_from_the_hub_cache_is_identified_by_its_shipped_weights(offline_hf: Path) -> None:
    hf_cache_with_minilm(offline_hf)
    handle = resolve_model(ModelSpec(source="hf://sentence-transformers/all-MiniLM-L6-v2",
                                     revision="main", task="sentence-similarity"))
    assert handle.id == tensor_hash_of_files([minilm_folder() / "model.safetensors"])
    assert handle.instance.revision == MINILM_SHA
    assert handle.framework == "sentence-transformers"
    assert handle.instance.source_uri == "hf://sentence-transformers/all-MiniLM-L6-v2"
    assert handle.instance.license == "apache-2.0"  # from the model card's front matter
    assert handle.instance.pipeline_tag == "sentence-similarity"
    from safetensors import safe_open

    with safe_open(str(minilm_folder() / "model.safetensors"), "np") as f:
        assert handle.instance.parameter_count == sum(f.get_tensor(k).size for k in f.keys())


def test_hub_model_missing_from_the_cache_offline_is_a_clear_error(offline_hf: Path) -> None:
    with pytest.raises(HubError, match="not found in the local cache"):
        resolve_model(ModelSpec(source="hf://nobody/nothing", task="text-classification"))


def test_transformers_classifier_same_weights_from_two_places_and_shards_is_one_instance(tmp_path: Path) -> None:
    one = tiny_bert_classifier(tmp_path / "one")
    copy = shutil.copytree(one, tmp_path / "elsewhere" / "copy")
    (copy / "README.md").write_text("---\nlicense: mit\n---\nEdited card.\n")
    sharded = tiny_bert_classifier(tmp_path / "sharded", shards=3)
    assert len(list(sharded.glob("*.safetensors"))) == 3
    other = tiny_bert_classifier(tmp_path / "other", seed=1)
    ids = [resolve_model(ModelSpec(source=str(p), task="text-classification")).id
           for p in (one, copy, sharded, other)]
    assert ids[0] == ids[1] == ids[2] != ids[3]
    handle = resolve_model(ModelSpec(source=str(copy), task="text-classification"))
    assert (handle.framework, handle.instance.license) == ("transformers", "mit")
    loaded = load_model(handle, "cpu")
    assert type(loaded.model).__name__ == "BertForSequenceClassification"


def test_diffusers_unet_is_ingested_and_loads(tmp_path: Path) -> None:
    folder = tiny_unet(tmp_path / "unet")
    handle = resolve_model(ModelSpec(source=str(folder), task="unconditional-image-generation"))
    assert handle.framework == "diffusers"
    assert handle.instance.architecture == "UNet2DModel"
    assert handle.id == tensor_hash_of_files(folder.glob("*.safetensors"))
    unet = load_model(handle, "cpu").model
    assert sum(p.numel() for p in unet.parameters()) == handle.instance.parameter_count


def test_skops_model_same_weights_saved_twice_in_two_places_is_one_instance(tmp_path: Path) -> None:
    a = breast_cancer_skops(tmp_path / "a")
    b = breast_cancer_skops(tmp_path / "b", card="---\nbase_model: org/base\ntags: [tabular]\n---\n")
    ha = resolve_model(ModelSpec(source=str(a), task="tabular-classification"))
    hb = resolve_model(ModelSpec(source=str(b / "model.skops"), task="tabular-classification"))
    assert ha.id == hb.id
    assert (ha.framework, ha.instance.architecture) == ("sklearn", "Pipeline")
    # scaler mean, var, scale (30 each) + n_samples_seen, coef (30), intercept, classes (2), n_iter
    assert ha.instance.parameter_count >= 4 * 30 + 1
    assert (hb.instance.base_model, hb.instance.tags) == ("org/base", ["tabular"])


def test_skops_types_outside_the_trusted_set_are_refused_by_name_before_registering(tmp_path: Path) -> None:
    import skops.io as sio
    from sklearn.preprocessing import FunctionTransformer

    folder = tmp_path / "fn"
    folder.mkdir()
    sio.dump(FunctionTransformer(func=os.system), folder / "model.skops")  # never called: refused
    with pytest.raises(ModelError, match=r"refusing types that skops does not trust: .*posix.system"):
        resolve_model(ModelSpec(source=str(folder), task="tabular-regression"))


@pytest.mark.parametrize("name", ["pytorch_model.bin", "model.pt", "weights.ckpt", "model.pkl"])
def test_pickle_weights_are_refused(tmp_path: Path, name: str) -> None:
    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "bert"}')
    (folder / name).write_bytes(b"\x80\x04not really")
    with pytest.raises(ModelError, match="refusing pickle-based weights .*Convert the weights to safetensors"):
        resolve_model(ModelSpec(source=str(folder), task="text-classification"))
    with pytest.raises(ModelError, match="refusing pickle-based weights"):
        resolve_model(ModelSpec(source=str(folder / name), task="text-classification"))


def test_a_repository_needing_its_own_code_is_refused(tmp_path: Path) -> None:
    folder = tiny_bert_classifier(tmp_path / "remote")
    (folder / "modeling_custom.py").write_text("raise SystemExit('this must never run')\n")
    with pytest.raises(ModelError, match="needs its own code .*modeling_custom.py.*trust_remote_code"):
        resolve_model(ModelSpec(source=str(folder), task="text-classification"))


def test_sklearn_dataset_split_is_seeded_and_recorded() -> None:
    spec = DatasetSpec(source="sklearn://breast_cancer", split="test")
    a, b = resolve_dataset(spec, "tabular-classification"), resolve_dataset(spec, "tabular-classification")
    assert a.id == b.id and a.entity.rows == 143
    assert a.entity.features["split"] == {"test_size": 0.25, "random_state": 0, "stratify": True}
    assert a.roles["label"] == "target" and len(a.feature_names) == 30
    other = resolve_dataset(DatasetSpec(source="sklearn://breast_cancer", split="test", split_seed=1),
                            "tabular-classification")
    assert other.id != a.id
    limited = resolve_dataset(DatasetSpec(source="sklearn://breast_cancer", limit=10), "tabular-classification")
    assert limited.entity.rows == 10 and limited.id != a.id


def test_dataset_files_and_save_to_disk_folders(tmp_path: Path) -> None:
    import datasets

    ds = datasets.Dataset.from_dict({"text": ["good", "bad movie"], "label": [1, 0]})
    datasets.DatasetDict({"test": ds}).save_to_disk(tmp_path / "saved")
    ds.to_csv(tmp_path / "rows.csv")
    ds.to_parquet(tmp_path / "rows.parquet")
    for source in ("saved", "rows.csv", "rows.parquet"):
        handle = resolve_dataset(DatasetSpec(source=str(tmp_path / source)), "text-classification")
        assert handle.texts() == ["good", "bad movie"]
        assert handle.labels().tolist() == [1, 0]


def test_a_dataset_column_that_does_not_exist_is_named() -> None:
    spec = DatasetSpec(source="sklearn://iris", columns={"label": "species"})
    with pytest.raises(DatasetError, match=r"dataset.columns.label: no column 'species' .*target"):
        resolve_dataset(spec, "tabular-classification")


def _hub_dataset(cache: Path, repo: str, commits: dict[str, list[float]], main: str) -> None:
    """A dataset repository in the hub cache, as huggingface_hub lays it out: one snapshot per commit."""
    folder = cache / ("datasets--" + repo.replace("/", "--"))
    for sha, xs in commits.items():
        data = folder / "snapshots" / sha / "data"
        data.mkdir(parents=True)
        pq.write_table(pa.table({"x": xs, "label": [i % 2 for i in range(len(xs))]}),
                       data / "test-00000-of-00001.parquet")
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(main)


def test_a_hub_dataset_is_read_at_and_recorded_with_the_commit_its_revision_resolves_to(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    old, new = "1" * 40, "2" * 40
    _hub_dataset(tmp_path / "hub", "acme/rows", {old: [1.0, 2.0, 3.0], new: [4.0, 5.0, 6.0, 7.0]}, main=new)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets-cache")
    latest = resolve_dataset(DatasetSpec(source="hf://acme/rows", columns={"features": ["x"]}), "tabular-regression")
    assert latest.entity.revision == new and latest.spec["revision"] == new
    assert latest.features()[:, 0].tolist() == [4.0, 5.0, 6.0, 7.0]
    pinned = resolve_dataset(DatasetSpec(source="hf://acme/rows", revision=old, columns={"features": ["x"]}),
                             "tabular-regression")
    assert pinned.entity.revision == old and pinned.features()[:, 0].tolist() == [1.0, 2.0, 3.0]
    assert pinned.id != latest.id
    # main moves on: the recorded spec still reads the rows first read
    (tmp_path / "hub" / "datasets--acme--rows" / "refs" / "main").write_text(old)
    again = resolve_dataset(DatasetSpec.model_validate(latest.spec), "tabular-regression")
    assert again.id == latest.id and again.entity.revision == new
