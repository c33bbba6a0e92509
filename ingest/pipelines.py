"""Diffusion pipelines modelsci can sample, read from their saved layout (JSON only, nothing loaded).

Layouts (``model_index.json``'s ``_class_name``):

- ``DDPMPipeline``, ``DDIMPipeline``: unconditional, in pixel space (``unet``: a UNet2DModel);
- ``DiTPipeline``: class-conditional, in a VAE's latent space (``transformer``: a
  DiTTransformer2DModel; with a learned variance its extra output channels are ignored, as
  diffusers' own pipeline does);
- ``StableDiffusionPipeline``: text-conditional (``unet``: a UNet2DConditionModel, a CLIP
  ``text_encoder`` and ``tokenizer``), in a VAE's latent space, or in pixel space where ``vae``
  is null.

A bare diffusers model folder (``config.json`` with ``_class_name``) is sampled with its
``scheduler/`` folder when it has one, else a default DDPMScheduler.

Schedulers honoured: DDPMScheduler and DDIMScheduler, with their timestep spacing, steps
offset, final alpha, sample clipping and prediction type. Anything the sampler cannot
reproduce (another scheduler, dynamic thresholding, a learned variance in the scheduler, a
beta schedule given as a list) is refused when the model is submitted, naming it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelsci.schemas.errors import ModelsciError
from modelsci.schemas.untrusted_files import limit, read_text

__all__ = ["CONDITIONAL_TASK", "PIPELINES", "PREDICTION_TYPES", "SCHEDULERS", "UNCONDITIONAL_TASK",
           "VARIANCE_TYPES", "PipelineError", "PipelineLayout", "pipeline_layout"]

UNCONDITIONAL_TASK = "unconditional-image-generation"
CONDITIONAL_TASK = "text-to-image"
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
VARIANCE_TYPES = ("fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log")
SCHEDULERS = ("DDPMScheduler", "DDIMScheduler")
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
TIMESTEP_SPACINGS = ("leading", "trailing", "linspace")

PIPELINES: dict[str, tuple[str, str]] = {
    # pipeline class -> (conditioning, the denoiser's component)
    "DDPMPipeline": ("none", "unet"),
    "DDIMPipeline": ("none", "unet"),
    "DiTPipeline": ("class", "transformer"),
    "StableDiffusionPipeline": ("text", "unet"),
}


class PipelineError(ModelsciError, ValueError):
    """A diffusion pipeline modelsci cannot sample faithfully; the message names what."""


@dataclass(frozen=True)
class PipelineLayout:
    """What a saved pipeline is: its class, conditioning, denoiser, scheduler and space."""

    pipeline: str
    conditioning: str  # "none", "class" or "text"
    denoiser: str      # the component that predicts the noise: "unet" or "transformer"
    scheduler: str     # the scheduler's class name
    latent: bool       # sampled in a VAE's latent space

    @property
    def task(self) -> str:
        return UNCONDITIONAL_TASK if self.conditioning == "none" else CONDITIONAL_TASK


def _json(path: Path) -> dict[str, Any]:
    import json

    if not path.exists() and not path.is_symlink():
        return {}
    try:
        data = json.loads(read_text(path, limit("json"), what="pipeline config"))
    except ValueError as exc:
        raise PipelineError(f"{path}: not valid JSON: {exc}") from None
    return data if isinstance(data, dict) else {}


def _named(entry: Any) -> bool:
    """A model_index.json component entry that is present (not ``[null, null]``)."""
    return isinstance(entry, list) and len(entry) == 2 and entry[1] is not None


def pipeline_layout(path: Path, task: str) -> PipelineLayout:
    """The layout of the diffusers folder ``path``, refusing what modelsci cannot sample for ``task``."""
    index = _json(path / "model_index.json")
    if index:
        name = str(index.get("_class_name"))
        if name not in PIPELINES:
            raise PipelineError(f"{path}: a {name}; modelsci samples the pipelines {', '.join(PIPELINES)}")
        conditioning, denoiser = PIPELINES[name]
        if not _named(index.get(denoiser)):
            raise PipelineError(f"{path}: model_index.json has no {denoiser}, which a {name} needs")
        scheduler_entry = index.get("scheduler")
        if not _named(scheduler_entry):
            raise PipelineError(f"{path}: model_index.json has no scheduler")
        latent = _named(index.get("vae"))
        if name == "DiTPipeline" and not latent:
            raise PipelineError(f"{path}: a DiTPipeline needs its vae")
        if name == "StableDiffusionPipeline" and not (_named(index.get("text_encoder")) and _named(index.get("tokenizer"))):
            raise PipelineError(f"{path}: a StableDiffusionPipeline needs its text_encoder and tokenizer")
        scheduler_config = _json(path / "scheduler" / "scheduler_config.json")
        scheduler = str(scheduler_config.get("_class_name") or scheduler_entry[1])
    else:  # a bare model folder
        name, conditioning, denoiser, latent = str(_json(path / "config.json").get("_class_name")), "none", "unet", False
        scheduler_config = _json(path / "scheduler" / "scheduler_config.json")
        scheduler = str(scheduler_config.get("_class_name") or "DDPMScheduler")
    check_scheduler(scheduler, scheduler_config, path)
    layout = PipelineLayout(name, conditioning, denoiser, scheduler, latent)
    if task != layout.task:
        what = "an unconditional" if conditioning == "none" else f"a {conditioning}-conditional"
        raise PipelineError(f"{path}: a {name} is {what} pipeline: submit it with task {layout.task}, not {task}")
    return layout


def check_scheduler(name: str, config: dict[str, Any], path: Path) -> None:
    """Refuse a scheduler, or a setting of one, that modelsci's sampler does not reproduce."""
    where = f"{path}: the scheduler {name}"
    if name not in SCHEDULERS:
        raise PipelineError(f"{where} is not one modelsci samples with (it honours {', '.join(SCHEDULERS)}); "
                            "save the pipeline with one of those")
    settings = {
        "prediction_type": (config.get("prediction_type", "epsilon"), PREDICTION_TYPES),
        "beta_schedule": (config.get("beta_schedule", "linear"), BETA_SCHEDULES),
        "timestep_spacing": (config.get("timestep_spacing", "leading"), TIMESTEP_SPACINGS),
    }
    if name == "DDPMScheduler":
        settings["variance_type"] = (config.get("variance_type", "fixed_small"), VARIANCE_TYPES)
    for key, (value, allowed) in settings.items():
        if value not in allowed:
            learned = " (a learned variance: the scheduler would read the model's extra output channels)" \
                if key == "variance_type" and value in ("learned", "learned_range") else ""
            raise PipelineError(f"{where} has {key} {value!r}{learned}, which modelsci does not sample with "
                                f"(it honours {', '.join(allowed)})")
    if config.get("thresholding"):
        raise PipelineError(f"{where} uses dynamic thresholding, which modelsci does not sample with")
    if config.get("trained_betas") is not None:
        raise PipelineError(f"{where} gives its betas as a list (trained_betas), which modelsci does not read")
    if config.get("rescale_betas_zero_snr"):
        raise PipelineError(f"{where} rescales its betas to zero terminal SNR, which modelsci does not sample with")
