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

__all__ = ["COMPONENTS", "CONDITIONAL_TASK", "PIPELINES", "PREDICTION_TYPES", "SCHEDULERS", "UNCONDITIONAL_TASK",
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


_UNET, _VAE = ("UNet2DModel",), ("AutoencoderKL",)
_TEXT = {"unet": ("UNet2DConditionModel",), "text_encoder": ("CLIPTextModel", "CLIPTextModelWithProjection"),
         "tokenizer": ("CLIPTokenizer", "CLIPTokenizerFast"), "vae": _VAE}
COMPONENTS: dict[str, dict[str, tuple[str, ...]]] = {
    # pipeline class -> component -> the classes modelsci knows how to call there
    "DDPMPipeline": {"unet": _UNET}, "DDIMPipeline": {"unet": _UNET},
    "DiTPipeline": {"transformer": ("DiTTransformer2DModel",), "vae": _VAE},
    "StableDiffusionPipeline": _TEXT,
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
    if not isinstance(data, dict):
        raise PipelineError(f"{path}: not a JSON object")
    return data


def _named(entry: Any) -> bool:
    """A model_index.json component entry that is present (not ``[null, null]``)."""
    return isinstance(entry, list) and len(entry) == 2 and entry[1] is not None


def pipeline_layout(path: Path, task: str) -> PipelineLayout:
    """The layout of the diffusers folder ``path``, refusing what modelsci cannot sample for ``task``."""
    if (path / "model_index.json").exists() or (path / "model_index.json").is_symlink():
        index = _json(path / "model_index.json")
        name = index.get("_class_name")
        if name not in PIPELINES:
            raise PipelineError(f"{path}: model_index.json names the pipeline {name!r}; modelsci samples "
                                f"{', '.join(PIPELINES)}")
        conditioning, denoiser = PIPELINES[name]
        if not _named(index.get(denoiser)):
            raise PipelineError(f"{path}: model_index.json has no {denoiser}, which a {name} needs")
        for component, allowed in COMPONENTS[name].items():
            entry = index.get(component)
            if _named(entry) and entry[1] not in allowed:
                raise PipelineError(f"{path}: a {name}'s {component} is a {entry[1]}; modelsci reads "
                                    f"{' or '.join(allowed)} there")
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
        name, conditioning, denoiser, latent = _json(path / "config.json").get("_class_name"), "none", "unet", False
        if name not in _UNET:
            raise PipelineError(f"{path}: a bare {name!r} folder; modelsci samples a bare {_UNET[0]}, or a pipeline "
                                "folder (model_index.json)")
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
    _check_numbers(config, where)
    if config.get("thresholding"):
        raise PipelineError(f"{where} uses dynamic thresholding, which modelsci does not sample with")
    if config.get("trained_betas") is not None:
        raise PipelineError(f"{where} gives its betas as a list (trained_betas), which modelsci does not read")
    if config.get("rescale_betas_zero_snr"):
        raise PipelineError(f"{where} rescales its betas to zero terminal SNR, which modelsci does not sample with")


def _check_numbers(config: dict[str, Any], where: str) -> None:
    """The schedule's numbers are of the right type and range (diffusers would fail on them at run time)."""
    def number(key: str, default: float, low: float, high: float, integer: bool = False) -> float:
        value = config.get(key, default)
        kind = int if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kind) or not low <= value <= high:
            what = "a whole number" if integer else "a number"
            raise PipelineError(f"{where} has {key} {value!r}: it must be {what} from {low:g} to {high:g}")
        return value

    T = number("num_train_timesteps", 1000, 1, 100_000, integer=True)
    start = number("beta_start", 0.0001, 0, 1)
    number("beta_end", 0.02, start, 1)
    number("steps_offset", 0, 0, T - 1, integer=True)
    if config.get("clip_sample", True):
        number("clip_sample_range", 1.0, 1e-6, 1e6)
    for key in ("clip_sample", "set_alpha_to_one", "thresholding", "rescale_betas_zero_snr"):
        if key in config and not isinstance(config[key], bool):
            raise PipelineError(f"{where} has {key} {config[key]!r}: it must be true or false")
