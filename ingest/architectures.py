"""Plain PyTorch architectures that modelsci knows, so their weights can live in safetensors.

A folder holds ``model.safetensors`` and ``modelsci.json`` (``{"architecture": "mlp",
"args": {...}}``); loading builds the module from the config and loads the weights. Nothing
from the folder is ever executed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

__all__ = ["ARCHITECTURES", "CONFIG_NAME", "MLP", "DenoiserMLP", "SmallCNN", "build", "input_size", "parameter_shapes",
           "save_torch_model", "shape_mismatch"]

CONFIG_NAME = "modelsci.json"
"""Names a plain PyTorch model's architecture and its arguments."""


class MLP(nn.Module):
    """Fully connected network on a flat feature vector; outputs logits (or one value)."""

    def __init__(self, in_features: int, hidden: list[int] | tuple[int, ...] = (64,), out_features: int = 2) -> None:
        super().__init__()
        self.in_features = in_features
        sizes = [in_features, *hidden]
        layers: list[nn.Module] = []
        for a, b in zip(sizes, sizes[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        layers.append(nn.Linear(sizes[-1], out_features))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SmallCNN(nn.Module):
    """Two conv layers on an image given flat (rows x C*H*W) or shaped; outputs logits."""

    def __init__(self, image_shape: list[int] | tuple[int, int, int] = (1, 8, 8),
                 channels: list[int] | tuple[int, int] = (16, 32), n_classes: int = 10) -> None:
        super().__init__()
        self.image_shape = tuple(image_shape)
        c, h, w = self.image_shape
        self.in_features = c * h * w  # it reads images flat, as rows of C*H*W values
        self.features = nn.Sequential(
            nn.Conv2d(c, channels[0], 3, padding=1), nn.ReLU(),
            nn.Conv2d(channels[0], channels[1], 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
        )
        self.head = nn.Linear(channels[1] * 4, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], *self.image_shape)
        return self.head(self.features(x).flatten(1))


class DenoiserMLP(nn.Module):
    """A noise predictor eps(x_t, t) for low-dimensional data: an MLP on x_t and a sinusoidal
    embedding of t / T."""

    def __init__(self, dim: int = 1, hidden: int = 128, layers: int = 3, timesteps: int = 1000,
                 frequencies: int = 16) -> None:
        super().__init__()
        self.timesteps = timesteps
        self.register_buffer("freqs", torch.exp(torch.linspace(0.0, 6.0, frequencies)), persistent=False)
        sizes = [dim + 2 * frequencies, *[hidden] * layers]
        body: list[nn.Module] = []
        for a, b in zip(sizes, sizes[1:]):
            body += [nn.Linear(a, b), nn.SiLU()]
        body.append(nn.Linear(sizes[-1], dim))
        self.net = nn.Sequential(*body)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        phase = (t.to(x.dtype).reshape(-1, 1) / self.timesteps) * self.freqs.to(x.dtype)[None, :]
        return self.net(torch.cat([x, torch.sin(phase), torch.cos(phase)], dim=1))


ARCHITECTURES: dict[str, type[nn.Module]] = {"mlp": MLP, "cnn": SmallCNN, "denoiser_mlp": DenoiserMLP}


def parameter_shapes(config: dict[str, Any]) -> dict[str, list[int]]:
    """The shape of every tensor in the state dict a ``modelsci.json`` describes, found on the
    meta device: nothing is allocated, however large the arguments."""
    with torch.device("meta"):
        module = _construct(config)
    return {name: list(t.shape) for name, t in module.state_dict().items()}


def input_size(config: dict[str, Any]) -> int | None:
    """How many values a row fed to the architecture holds (None for one that reads no feature rows)."""
    with torch.device("meta"):
        module = _construct(config)
    size = getattr(module, "in_features", None)
    return int(size) if isinstance(size, int) else None


def build(config: dict[str, Any], weight_shapes: Mapping[str, list[int]]) -> nn.Module:
    """The module a ``modelsci.json`` describes, with fresh weights, once its shapes are known to
    equal ``weight_shapes`` (the weights it will load): a config cannot allocate what they don't hold."""
    mismatch = shape_mismatch(parameter_shapes(config), weight_shapes)
    if mismatch:
        raise ValueError(f"{CONFIG_NAME}: {mismatch}")
    return _construct(config)


def shape_mismatch(expected: Mapping[str, list[int]], actual: Mapping[str, list[int]]) -> str | None:
    """How an architecture's tensors differ from the weights' (None when they are the same)."""
    missing, unexpected = sorted(expected.keys() - actual.keys()), sorted(actual.keys() - expected.keys())
    if missing or unexpected:
        parts = ([f"the weights lack {', '.join(missing[:3])}"] if missing else []) + (
            [f"the architecture has no {', '.join(unexpected[:3])}"] if unexpected else [])
        return "the architecture does not match the weights: " + "; ".join(parts)
    for name in sorted(expected):
        if list(expected[name]) != list(actual[name]):
            return (f"the architecture's {name} has shape {list(expected[name])}, "
                    f"the weights' {list(actual[name])}")
    return None


def _construct(config: dict[str, Any]) -> nn.Module:
    name = config.get("architecture")
    if name not in ARCHITECTURES:
        raise ValueError(f"{CONFIG_NAME}: unknown architecture {name!r}; modelsci knows {sorted(ARCHITECTURES)}")
    args = config.get("args", {})
    if not isinstance(args, dict):
        raise ValueError(f"{CONFIG_NAME}: args of {name!r} must be an object, not {type(args).__name__}")
    try:
        return ARCHITECTURES[name](**args)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"{CONFIG_NAME}: bad args for {name!r}: {exc}") from None


def save_torch_model(module: nn.Module, architecture: str, args: dict[str, Any], folder: str | Path,
                     card: str | None = None, extra: dict[str, Any] | None = None) -> Path:
    """Write ``model.safetensors`` + ``modelsci.json`` (+ a README card) for a known architecture.

    ``extra`` goes into ``modelsci.json`` beside the architecture (a denoiser's noise
    ``schedule``, the ``data`` it was trained on)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()},
              str(folder / "model.safetensors"))
    (folder / CONFIG_NAME).write_text(json.dumps({"architecture": architecture, "args": args, **(extra or {})}, indent=2))
    if card is not None:
        (folder / "README.md").write_text(card)
    return folder
