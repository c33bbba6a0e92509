"""Hallucination filters: LID on a known manifold, trajectory variance on a trained toy, diffusers end to end."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file
from sklearn.metrics import roc_auc_score

from modelsci import catalogue
from modelsci.analyses.hallucination.diffusion import DiffusionModel, Schedule, diffusion_model, sample
from modelsci.analyses.hallucination.lid import lid_dsm, lid_flipd
from modelsci.analyses.hallucination.toy import ground_truth
from modelsci.ingest.architectures import CONFIG_NAME, DenoiserMLP
from tests.conftest import modelsci
from tests.models import write_manifest

TOY_DENOISERS = {0: Path(__file__).parents[1] / "examples" / "demo" / "toy_mixture_1d",  # the demo's, shipped
                 1: Path(__file__).parent / "data" / "toy-denoisers" / "seed1"}


def committed_denoiser(seed: int) -> DenoiserMLP:
    """The toy denoiser `train_denoiser` made with ``seed``, read from its committed weights."""
    folder = TOY_DENOISERS[seed]
    module = DenoiserMLP(**json.loads((folder / CONFIG_NAME).read_text())["args"])
    module.load_state_dict(load_file(str(folder / "model.safetensors")))
    return module.eval()


class LinearGaussianPredictor(torch.nn.Module):
    """The exact noise predictor for data x = A z, z ~ N(0, s² I_d), A orthonormal (D x d)."""

    def __init__(self, basis: torch.Tensor, scale: float, schedule: Schedule) -> None:
        super().__init__()
        self.projection = basis @ basis.T
        self.scale = scale
        self.abar = torch.tensor(schedule.alphas_cumprod)
        self.unused = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        abar = self.abar[t].reshape(-1, 1)
        along = x @ self.projection
        return torch.sqrt(1 - abar) * (along / (abar * self.scale ** 2 + 1 - abar) + (x - along) / (1 - abar))


@pytest.mark.parametrize("ambient, dim", [(10, 3), (8, 1), (6, 5)])
def test_both_lid_estimators_recover_the_dimension_of_a_linear_manifold(ambient: int, dim: int) -> None:
    generator = torch.Generator().manual_seed(0)
    basis, _ = torch.linalg.qr(torch.randn(ambient, dim, dtype=torch.float64, generator=generator))
    schedule = Schedule.linear(1000, 1e-4, 0.02)
    model = DiffusionModel(LinearGaussianPredictor(basis, 1.0, schedule), schedule, (ambient,), "cpu", {})
    x = torch.randn(300, dim, dtype=torch.float64, generator=generator) @ basis.T
    for t in (0, 5):
        assert abs(lid_dsm(model, x, t, 8, generator).mean() - dim) < 0.5
        assert abs(lid_flipd(model, x, t, 8, generator).mean() - dim) < 0.5


def test_trajectory_variance_finds_mode_interpolations_on_the_1d_toy(tmp_path: Path) -> None:
    """Seeds 0 and 1: 5,000 samples from each of two trained denoisers (committed weights, made by
    tests/data/toy-denoisers/make.py and the demo with `train_denoiser`); then the quench, through the CLI, on seed 0's."""
    modes = np.array([[1.0], [2.0], [3.0]])
    rates, aurocs, removed = [], [], []
    shutil.copytree(TOY_DENOISERS[0], tmp_path / "toy")
    for seed in (0, 1):
        denoiser = committed_denoiser(seed)
        model = DiffusionModel(denoiser, Schedule.linear(1000, 0.001, 0.2), (1,), "cpu", {})
        samples, history = sample(model, 5000, torch.Generator().manual_seed(seed), keep_last=10)
        assert np.all(np.isfinite(samples)) and np.all(np.isfinite(history))
        scores = history.reshape(5000, 10, -1).var(axis=1).mean(axis=1)
        in_support, hallucinated = ground_truth(samples, modes, 0.05)
        judged = in_support | hallucinated
        rates.append(hallucinated.mean())
        aurocs.append(roc_auc_score(hallucinated[judged], scores[judged]))
        removed.append((scores[hallucinated] > np.quantile(scores[in_support], 0.95)).mean())
    assert all(0.001 <= r <= 0.05 for r in rates), rates
    assert np.mean(aurocs) >= 0.9, aurocs
    assert np.mean(removed) >= 0.75, removed

    manifest = write_manifest(tmp_path / "m.yaml", str(tmp_path / "toy"), task="unconditional-image-generation",
                              dataset=False, analyses=[{"name": "hallucination.quench", "params": {"n_samples": 3000}},
                                                       {"name": "hallucination.trajectory_variance",
                                                        "params": {"n_samples": 3000}}])
    modelsci("submit", str(manifest), "--run", catalogue_dir=tmp_path / "cat", timeout=300)

    cat = catalogue.open(tmp_path / "cat", create=True)
    figures = json.loads(cat.sql(
        "SELECT metrics FROM findings_current WHERE kind = 'hallucination_rate_change'").to_pylist()[0]["metrics"])
    assert figures["before"] > 0 and figures["after"] <= figures["before"] / 2, figures

    # The headline is the true rate, recomputed here from the samples: outside the three modes
    # (farther than 4 std from each) and between them; the filter's own share is flagged_rate.
    def stored(kind: str) -> tuple[dict, dict[str, pd.DataFrame]]:
        row = cat.sql(f"SELECT id, value, ci_low, ci_high FROM findings_current WHERE kind = '{kind}'").to_pylist()[0]
        files = cat.sql(f"SELECT name, path FROM artifacts WHERE finding_id = '{row['id']}'").to_pylist()
        return row, {f["name"]: pq.read_table(cat.root / f["path"]).to_pandas() for f in files}

    rate, artifacts = stored("hallucination_rate")
    x = artifacts["samples"]["x0"].to_numpy()
    assert len(x) == 3000
    outside = (np.abs(x[:, None] - modes.reshape(1, 3)).min(axis=1) > 4 * 0.05) & (x >= 1) & (x <= 3)
    assert 0 < outside.sum() < 150
    assert rate["value"] == outside.mean()
    assert rate["ci_low"] < outside.mean() < rate["ci_high"]
    flagged, artifacts = stored("flagged_rate")
    scores = artifacts["scores"]
    in_support = np.abs(scores["x0"].to_numpy()[:, None] - modes.reshape(1, 3)).min(axis=1) <= 3 * 0.05
    # the threshold keeps 95% of in-support samples, so about 5% of them, and of all samples, are flagged
    assert abs(scores["flagged"][in_support].mean() - 0.05) <= 1 / in_support.sum()
    assert abs(flagged["value"] - 0.05) < 0.015 and flagged["value"] > 5 * rate["value"]


def _tiny_ddpm(prediction_type: str, variance_type: str = "fixed_small", timesteps: int = 1000):  # noqa: ANN202
    """A float64 tiny UNet and a DDPMScheduler whose ᾱ is the float64 cumprod modelsci computes."""
    from diffusers import DDPMScheduler, UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1,
                       block_out_channels=(8, 16), down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4).double().eval()
    scheduler = DDPMScheduler(num_train_timesteps=timesteps, prediction_type=prediction_type,
                              variance_type=variance_type, clip_sample=False)
    scheduler.alphas_cumprod = torch.cumprod(1 - scheduler.betas.double(), 0)  # diffusers keeps float32
    return unet, scheduler


def _as_loaded(unet, scheduler):  # noqa: ANN001, ANN202
    """What diffusion_model reads of a loaded pipeline (no folder, so no modelsci note)."""
    from types import SimpleNamespace

    from diffusers import DDPMPipeline

    return SimpleNamespace(handle=SimpleNamespace(framework="diffusers", path=Path("/nonexistent")),
                           model=DDPMPipeline(unet=unet, scheduler=scheduler), device="cpu")


@pytest.mark.parametrize("prediction_type, variance_type", [
    ("v_prediction", "fixed_small"), ("sample", "fixed_large"), ("sample", "fixed_small_log"), ("epsilon", "fixed_small")])
def test_one_reverse_step_equals_the_diffusers_ddpm_step(prediction_type: str, variance_type: str) -> None:
    from modelsci.analyses.hallucination.diffusion import reverse_step

    unet, scheduler = _tiny_ddpm(prediction_type, variance_type)
    model = diffusion_model(_as_loaded(unet, scheduler))
    x = torch.randn((2, 1, 8, 8), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for t in (999, 500, 3, 0):
        expected = scheduler.step(unet(x, t).sample, t, x, generator=torch.Generator().manual_seed(2))
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
        prev, x0 = reverse_step(model, x, t, noise)
        torch.testing.assert_close(x0, expected.pred_original_sample, rtol=0, atol=1e-6)
        torch.testing.assert_close(prev, expected.prev_sample, rtol=0, atol=1e-6)


def test_sampling_a_v_prediction_model_follows_the_diffusers_scheduler() -> None:
    """Three steps end to end: samples and every x̂₀ equal a DDPMScheduler loop on the same noise."""
    unet, scheduler = _tiny_ddpm("v_prediction", timesteps=3)
    samples, history = sample(diffusion_model(_as_loaded(unet, scheduler)), 2, torch.Generator().manual_seed(3),
                              keep_last=3)
    generator = torch.Generator().manual_seed(3)
    x = torch.randn((2, 1, 8, 8), generator=generator, dtype=torch.float64)
    originals = []
    for t in (2, 1, 0):
        x, x0 = scheduler.step(unet(x, t).sample, t, x, generator=generator, return_dict=False)
        originals.append(x0)
    np.testing.assert_allclose(samples, x.detach().numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(history, torch.stack(originals[::-1], dim=1).detach().numpy(), rtol=0, atol=1e-6)
    assert np.abs(history).max() > 0.1  # not a vacuous match


@pytest.mark.parametrize("spacing", ["leading", "linspace", "trailing"])
def test_strided_ddpm_sampling_follows_the_diffusers_scheduler_for_each_spacing(spacing: str) -> None:
    """7 of 100 timesteps (7 does not divide 100): each step lands where DDPMScheduler's does."""
    from types import SimpleNamespace

    unet, scheduler = _tiny_ddpm("epsilon", timesteps=100)
    scheduler.register_to_config(timestep_spacing=spacing)
    model = diffusion_model(_as_loaded(unet, scheduler), SimpleNamespace(num_inference_steps=7))
    samples, _ = sample(model, 2, torch.Generator().manual_seed(4), keep_last=2)
    generator = torch.Generator().manual_seed(4)
    x = torch.randn((2, 1, 8, 8), generator=generator, dtype=torch.float64)
    scheduler.set_timesteps(7)
    assert [int(t) for t in scheduler.timesteps] == list(model.timesteps)
    for t in scheduler.timesteps:
        x = scheduler.step(unet(x, t).sample, t, x, generator=generator).prev_sample
    np.testing.assert_allclose(samples, x.detach().numpy(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("variance_type", ["learned", "learned_range", "unheard_of"])
def test_a_learned_or_unknown_variance_is_refused_at_load(variance_type: str) -> None:
    unet, scheduler = _tiny_ddpm("epsilon", timesteps=10)
    scheduler.register_to_config(variance_type=variance_type)
    with pytest.raises(ValueError, match=variance_type):
        diffusion_model(_as_loaded(unet, scheduler))


def test_shape_counting_is_the_ground_truth_of_the_shapes_setting() -> None:
    from modelsci.analyses.hallucination.shapes import count_shapes, shape_images, shapes_truth

    images = shape_images(20, 32, np.random.default_rng(0))
    assert (count_shapes(images) == 1).all()
    doubled = -np.ones((1, 1, 32, 32), dtype=np.float32)
    doubled[0, 0, 2:8, 2:8] = 1.0
    doubled[0, 0, 20:28, 20:28] = 1.0  # two squares: a hallucination
    assert count_shapes(doubled)[0] == 2
    in_support, hallucinated = shapes_truth(np.concatenate([images[:3], doubled]))
    assert in_support.tolist() == [True, True, True, False] and hallucinated.tolist() == [False, False, False, True]
