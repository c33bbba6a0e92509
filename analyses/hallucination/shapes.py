"""The shapes setting: images holding exactly one simple shape; more than one copy in a sample
is a hallucination (the ground truth counts connected blobs).

For GPU machines (``modelsci demo --large``): a small diffusers UNet trained on 64x64 images.
The pipeline folder carries a ``modelsci.json`` with ``{"data": {"kind": "shapes"}}`` so the
hallucination analyses know how to judge its samples.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

__all__ = ["count_shapes", "shape_images", "shapes_truth", "train_shapes_unet"]


def shape_images(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 1, size, size) images in [-1, 1]: one filled square or disc each, at a random place."""
    images = -np.ones((n, 1, size, size), dtype=np.float32)
    yy, xx = np.mgrid[:size, :size]
    for k in range(n):
        r = int(rng.integers(size // 10 + 1, size // 5 + 2))
        cy, cx = rng.integers(r, size - r, 2)
        if rng.random() < 0.5:
            mask = (np.abs(yy - cy) <= r) & (np.abs(xx - cx) <= r)
        else:
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        images[k, 0][mask] = 1.0
    return images


def count_shapes(images: np.ndarray, threshold: float = 0.0, min_pixels: int = 4) -> np.ndarray:
    """Connected blobs above ``threshold`` (of at least ``min_pixels``) per image."""
    from scipy import ndimage

    counts = np.zeros(len(images), dtype=int)
    for k, image in enumerate(images.reshape(len(images), -1, *images.shape[-2:])):
        labels, found = ndimage.label(image.max(axis=0) > threshold)
        sizes = np.bincount(labels.ravel())[1:] if found else np.array([])
        counts[k] = int((sizes >= min_pixels).sum())
    return counts


def shapes_truth(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(in support: exactly one shape, hallucinated: more than one)."""
    counts = count_shapes(samples)
    return counts == 1, counts > 1


def train_shapes_unet(folder: Path, *, size: int = 64, images: int = 20000, steps: int = 20000,
                      timesteps: int = 1000, batch: int = 64, seed: int = 0, device: str = "cpu") -> Path:
    """Train a small UNet2DModel on one-shape images; save a DDPMPipeline with its data note."""
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    data = torch.tensor(shape_images(images, size, rng))
    channels = (32, 64, 64) if size >= 32 else (8, 16)
    unet = UNet2DModel(sample_size=size, in_channels=1, out_channels=1, layers_per_block=1,
                       block_out_channels=channels,
                       down_block_types=("DownBlock2D",) * len(channels),
                       up_block_types=("UpBlock2D",) * len(channels),
                       norm_num_groups=8 if size >= 32 else 4).to(device)
    scheduler = DDPMScheduler(num_train_timesteps=timesteps)
    abar = scheduler.alphas_cumprod.to(device)
    opt = torch.optim.AdamW(unet.parameters(), lr=2e-4)
    for _ in range(steps):
        x0 = data[torch.randint(0, len(data), (batch,))].to(device)
        t = torch.randint(0, timesteps, (batch,), device=device)
        noise = torch.randn_like(x0)
        a = abar[t].reshape(-1, 1, 1, 1)
        loss = torch.nn.functional.mse_loss(unet(a.sqrt() * x0 + (1 - a).sqrt() * noise, t).sample, noise)
        opt.zero_grad()
        loss.backward()
        opt.step()
    folder.mkdir(parents=True, exist_ok=True)
    DDPMPipeline(unet=unet.cpu().eval(), scheduler=scheduler).save_pretrained(folder)
    (folder / "modelsci.json").write_text(json.dumps({"data": {"kind": "shapes"}}))
    (folder / "README.md").write_text("---\nlicense: apache-2.0\ntags: [modelsci-demo, diffusion, shapes]\n---\n"
                                      f"A UNet trained on {size}x{size} images holding one square or disc each.\n")
    return folder
