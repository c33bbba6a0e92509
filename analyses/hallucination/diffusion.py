"""DDPM sampling that keeps what the filters need: each sample's predicted clean sample x̂₀
over the last reverse steps.

Numerics: with a steep schedule ᾱ_t underflows float32 (exp(-100) for β up to 0.2 over 1,000
steps), and x̂₀ = (x_t - sqrt(1 - ᾱ_t) ε̂) / sqrt(ᾱ_t) becomes inf. The schedule and the
sampler's arithmetic stay in float64; only the noise predictor runs in its own dtype.
Samples are never clipped (a scheduler's ``clip_sample`` and ``thresholding`` are not applied).

What the network predicts follows the diffusers scheduler's ``prediction_type``: ``epsilon``
(ε̂), ``v_prediction`` (v̂ = √ᾱ_t ε - √(1-ᾱ_t) x₀, so x̂₀ = √ᾱ_t x_t - √(1-ᾱ_t) v̂) or
``sample`` (x̂₀ itself). ``DiffusionModel.eps`` always answers ε̂, converted from the other
two, so the LID estimators and the quench read every model alike; the sampler takes x̂₀
directly where the model predicts it. The reverse step's variance follows ``variance_type``:
``fixed_small`` and ``fixed_small_log`` (the posterior variance β_t (1-ᾱ_{t-1}) / (1-ᾱ_t)),
``fixed_large`` and ``fixed_large_log`` (β_t; diffusers' own step takes the square root of
log β_t for the latter, which is NaN, so this follows GLIDE's meaning instead). Learned
variances (``learned``, ``learned_range``) and any other type are refused at load.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from modelsci.ingest.architectures import CONFIG_NAME
from modelsci.ingest.models import read_json

__all__ = ["PREDICTION_TYPES", "VARIANCE_TYPES", "DiffusionModel", "Schedule", "diffusion_model",
           "from_diffusers", "reverse_step", "sample"]

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
VARIANCE_TYPES = ("fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log")

EpsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class Schedule:
    """A DDPM schedule in float64."""

    betas: np.ndarray

    @classmethod
    def linear(cls, timesteps: int, beta_start: float, beta_end: float) -> Schedule:
        return cls(np.linspace(beta_start, beta_end, timesteps, dtype=np.float64))

    @property
    def timesteps(self) -> int:
        return len(self.betas)

    @property
    def alphas(self) -> np.ndarray:
        return 1.0 - self.betas

    @property
    def alphas_cumprod(self) -> np.ndarray:
        return np.cumprod(self.alphas)


@dataclass
class DiffusionModel:
    """A denoiser (x_t, t) -> ε̂, v̂ or x̂₀ with its schedule and the shape of one sample."""

    eps_model: Any
    schedule: Schedule
    shape: tuple[int, ...]
    device: str
    data: dict[str, Any]  # what the model was trained on, when its config says (toy modes)
    prediction_type: str = "epsilon"      # what eps_model predicts: one of PREDICTION_TYPES
    variance_type: str = "fixed_small"    # the reverse step's variance: one of VARIANCE_TYPES

    @torch.no_grad()
    def eps(self, x: torch.Tensor, t: int | torch.Tensor) -> torch.Tensor:
        """ε̂ in float64 for a float64 batch at timestep(s) t (0-based)."""
        return self.eps_grad(x, t).detach()

    @torch.no_grad()
    def output(self, x: torch.Tensor, t: int | torch.Tensor) -> torch.Tensor:
        """The network's own prediction (ε̂, v̂ or x̂₀, by ``prediction_type``) in float64."""
        return self._output(x, t)

    def eps_grad(self, x: torch.Tensor, t: int | torch.Tensor) -> torch.Tensor:
        """ε̂ with gradients (for LID estimates and corrections)."""
        out = self._output(x, t)
        if self.prediction_type == "epsilon":
            return out
        abar = self._abar(t, x)
        x = x.to(self.device, torch.float64)
        if self.prediction_type == "v_prediction":  # ε = √ᾱ v + √(1-ᾱ) x_t
            return abar.sqrt() * out + (1 - abar).sqrt() * x
        return (x - abar.sqrt() * out) / (1 - abar).sqrt()  # sample: ε = (x_t - √ᾱ x₀) / √(1-ᾱ)

    def _output(self, x: torch.Tensor, t: int | torch.Tensor) -> torch.Tensor:
        dtype = next(self.eps_model.parameters()).dtype
        steps = torch.as_tensor(t, device=self.device).reshape(-1).expand(x.shape[0])
        out = self.eps_model(x.to(self.device, dtype), steps)
        if hasattr(out, "sample"):  # a diffusers UNet returns an output object
            out = out.sample
        return out.to(torch.float64)

    def _abar(self, t: int | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """ᾱ_t per row of x, shaped to broadcast against it."""
        abar = torch.as_tensor(self.schedule.alphas_cumprod, device=self.device)
        steps = torch.as_tensor(t, device=self.device).reshape(-1).expand(x.shape[0])
        return abar[steps].reshape(-1, *([1] * (x.dim() - 1)))


def diffusion_model(loaded: Any) -> DiffusionModel:
    """The noise predictor and schedule of a loaded diffusers pipeline/UNet or modelsci denoiser."""
    handle = loaded.handle
    if handle.framework == "torch":
        config = read_json(handle.path / CONFIG_NAME)
        s = config.get("schedule")
        if not s:
            raise ValueError(f"{handle.path / CONFIG_NAME} has no 'schedule' (timesteps, beta_start, beta_end)")
        schedule = Schedule.linear(int(s["timesteps"]), float(s["beta_start"]), float(s["beta_end"]))
        return DiffusionModel(loaded.model, schedule, (int(config["args"].get("dim", 1)),), loaded.device,
                              config.get("data", {}))
    if handle.framework == "diffusers":
        import diffusers

        model = loaded.model
        if isinstance(model, diffusers.DiffusionPipeline):
            unet, scheduler = model.unet, model.scheduler
        else:
            unet = model
            scheduler = diffusers.DDPMScheduler.from_pretrained(handle.path / "scheduler") \
                if (handle.path / "scheduler").exists() else diffusers.DDPMScheduler()
        note = read_json(handle.path / CONFIG_NAME)  # modelsci's note on the training data, if any
        return from_diffusers(unet, scheduler, loaded.device, note.get("data", {}))
    raise ValueError(f"a {handle.framework} model is not a diffusion model modelsci can sample")


def from_diffusers(unet: Any, scheduler: Any, device: str, data: dict[str, Any] | None = None) -> DiffusionModel:
    """A diffusers UNet and its scheduler as a DiffusionModel; refuses what the sampler cannot honour."""
    config = scheduler.config
    prediction = config.get("prediction_type", "epsilon")
    variance = config.get("variance_type", "fixed_small")
    if prediction not in PREDICTION_TYPES:
        raise ValueError(f"the scheduler's prediction_type {prediction!r} is not supported; modelsci samples "
                         f"models that predict one of {', '.join(PREDICTION_TYPES)}")
    if variance not in VARIANCE_TYPES:
        learned = " (a learned variance: the UNet's extra output channels are not read)" \
            if variance in ("learned", "learned_range") else ""
        raise ValueError(f"the scheduler's variance_type {variance!r} is not supported{learned}; modelsci "
                         f"samples with a fixed variance: one of {', '.join(VARIANCE_TYPES)}")
    betas = np.asarray(scheduler.betas.double().cpu().numpy(), dtype=np.float64)
    size = unet.config.sample_size
    size = (size, size) if isinstance(size, int) else tuple(size)
    return DiffusionModel(unet.eval(), Schedule(betas), (unet.config.in_channels, *size), device,
                          data or {}, prediction_type=prediction, variance_type=variance)


def reverse_step(model: DiffusionModel, x: torch.Tensor, t: int,
                 noise: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One DDPM reverse step from x_t: (x_{t-1}, x̂₀), in float64.

    ``noise`` (shaped like x) is the step's standard normal draw; at t = 0, or without noise,
    x_{t-1} is the posterior mean.
    """
    alphas, abar, betas = model.schedule.alphas, model.schedule.alphas_cumprod, model.schedule.betas
    out = model.output(x, t)
    if model.prediction_type == "epsilon":
        x0 = (x - np.sqrt(1 - abar[t]) * out) / np.sqrt(abar[t])
        mean = (x - betas[t] / np.sqrt(1 - abar[t]) * out) / np.sqrt(alphas[t])
    else:
        x0 = out if model.prediction_type == "sample" else np.sqrt(abar[t]) * x - np.sqrt(1 - abar[t]) * out
        abar_prev = abar[t - 1] if t > 0 else 1.0
        mean = (np.sqrt(abar_prev) * betas[t] * x0 + np.sqrt(alphas[t]) * (1 - abar_prev) * x) / (1 - abar[t])
    if t == 0 or noise is None:
        return mean, x0
    if model.variance_type in ("fixed_large", "fixed_large_log"):
        variance = betas[t]
    else:
        variance = max(betas[t] * (1 - abar[t - 1]) / (1 - abar[t]), 1e-20)
    return mean + np.sqrt(variance) * noise.to(mean.device), x0


def sample(model: DiffusionModel, n: int, generator: torch.Generator, *, keep_last: int = 10,
           batch_size: int = 4096, correction: Callable[[torch.Tensor, int], torch.Tensor] | None = None,
           progress: Callable[[float, float], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """DDPM ancestral sampling: (samples (n, ...), x̂₀ over the last ``keep_last`` steps (n, K, ...)).

    ``correction(x_t, t)`` may move samples after each step (the quench steer).
    """
    samples, histories = [], []
    T = model.schedule.timesteps
    for start in range(0, n, batch_size):
        m = min(batch_size, n - start)
        x = torch.randn((m, *model.shape), generator=generator, dtype=torch.float64).to(model.device)
        history = []
        for t in range(T - 1, -1, -1):
            noise = torch.randn(x.shape, generator=generator, dtype=torch.float64).to(model.device) if t > 0 else None
            x, x0 = reverse_step(model, x, t, noise)
            if t < keep_last:
                history.append(x0.cpu())
            if correction is not None:
                x = correction(x, t)
        samples.append(x.cpu())
        histories.append(torch.stack(history[::-1], dim=1))  # (m, K, ...) ordered t = K-1 .. 0 reversed
        if progress:
            progress(start + m, n)
    return torch.cat(samples).numpy(), torch.cat(histories).numpy()
