"""Diffusion sampling that keeps what the filters need: each sample's predicted clean sample x̂₀
over the last reverse steps.

Numerics: with a steep schedule ᾱ_t underflows float32 (exp(-100) for β up to 0.2 over 1,000
steps), and x̂₀ = (x_t - sqrt(1 - ᾱ_t) ε̂) / sqrt(ᾱ_t) becomes inf. The schedule and the
sampler's arithmetic stay in float64; only the denoiser (and a text encoder or VAE) runs in
its own dtype.

Samplers: DDPM ancestral steps and DDIM steps (``eta`` 0 is deterministic), over the
timesteps the diffusers scheduler itself sets (its spacing and offset), each step from t to
t - T / steps as diffusers takes it. A scheduler's ``clip_sample`` clips x̂₀ as diffusers does.
What the network predicts follows ``prediction_type``: ``epsilon`` (ε̂), ``v_prediction``
(v̂ = √ᾱ_t ε - √(1-ᾱ_t) x₀) or ``sample`` (x̂₀). ``DiffusionModel.eps`` always answers ε̂,
converted from the other two, so the LID estimators and the quench read every model alike.
The DDPM step's variance follows ``variance_type``: ``fixed_small`` and ``fixed_small_log``
(the posterior variance), ``fixed_large`` and ``fixed_large_log`` (β_t; diffusers' own step
takes the square root of log β_t for the latter, which is NaN, so this follows GLIDE's meaning).

Conditional pipelines: each sample i is drawn under condition i mod P (a prompt's text-encoder
states, or a class id). Classifier-free guidance with scale s > 1 evaluates the conditional and
the unconditional (empty prompt, null class) branches in one batch and takes
ε̂_u + s (ε̂_c - ε̂_u); at s <= 1 only the conditional branch runs, as in diffusers. Latent
pipelines sample the VAE's latents, which the filters score; ``decode`` turns them into the
images the ground truth judges.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from modelsci.ingest.architectures import CONFIG_NAME
from modelsci.ingest.models import read_json
from modelsci.ingest.pipelines import PREDICTION_TYPES, VARIANCE_TYPES, check_scheduler, pipeline_layout

__all__ = ["PREDICTION_TYPES", "VARIANCE_TYPES", "Conditioning", "DiffusionModel", "Schedule", "denoise",
           "diffusion_model", "from_diffusers", "reverse_step", "sample"]

Correction = Callable[[torch.Tensor, int, np.ndarray], torch.Tensor]


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
class Conditioning:
    """What a conditional pipeline samples under: one entry per condition, and the guidance."""

    kind: str                 # "text" or "class"
    labels: list[str]         # the prompt, or the class id as a string
    values: torch.Tensor      # text: (P, L, D) encoder states; class: (P,) class ids
    null: torch.Tensor        # text: (1, L, D) states of the empty prompt; class: (1,) the null class id
    guidance_scale: float = 1.0

    @property
    def guided(self) -> bool:
        return self.guidance_scale > 1.0


@dataclass
class DiffusionModel:
    """A denoiser (x_t, t) -> ε̂, v̂ or x̂₀ with its schedule, sampler and the shape of one sample."""

    eps_model: Any
    schedule: Schedule
    shape: tuple[int, ...]
    device: str
    data: dict[str, Any]  # what the model was trained on, when its config says (toy modes, shapes)
    prediction_type: str = "epsilon"      # what eps_model predicts: one of PREDICTION_TYPES
    variance_type: str = "fixed_small"    # the DDPM step's variance: one of VARIANCE_TYPES
    sampler: str = "ddpm"                 # "ddpm" or "ddim"
    steps: tuple[int, ...] | None = None  # the timesteps visited, first to last; None: T-1 down to 0
    final_abar: float = 1.0               # ᾱ after the last step (DDIM's set_alpha_to_one)
    clip_sample: float | None = None      # the range x̂₀ is clipped to, where the scheduler clips
    eta: float = 0.0                      # DDIM's noise
    conditioning: Conditioning | None = None
    denoiser: str = "plain"               # how eps_model is called: "plain", "text" (UNet2DConditionModel), "class" (DiT)
    decoder: Callable[[torch.Tensor], torch.Tensor] | None = None  # latents -> images (latent pipelines)
    record: dict[str, Any] = field(default_factory=dict)  # what produced the samples, for every finding
    forwards: int = 0                     # rows through the denoiser so far (guidance's two branches count 2)

    @property
    def timesteps(self) -> tuple[int, ...]:
        return self.steps if self.steps is not None else tuple(range(self.schedule.timesteps - 1, -1, -1))

    def previous(self, t: int) -> int:
        """The timestep a step from t lands on (-1: the end), as diffusers' schedulers take it: DDIM
        steps back T / steps, DDPM to the next timestep it visits."""
        if self.sampler == "ddim":
            return t - self.schedule.timesteps // len(self.timesteps)
        steps = self.timesteps
        i = steps.index(t)
        return steps[i + 1] if i + 1 < len(steps) else -1

    def abar(self, t: int) -> float:
        """ᾱ_t, with the end of the process (t < 0) at 1, or DDIM's final ᾱ."""
        if t >= 0:
            return float(self.schedule.alphas_cumprod[t])
        return self.final_abar if self.sampler == "ddim" else 1.0

    @torch.no_grad()
    def eps(self, x: torch.Tensor, t: int | torch.Tensor, rows: np.ndarray | None = None) -> torch.Tensor:
        """ε̂ (guided) in float64 for a float64 batch at timestep(s) t; ``rows``: the samples' indices."""
        return self.eps_grad(x, t, rows).detach()

    @torch.no_grad()
    def output(self, x: torch.Tensor, t: int | torch.Tensor, rows: np.ndarray | None = None) -> torch.Tensor:
        """The network's own (guided) prediction (ε̂, v̂ or x̂₀, by ``prediction_type``) in float64."""
        return self._output(x, t, rows)

    def eps_grad(self, x: torch.Tensor, t: int | torch.Tensor, rows: np.ndarray | None = None) -> torch.Tensor:
        """ε̂ with gradients (for LID estimates and corrections)."""
        out = self._output(x, t, rows)
        if self.prediction_type == "epsilon":
            return out
        abar = self._abar(t, x)
        x = x.to(self.device, torch.float64)
        if self.prediction_type == "v_prediction":  # ε = √ᾱ v + √(1-ᾱ) x_t
            return abar.sqrt() * out + (1 - abar).sqrt() * x
        return (x - abar.sqrt() * out) / (1 - abar).sqrt()  # sample: ε = (x_t - √ᾱ x₀) / √(1-ᾱ)

    def conditions_of(self, rows: np.ndarray) -> list[str] | None:
        """The condition each sample in ``rows`` is drawn under (None for unconditional models)."""
        if self.conditioning is None:
            return None
        labels = self.conditioning.labels
        return [labels[int(r) % len(labels)] for r in np.asarray(rows).reshape(-1)]

    @torch.no_grad()
    def decode(self, latents: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """The images of sampled latents (the samples themselves for pixel-space models)."""
        if self.decoder is None:
            return latents
        images = [self.decoder(torch.as_tensor(latents[i:i + batch_size]).to(self.device)).double().cpu()
                  for i in range(0, len(latents), batch_size)]
        return torch.cat(images).numpy() if images else latents

    def with_guidance(self, scale: float) -> DiffusionModel:
        """The same model sampled at another guidance scale (weights and embeddings shared)."""
        if self.conditioning is None:
            raise ValueError("an unconditional model has no guidance scale")
        conditioning = dataclasses.replace(self.conditioning, guidance_scale=float(scale))
        return dataclasses.replace(self, conditioning=conditioning, forwards=0,
                                   record={**self.record, "guidance_scale": float(scale)})

    def _output(self, x: torch.Tensor, t: int | torch.Tensor, rows: np.ndarray | None) -> torch.Tensor:
        dtype = next(self.eps_model.parameters()).dtype
        x = x.to(self.device, dtype)
        steps = torch.as_tensor(t, device=self.device).reshape(-1).expand(x.shape[0])
        cond = self.conditioning
        if cond is None:
            self.forwards += x.shape[0]
            return self._call(x, steps, None)
        rows = np.arange(x.shape[0]) if rows is None else np.asarray(rows).reshape(-1)
        index = torch.as_tensor(rows % len(cond.labels), device=cond.values.device)
        given = cond.values[index]
        if not cond.guided:
            self.forwards += x.shape[0]
            return self._call(x, steps, given)
        null = cond.null.expand(x.shape[0], *cond.null.shape[1:])
        self.forwards += 2 * x.shape[0]
        both = self._call(torch.cat([x, x]), torch.cat([steps, steps]), torch.cat([given, null]))
        conditional, unconditional = both.chunk(2)
        return unconditional + cond.guidance_scale * (conditional - unconditional)

    def _call(self, x: torch.Tensor, steps: torch.Tensor, condition: torch.Tensor | None) -> torch.Tensor:
        if self.denoiser == "text":
            out = self.eps_model(x, steps, encoder_hidden_states=condition).sample
        elif self.denoiser == "class":
            out = self.eps_model(x, timestep=steps, class_labels=condition).sample
            out = out[:, :x.shape[1]]  # a learned variance's channels are ignored, as DiTPipeline does
        else:
            out = self.eps_model(x, steps)
            if hasattr(out, "sample"):  # a diffusers UNet returns an output object
                out = out.sample
        return out.to(torch.float64)

    def _abar(self, t: int | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """ᾱ_t per row of x, shaped to broadcast against it."""
        abar = torch.as_tensor(self.schedule.alphas_cumprod, device=self.device)
        steps = torch.as_tensor(t, device=self.device).reshape(-1).expand(x.shape[0])
        return abar[steps].reshape(-1, *([1] * (x.dim() - 1)))


def diffusion_model(loaded: Any, params: Any = None, dataset: Any = None) -> DiffusionModel:
    """The denoiser, schedule, sampler and conditions of a loaded diffusers pipeline/UNet or modelsci denoiser.

    ``params`` (FilterParams) set the conditions, guidance scale and steps; ``dataset`` may give
    the prompts (its ``text`` column) or class ids (its ``label`` column).
    """
    handle = loaded.handle
    if handle.framework == "torch":
        config = read_json(handle.path / CONFIG_NAME)
        s = config.get("schedule")
        if not s:
            raise ValueError(f"{handle.path / CONFIG_NAME} has no 'schedule' (timesteps, beta_start, beta_end)")
        schedule = Schedule.linear(int(s["timesteps"]), float(s["beta_start"]), float(s["beta_end"]))
        return DiffusionModel(loaded.model, schedule, (int(config["args"].get("dim", 1)),), loaded.device,
                              config.get("data", {}), record={"pipeline": "modelsci denoiser", "scheduler": "DDPM",
                                                              "prediction_type": "epsilon",
                                                              "steps": schedule.timesteps, "latent": False})
    if handle.framework != "diffusers":
        raise ValueError(f"a {handle.framework} model is not a diffusion model modelsci can sample")
    import diffusers

    note = read_json(handle.path / CONFIG_NAME).get("data", {})  # modelsci's note on the training data, if any
    pipeline = loaded.model
    if not isinstance(pipeline, diffusers.DiffusionPipeline):  # a bare UNet
        config = read_json(handle.path / "scheduler" / "scheduler_config.json")
        name = config.get("_class_name", "DDPMScheduler")
        check_scheduler(str(name), config, handle.path)  # names a scheduler modelsci samples with, or refused
        scheduler = getattr(diffusers, name).from_pretrained(handle.path / "scheduler") if config \
            else diffusers.DDPMScheduler()
        return from_diffusers(pipeline, scheduler, loaded.device, note, params=params)
    name = type(pipeline).__name__
    if (Path(handle.path) / "model_index.json").exists():
        pipeline_layout(Path(handle.path), getattr(handle, "task", None) or _task_of(name))
    labels = _condition_labels(name, params, dataset, note)
    denoiser = pipeline.transformer if name == "DiTPipeline" else pipeline.unet
    return from_diffusers(denoiser, pipeline.scheduler,
                          loaded.device, note, params=params, pipeline=pipeline, labels=labels)


def _task_of(pipeline: str) -> str:
    return "unconditional-image-generation" if pipeline in ("DDPMPipeline", "DDIMPipeline") else "text-to-image"


def _condition_labels(pipeline: str, params: Any, dataset: Any, note: dict[str, Any]) -> list[str] | None:
    """The prompts (or class ids, as strings) samples cycle over: the params', the dataset's or the note's."""
    if pipeline not in ("StableDiffusionPipeline", "DiTPipeline"):
        return None
    text = pipeline == "StableDiffusionPipeline"
    labels = _given_labels(params, dataset, note, text, pipeline)
    if any(not label.strip() for label in labels):  # the empty prompt is the unconditional branch itself
        raise ValueError(f"an empty prompt is not a condition: {labels}")
    return labels


def _given_labels(params: Any, dataset: Any, note: dict[str, Any], text: bool, pipeline: str) -> list[str]:
    given = getattr(params, "prompts" if text else "class_labels", None)
    if given:
        return [str(v) for v in given]
    role = "text" if text else "label"
    if dataset is not None and role in dataset.roles:
        values = dataset.texts(role) if text else [str(v) for v in dataset.labels()]
        return list(dict.fromkeys(values))
    if note.get("conditions"):
        return [str(k) for k in note["conditions"]]
    what = "prompts" if text else "class_labels"
    raise ValueError(f"a {pipeline} samples under conditions: give `{what}` in the analysis' params, or a "
                     f"dataset with a {role} column")


def from_diffusers(denoiser: Any, scheduler: Any, device: str, data: dict[str, Any] | None = None, *,
                   params: Any = None, pipeline: Any = None, labels: list[str] | None = None) -> DiffusionModel:
    """A diffusers denoiser, its scheduler (and pipeline's encoders) as a DiffusionModel; refuses what the
    sampler cannot honour."""
    config = scheduler.config
    scheduler_name = type(scheduler).__name__
    check_scheduler(scheduler_name, dict(config), Path("the pipeline"))
    sampler = "ddim" if scheduler_name == "DDIMScheduler" else "ddpm"
    T = int(config.num_train_timesteps)
    steps = getattr(params, "num_inference_steps", None) or (T if sampler == "ddpm" else min(50, T))
    scheduler.set_timesteps(steps)
    betas = np.asarray(scheduler.betas.double().cpu().numpy(), dtype=np.float64)
    schedule = Schedule(betas)
    size = denoiser.config.sample_size
    size = (size, size) if isinstance(size, int) else tuple(size)
    shape = (int(denoiser.config.in_channels), *size)
    clip = float(config.get("clip_sample_range", 1.0)) if config.get("clip_sample", False) else None
    final = 1.0 if config.get("set_alpha_to_one", True) else float(schedule.alphas_cumprod[0])
    guidance = float(getattr(params, "guidance_scale", 1.0) or 1.0)
    conditioning, kind, decoder = None, "plain", None
    if pipeline is not None and labels is not None:
        if getattr(pipeline, "text_encoder", None) is not None:
            conditioning, kind = _text_conditioning(pipeline, labels, guidance, device), "text"
        else:
            conditioning, kind = _class_conditioning(denoiser, labels, guidance, device), "class"
    vae = getattr(pipeline, "vae", None) if pipeline is not None else None
    if vae is not None:
        scale = float(vae.config.scaling_factor)
        vae = vae.to(device).eval()

        def decoder(latents: torch.Tensor) -> torch.Tensor:
            return vae.decode((latents / scale).to(vae.dtype)).sample

    record = {"pipeline": type(pipeline).__name__ if pipeline is not None else type(denoiser).__name__,
              "denoiser": type(denoiser).__name__, "scheduler": scheduler_name,
              "prediction_type": config.get("prediction_type", "epsilon"),
              "timestep_spacing": config.get("timestep_spacing", "leading"), "steps": len(scheduler.timesteps),
              "guidance_scale": guidance if conditioning is not None else None,
              "eta": float(getattr(params, "eta", 0.0) or 0.0) if sampler == "ddim" else None,
              "latent": vae is not None, "conditioning": kind if kind != "plain" else "none"}
    return DiffusionModel(
        denoiser.to(device).eval(), schedule, shape, device, data or {},
        prediction_type=config.get("prediction_type", "epsilon"),
        variance_type=config.get("variance_type", "fixed_small"), sampler=sampler,
        steps=tuple(int(t) for t in scheduler.timesteps), final_abar=final, clip_sample=clip,
        eta=float(getattr(params, "eta", 0.0) or 0.0), conditioning=conditioning, denoiser=kind,
        decoder=decoder if vae is not None else None, record=record)


@torch.no_grad()
def _text_conditioning(pipeline: Any, prompts: list[str], guidance: float, device: str) -> Conditioning:
    """Prompt and empty-prompt states, tokenised and encoded as StableDiffusionPipeline.encode_prompt does."""
    tokenizer, encoder = pipeline.tokenizer, pipeline.text_encoder.to(device).eval()
    mask = getattr(encoder.config, "use_attention_mask", False)

    def encode(texts: list[str]) -> torch.Tensor:
        tokens = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                           return_tensors="pt")
        return encoder(tokens.input_ids.to(device),
                       attention_mask=tokens.attention_mask.to(device) if mask else None)[0]

    return Conditioning("text", prompts, encode(prompts), encode([""]), guidance)


def _class_conditioning(denoiser: Any, labels: list[str], guidance: float, device: str) -> Conditioning:
    classes = int(denoiser.config.num_embeds_ada_norm)
    try:
        ids = [int(v) for v in labels]
    except ValueError:
        raise ValueError(f"a class-conditional pipeline samples under class ids, not {labels}") from None
    if any(not 0 <= i < classes for i in ids):
        raise ValueError(f"class labels must lie in 0..{classes - 1}: got {ids}")
    # The null class is the label embedding's extra row, which DiTPipeline names 1000.
    return Conditioning("class", labels, torch.tensor(ids, device=device), torch.tensor([classes], device=device),
                        guidance)


def reverse_step(model: DiffusionModel, x: torch.Tensor, t: int, noise: torch.Tensor | None = None,
                 rows: np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One reverse step from x_t to the next timestep: (x_prev, x̂₀), in float64.

    ``noise`` (shaped like x) is the step's standard normal draw; for DDPM at t = 0, or without
    noise, x_prev is the posterior mean.
    """
    prev = model.previous(t)
    abar, abar_prev = model.abar(t), model.abar(prev)
    out = model.output(x, t, rows)
    if model.prediction_type == "epsilon":
        eps = out
        x0 = (x - np.sqrt(1 - abar) * out) / np.sqrt(abar)
    elif model.prediction_type == "sample":
        x0 = out
        eps = (x - np.sqrt(abar) * out) / np.sqrt(1 - abar)
    else:
        x0 = np.sqrt(abar) * x - np.sqrt(1 - abar) * out
        eps = np.sqrt(abar) * out + np.sqrt(1 - abar) * x
    if model.clip_sample is not None:
        x0 = x0.clamp(-model.clip_sample, model.clip_sample)
    if model.sampler == "ddim":
        variance = (1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev)
        std = model.eta * np.sqrt(variance)
        x_prev = np.sqrt(abar_prev) * x0 + np.sqrt(max(1 - abar_prev - std ** 2, 0.0)) * eps
        if std > 0 and noise is not None:
            x_prev = x_prev + std * noise.to(x_prev.device)
        return x_prev, x0
    alpha, beta = abar / abar_prev, 1 - abar / abar_prev  # this step's α and β
    if model.prediction_type == "epsilon" and model.clip_sample is None:
        mean = (x - beta / np.sqrt(1 - abar) * out) / np.sqrt(alpha)  # exact where x̂₀ is not (ᾱ underflows)
    else:
        mean = (np.sqrt(abar_prev) * beta * x0 + np.sqrt(alpha) * (1 - abar_prev) * x) / (1 - abar)
    if t == 0 or noise is None:
        return mean, x0
    if model.variance_type in ("fixed_large", "fixed_large_log"):
        variance = beta
    else:
        variance = max((1 - abar_prev) / (1 - abar) * beta, 1e-20)
    return mean + np.sqrt(variance) * noise.to(mean.device), x0


def denoise(model: DiffusionModel, x: torch.Tensor, generator: torch.Generator, *, rows: np.ndarray | None = None,
            keep_last: int = 10, correction: Correction | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the reverse process from x_T (float64): (x_0, x̂₀ over the last ``keep_last`` steps (m, K, ...))."""
    rows = np.arange(len(x)) if rows is None else rows
    x = x.to(model.device, torch.float64)
    history = []
    steps = model.timesteps
    for i, t in enumerate(steps):
        noisy = model.sampler == "ddpm" and t > 0 or model.sampler == "ddim" and model.eta > 0
        noise = torch.randn(x.shape, generator=generator, dtype=torch.float64).to(model.device) if noisy else None
        x, x0 = reverse_step(model, x, t, noise, rows)
        if i >= len(steps) - keep_last:
            history.append(x0.cpu())
        if correction is not None:
            x = correction(x, t, rows)
    return x.cpu(), torch.stack(history[::-1], dim=1)  # (m, K, ...): the last step's x̂₀ first


def sample(model: DiffusionModel, n: int, generator: torch.Generator, *, keep_last: int = 10,
           batch_size: int = 4096, correction: Correction | None = None,
           progress: Callable[[float, float], None] | None = None,
           rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Ancestral (DDPM) or DDIM sampling: (samples (n, ...), x̂₀ over the last ``keep_last`` steps (n, K, ...)).

    ``rows`` are the samples' indices (sample i is drawn under condition i mod P); default 0..n-1.
    ``correction(x_t, t, rows)`` may move samples after each step (the quench steer).
    """
    rows = np.arange(n) if rows is None else np.asarray(rows)
    samples, histories = [], []
    for start in range(0, n, batch_size):
        m = min(batch_size, n - start)
        x = torch.randn((m, *model.shape), generator=generator, dtype=torch.float64)
        x, history = denoise(model, x, generator, rows=rows[start:start + m], keep_last=keep_last,
                             correction=correction)
        samples.append(x)
        histories.append(history)
        if progress:
            progress(start + m, n)
    return torch.cat(samples).numpy(), torch.cat(histories).numpy()
