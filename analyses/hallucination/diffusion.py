"""DDPM sampling that keeps what the filters need: each sample's predicted clean sample x̂₀
over the last reverse steps.

Numerics: with a steep schedule ᾱ_t underflows float32 (exp(-100) for β up to 0.2 over 1,000
steps), and x̂₀ = (x_t - sqrt(1 - ᾱ_t) ε̂) / sqrt(ᾱ_t) becomes inf. The schedule and the
sampler's arithmetic stay in float64; only the noise predictor runs in its own dtype.
Samples are never clipped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from modelsci.ingest.architectures import CONFIG_NAME
from modelsci.ingest.models import read_json

__all__ = ["DiffusionModel", "Schedule", "diffusion_model", "sample"]

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
    """A noise predictor eps(x_t, t) with its schedule and the shape of one sample."""

    eps_model: Any
    schedule: Schedule
    shape: tuple[int, ...]
    device: str
    data: dict[str, Any]  # what the model was trained on, when its config says (toy modes)

    @torch.no_grad()
    def eps(self, x: torch.Tensor, t: int | torch.Tensor) -> torch.Tensor:
        """ε̂ in float64 for a float64 batch at timestep(s) t (0-based)."""
        return self.eps_grad(x, t).detach()

    def eps_grad(self, x: torch.Tensor, t: int | torch.Tensor) -> torch.Tensor:
        """ε̂ with gradients (for LID estimates and corrections)."""
        dtype = next(self.eps_model.parameters()).dtype
        steps = torch.as_tensor(t, device=self.device).reshape(-1).expand(x.shape[0])
        out = self.eps_model(x.to(self.device, dtype), steps)
        if hasattr(out, "sample"):  # a diffusers UNet returns an output object
            out = out.sample
        return out.to(torch.float64)


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
        betas = np.asarray(scheduler.betas.double().cpu().numpy(), dtype=np.float64)
        size = unet.config.sample_size
        size = (size, size) if isinstance(size, int) else tuple(size)
        note = read_json(handle.path / CONFIG_NAME)  # modelsci's note on the training data, if any
        return DiffusionModel(unet.eval(), Schedule(betas), (unet.config.in_channels, *size), loaded.device,
                              note.get("data", {}))
    raise ValueError(f"a {handle.framework} model is not a diffusion model modelsci can sample")


def sample(model: DiffusionModel, n: int, generator: torch.Generator, *, keep_last: int = 10,
           batch_size: int = 4096, correction: Callable[[torch.Tensor, int], torch.Tensor] | None = None,
           progress: Callable[[float, float], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """DDPM ancestral sampling: (samples (n, ...), x̂₀ over the last ``keep_last`` steps (n, K, ...)).

    ``correction(x_t, t)`` may move samples after each step (the quench steer).
    """
    samples, histories = [], []
    alphas, abar, betas = model.schedule.alphas, model.schedule.alphas_cumprod, model.schedule.betas
    T = model.schedule.timesteps
    for start in range(0, n, batch_size):
        m = min(batch_size, n - start)
        x = torch.randn((m, *model.shape), generator=generator, dtype=torch.float64).to(model.device)
        history = []
        for t in range(T - 1, -1, -1):
            eps = model.eps(x, t)
            if t < keep_last:
                history.append(((x - np.sqrt(1 - abar[t]) * eps) / np.sqrt(abar[t])).cpu())
            mean = (x - betas[t] / np.sqrt(1 - abar[t]) * eps) / np.sqrt(alphas[t])
            if t > 0:
                variance = betas[t] * (1 - abar[t - 1]) / (1 - abar[t])
                noise = torch.randn(x.shape, generator=generator, dtype=torch.float64).to(model.device)
                x = mean + np.sqrt(variance) * noise
            else:
                x = mean
            if correction is not None:
                x = correction(x, t)
        samples.append(x.cpu())
        histories.append(torch.stack(history[::-1], dim=1))  # (m, K, ...) ordered t = K-1 .. 0 reversed
        if progress:
            progress(start + m, n)
    return torch.cat(samples).numpy(), torch.cat(histories).numpy()
