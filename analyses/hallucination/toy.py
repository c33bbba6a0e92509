"""Toy data with known modes, where hallucinations have a ground truth.

A sample is in support within 3 std of a mode, and hallucinated when it lies between modes
farther than 4 std from every one; samples between 3 and 4 std count as neither.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from modelsci.analyses.hallucination.diffusion import Schedule
from modelsci.ingest.architectures import DenoiserMLP, save_torch_model

__all__ = ["ground_truth", "grid_modes", "train_denoiser"]


def grid_modes(size: int = 5) -> list[list[float]]:
    """The modes of a size x size grid of Gaussians in 2D (the larger setting)."""
    return [[float(i), float(j)] for i in range(size) for j in range(size)]


def ground_truth(samples: np.ndarray, modes: np.ndarray, std: float) -> tuple[np.ndarray, np.ndarray]:
    """(in support, hallucinated) masks of samples (n, dim) against modes (k, dim)."""
    samples = samples.reshape(len(samples), -1)
    modes = np.asarray(modes, dtype=np.float64).reshape(-1, samples.shape[1])
    distance = np.linalg.norm(samples[:, None, :] - modes[None, :, :], axis=2).min(axis=1)
    low, high = modes.min(axis=0), modes.max(axis=0)
    between = np.all((samples >= low) & (samples <= high), axis=1)
    return distance <= 3 * std, (distance > 4 * std) & between


def train_denoiser(modes: list[list[float]] | list[float], std: float, *, timesteps: int = 1000,
                   beta_start: float = 0.001, beta_end: float = 0.2, steps: int = 6000, batch: int = 2048,
                   hidden: int = 128, seed: int = 0, folder: Path | None = None, device: str = "cpu") -> DenoiserMLP:
    """Train a noise predictor on a mixture of equal Gaussians at ``modes`` (saved to ``folder``)."""
    modes_arr = np.asarray(modes, dtype=np.float64).reshape(len(modes), -1)
    dim = modes_arr.shape[1]
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    schedule = Schedule.linear(timesteps, beta_start, beta_end)
    abar = torch.tensor(schedule.alphas_cumprod, dtype=torch.float32)
    model = DenoiserMLP(dim=dim, hidden=hidden, timesteps=timesteps).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    lr = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    centres = torch.tensor(modes_arr, dtype=torch.float32)
    # With a steep schedule most timesteps are pure noise (ᾱ ~ 0); half of each batch is drawn
    # from the informative early steps. The optimum per timestep, the true ε-predictor, is unchanged.
    informative = max(int(np.searchsorted(-schedule.alphas_cumprod, -1e-3)), 10)
    for _ in range(steps):
        which = torch.randint(0, len(centres), (batch,), generator=generator)
        x0 = centres[which] + std * torch.randn(batch, dim, generator=generator)
        t = torch.cat([torch.randint(0, timesteps, (batch // 2,), generator=generator),
                       torch.randint(0, informative, (batch - batch // 2,), generator=generator)])
        noise = torch.randn(batch, dim, generator=generator)
        a = abar[t].reshape(-1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        loss = torch.nn.functional.mse_loss(model(xt.to(device), t.to(device)), noise.to(device))
        opt.zero_grad()
        loss.backward()
        opt.step()
        lr.step()
    model = model.cpu().eval()
    if folder is not None:
        args: dict[str, Any] = {"dim": dim, "hidden": hidden, "timesteps": timesteps}
        save_torch_model(model, "denoiser_mlp", args, folder, extra={
            "schedule": {"timesteps": timesteps, "beta_start": beta_start, "beta_end": beta_end},
            "data": {"modes": modes_arr.tolist(), "std": std}},
            card=f"---\nlicense: apache-2.0\ntags: [modelsci-demo, diffusion, toy]\n---\nA noise predictor "
                 f"trained on a mixture of {len(modes_arr)} Gaussians (std {std}) in {dim}D.\n")
    return model
