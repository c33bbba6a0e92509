"""Tiny random diffusers pipelines in each layout modelsci samples, saved with ``save_pretrained``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from modelsci.demo_shapes import shapes_tokenizer


def _vae(size: int) -> Any:
    from diffusers import AutoencoderKL

    return AutoencoderKL(in_channels=1, out_channels=1, latent_channels=4, block_out_channels=(8, 16),
                         down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                         layers_per_block=1, norm_num_groups=4, sample_size=size, scaling_factor=0.5)


def stable_diffusion(folder: Path, *, latent: bool = True, scheduler: Any = None, size: int = 16) -> Path:
    """A Stable Diffusion layout: 1-channel images of ``size``, latent (a VAE, 2x down, 4 channels) or pixel (no VAE)."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    tokenizer = shapes_tokenizer(folder / ".tokenizer", ["one", "square", "disc"])
    channels = 4 if latent else 1
    unet = UNet2DConditionModel(
        sample_size=size // 2 if latent else size, in_channels=channels, out_channels=channels, layers_per_block=1,
        block_out_channels=(16, 32), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16, norm_num_groups=8,
        attention_head_dim=4)
    encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer.get_vocab()), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, max_position_embeddings=8, bos_token_id=0, eos_token_id=1, pad_token_id=1))
    pipeline = StableDiffusionPipeline(
        vae=_vae(size) if latent else None, text_encoder=encoder, tokenizer=tokenizer, unet=unet,
        scheduler=scheduler or DDIMScheduler(num_train_timesteps=100, steps_offset=1, clip_sample=False),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipeline.save_pretrained(folder)
    return folder


def dit(folder: Path, *, scheduler: Any = None, size: int = 16) -> Path:
    """A DiT layout: a 1-layer DiTTransformer2DModel with a learned variance on a tiny VAE's latents."""
    from diffusers import DDIMScheduler, DiTPipeline, DiTTransformer2DModel

    torch.manual_seed(0)
    transformer = DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8,
                                        num_layers=1, sample_size=size // 2, patch_size=2, norm_num_groups=8)
    DiTPipeline(transformer=transformer, vae=_vae(size),
                scheduler=scheduler or DDIMScheduler(num_train_timesteps=100, steps_offset=1),
                id2label={0: "square", 1: "disc"}).save_pretrained(folder)
    return folder


def unconditional(folder: Path, *, pipeline: str = "DDIMPipeline", scheduler: Any = None, size: int = 8) -> Path:
    """A DDPMPipeline or DDIMPipeline with a tiny UNet2DModel."""
    import diffusers

    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(sample_size=size, in_channels=1, out_channels=1, layers_per_block=1,
                                 block_out_channels=(8, 16), down_block_types=("DownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4)
    default = diffusers.DDIMScheduler(num_train_timesteps=100) if pipeline == "DDIMPipeline" \
        else diffusers.DDPMScheduler(num_train_timesteps=40)
    getattr(diffusers, pipeline)(unet=unet, scheduler=scheduler or default).save_pretrained(folder)
    return folder
