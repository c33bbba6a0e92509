"""Local intrinsic dimension (LID) of the model-induced manifold at a sample, two estimators.

With x_t = sqrt(ᾱ_t) x + sqrt(1 - ᾱ_t) ε at a small time t* (σ = sqrt(1 - ᾱ_t*)):

- **DSM** (denoising score matching): the mean over k noise draws of ||ε - ε̂(x_t, t*)||².
  Near a d-dimensional manifold the predictor recovers the normal components of the noise
  and not the d tangent ones, so the error is about d.
- **FLIPD**: D + σ² (tr ∇s(x, t*) + ||s(x, t*)||²) with the score s = -ε̂ / σ evaluated at
  the sample itself, i.e. D - σ tr ∂ε̂/∂x + ||ε̂||². The trace is estimated with Hutchinson's
  estimator (Rademacher probes, vector-Jacobian products).

For data on a d-dimensional linear subspace with the exact noise predictor, both equal d up
to O(σ²); high values flag samples off the data's manifold.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field

from modelsci.analyses.hallucination.diffusion import DiffusionModel
from modelsci.analyses.hallucination.filters import FilterParams

__all__ = ["LidParams", "lid_dsm", "lid_flipd", "lid_scores"]


def _sigma(model: DiffusionModel, t: int) -> tuple[float, float]:
    abar = float(model.schedule.alphas_cumprod[t])
    return float(np.sqrt(abar)), float(np.sqrt(1.0 - abar))


def lid_dsm(model: DiffusionModel, x: torch.Tensor, t: int, draws: int, generator: torch.Generator,
            rows: np.ndarray | None = None) -> np.ndarray:
    """Per sample: mean over ``draws`` of ||ε - ε̂(x_t, t)||² (summed over dimensions); ``rows``: the samples' indices."""
    alpha, sigma = _sigma(model, t)
    x = x.to(torch.float64)
    total = torch.zeros(x.shape[0], dtype=torch.float64)
    for _ in range(draws):
        eps = torch.randn(x.shape, generator=generator, dtype=torch.float64)
        pred = model.eps(alpha * x.to(model.device) + sigma * eps.to(model.device), t, rows).cpu()
        total += (eps - pred).reshape(x.shape[0], -1).pow(2).sum(1)
    return (total / draws).numpy()


def lid_flipd(model: DiffusionModel, x: torch.Tensor, t: int, probes: int, generator: torch.Generator,
              rows: np.ndarray | None = None) -> np.ndarray:
    """Per sample: D - σ tr(∂ε̂/∂x) + ||ε̂||² at the sample, the trace by Hutchinson."""
    _, sigma = _sigma(model, t)
    x = x.to(torch.float64).to(model.device).requires_grad_(True)
    eps = model.eps_grad(x, t, rows)
    dims = int(np.prod(x.shape[1:]))
    trace = torch.zeros(x.shape[0], dtype=torch.float64, device=model.device)
    for _ in range(probes):
        v = (torch.randint(0, 2, x.shape, generator=generator) * 2 - 1).to(torch.float64).to(model.device)
        (vjp,) = torch.autograd.grad(eps, x, grad_outputs=v, retain_graph=True)
        trace += (vjp * v).reshape(x.shape[0], -1).sum(1)
    trace /= probes
    norm = eps.detach().reshape(x.shape[0], -1).pow(2).sum(1)
    return (dims - sigma * trace.detach() + norm).cpu().numpy()


class LidParams(FilterParams):
    t_star: int = Field(default=2, ge=0, description="Small timestep at which the estimators look.")
    draws: int = Field(default=8, ge=1, description="DSM: noise draws per sample.")
    probes: int = Field(default=8, ge=1, description="FLIPD: Hutchinson probes per sample.")
    estimator: Literal["dsm", "flipd"] = Field(default="dsm", description="Which estimator's score is filtered (both are reported).")


def lid_scores(model: DiffusionModel, samples: np.ndarray, params: LidParams, seed: int,
               rows: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Both estimators at each sample; ``rows``: the samples' indices (their conditions), default 0..n-1."""
    generator = torch.Generator().manual_seed(seed + 1)
    x = torch.as_tensor(samples, dtype=torch.float64)
    rows = np.arange(len(x)) if rows is None else np.asarray(rows)
    out = {"dsm": [], "flipd": []}
    for start in range(0, len(x), params.batch_size):
        batch, at = x[start:start + params.batch_size], rows[start:start + params.batch_size]
        out["dsm"].append(lid_dsm(model, batch, params.t_star, params.draws, generator, at))
        out["flipd"].append(lid_flipd(model, batch, params.t_star, params.probes, generator, at))
    return {k: np.concatenate(v) for k, v in out.items()}
