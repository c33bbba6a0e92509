"""``modelsci demo``: the main job on the embedded default.

Until the analysis suite lands, the demo registers what exists: a real dataset (scikit-learn's
bundled breast_cancer, test split) and a real model instance (a logistic regression the demo
trains deterministically in a second, identified by its tensor hash), lands them in one
commit, exports the catalogue and answers three example queries. Running it twice reuses
what is there: the ids are content hashes, so the second run commits nothing.
"""

from __future__ import annotations

import pyarrow as pa
from rich.console import Console

from catalogue.store import Catalogue
from catalogue.transfer import export
from schemas.bundle import ResultBundle
from schemas.entities import Dataset, ModelInstance
from schemas.identity import dataset_id, tensor_hash_of_arrays

EXAMPLE_QUERIES = [
    "SELECT count(*) AS models FROM models",
    "SELECT source_uri, split, rows FROM datasets",
    "SELECT seq, author, message, n_models, n_datasets FROM commits ORDER BY seq",
]


def run_demo(cat: Catalogue, console: Console) -> None:
    """Build the default catalogue, export it, and print where things are with example answers."""
    with console.status("training the demo model on breast_cancer ..."):
        bundle = demo_bundle()
    commit = cat.commit(bundle, author="modelsci demo", message="demo: register bundled model and dataset")
    console.print("committed" if commit else "already in the catalogue: nothing new to commit",
                  f"({commit.id})" if commit else "", highlight=False)
    with console.status("exporting ..."):
        export(cat, cat.root / "export")
    console.print(f"catalogue: {cat.root}", highlight=False)
    console.print(f"export (Parquet + manifest): {cat.root / 'export'}", highlight=False)
    console.print("site: not built yet (the site issue adds `modelsci site build`)", highlight=False)
    for query in EXAMPLE_QUERIES:
        console.print(f"\n$ modelsci sql \"{query}\"", style="bold", highlight=False)
        for row in cat.sql(query).to_pylist():
            console.print("  " + ", ".join(f"{k}={v}" for k, v in row.items()), highlight=False)


def demo_bundle() -> ResultBundle:
    """The breast_cancer test split and a logistic regression trained on the train split."""
    import torch
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    data = load_breast_cancer(as_frame=True)
    x_train, x_test, y_train, y_test = train_test_split(
        data.data, data.target, test_size=0.25, random_state=0, stratify=data.target)
    test = pa.Table.from_pandas(x_test.assign(target=y_test), preserve_index=False)
    dataset = Dataset(
        id=dataset_id(test, "test", None), source_uri="sklearn://breast_cancer", split="test",
        rows=test.num_rows, license="CC BY 4.0 (UCI)",
        features={"columns": {f.name: str(f.type) for f in test.schema}, "label": "target",
                  "split": {"test_size": 0.25, "random_state": 0, "stratify": True}},
    )

    torch.manual_seed(0)
    x = torch.tensor(x_train.to_numpy(), dtype=torch.float64)
    x = (x - x.mean(0)) / x.std(0)
    y = torch.tensor(y_train.to_numpy(), dtype=torch.float64)
    model = torch.nn.Linear(x.shape[1], 1, dtype=torch.float64)
    opt = torch.optim.LBFGS(model.parameters(), max_iter=100)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x).squeeze(1), y)
        loss = loss + 1e-3 * model.weight.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    weights = {k: v.to(torch.float32) for k, v in model.state_dict().items()}
    instance = ModelInstance(
        id=tensor_hash_of_arrays(weights), source_uri="modelsci-demo://breast_cancer/logistic-regression",
        family="logistic_regression", architecture="torch.nn.Linear", task="tabular-classification",
        modality="tabular", framework="torch", parameter_count=sum(v.numel() for v in weights.values()),
        license="Apache-2.0", tags=["demo"], card={"trained_on": "sklearn://breast_cancer (train split)"},
    )
    return ResultBundle(models=[instance], datasets=[dataset])
