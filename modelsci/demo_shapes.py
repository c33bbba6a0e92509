"""Text-to-image diffusion pipelines trained on the shapes setting: for the demo, tests and benchmarks.

Each pipeline is saved in the Stable Diffusion layout (``model_index.json``; ``unet`` a
``UNet2DConditionModel`` with cross-attention; ``text_encoder`` a small ``CLIPTextModel``;
``tokenizer`` a ``CLIPTokenizer`` whose vocabulary holds just the prompt words; ``scheduler`` a
``DDPMScheduler``), all safetensors, with a ``modelsci.json`` data note mapping each prompt to
the shape it asks for. The prompts are ``one square`` and ``one disc``; a share ``UNCONDITIONAL``
(15%) of the training examples gets the empty prompt instead, so that classifier-free guidance has
an unconditional branch to push away from. A sample is a hallucination when it holds more or fewer
than one shape, or the wrong kind (``modelsci.analyses.hallucination.shapes.shapes_truth``).

The scheduler is DDPM with linear betas scaled to the number of training timesteps (100 for the
16x16 model, so that sampling every timestep stays cheap on a CPU; 1,000 for the GPU settings),
``timestep_spacing="trailing"`` so that any number of inference steps, all 100 included, starts
from the last timestep, and ``steps_offset=1`` as diffusers' Stable Diffusion pipeline expects.
DDPM rather than DDIM: ancestral sampling is the setting the filters were first built and tested
on, and the sampler can still take fewer steps with ``num_inference_steps`` (the demo takes 50).

- ``train_shapes_text_16`` makes the default demo's model: 16x16 pixels, one channel, no VAE
  (the ``vae`` entry is null, so the pipeline samples in pixel space). Training is deterministic
  (fixed seeds, one thread) and takes about 70 s on one CPU core. The demo and the tests
  use the weights it made, shipped in ``examples/demo/shapes_text_16``;
  ``python -m modelsci.demo_shapes examples/demo/shapes_text_16`` makes them again (and prints the
  hallucination rates it measures), and the demo trains them itself when they are missing.
- ``train_shapes_text_64`` and ``train_shapes_latent_32`` are the settings for GPU machines
  (``modelsci demo --large``): the same prompts at 64x64 pixels, and a latent pipeline whose small
  ``AutoencoderKL`` is trained first (32x32 images to 8x8x4 latents) and the UNet then on its latents.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from modelsci.analyses.hallucination.shapes import KINDS, draw_shapes, shapes_truth
from modelsci.demo_models import one_thread, shipped_or_trained

__all__ = ["CONDITIONS", "LARGE", "UNCONDITIONAL", "sample_shapes", "shapes_tokenizer", "train_demo_shapes",
           "train_shapes_latent_32", "train_shapes_text", "train_shapes_text_16", "train_shapes_text_64"]

CONDITIONS = {f"one {kind}": kind for kind in KINDS}
"""Each prompt and the shape it asks for (the data note's ``conditions``)."""
UNCONDITIONAL = 0.15
"""Share of training examples given the empty prompt (classifier-free guidance's unconditional branch)."""
_SPECIAL = ("<|startoftext|>", "<|endoftext|>")
_CARD = ("---\nlicense: apache-2.0\ntags: [modelsci-demo, diffusion, text-to-image, shapes]\n---\n"
         "A text-to-image diffusion pipeline trained on {size}x{size} images holding one square or disc each, "
         "with the prompts `one square` and `one disc` ({latent}). A sample holding more or fewer than one shape, "
         "or the wrong kind, is a hallucination.\n")


def shapes_tokenizer(folder: Path, words: list[str], max_length: int = 8) -> Any:
    """A CLIPTokenizer that knows just ``words`` (each glued from its characters left to right), saved in ``folder``."""
    from transformers import CLIPTokenizer

    chars = sorted({c for word in words for c in word})
    vocab = [*_SPECIAL, *chars, *(c + "</w>" for c in chars)]
    merges = []
    for word in words:
        pieces = [*word[:-1], word[-1] + "</w>"]
        glued = pieces[0]
        for piece in pieces[1:]:
            merges.append(f"{glued} {piece}")
            glued += piece
            if glued not in vocab:
                vocab.append(glued)
    folder.mkdir(parents=True, exist_ok=True)
    vocab_file, merges_file = folder / "vocab.json", folder / "merges.txt"
    vocab_file.write_text(json.dumps({token: i for i, token in enumerate(vocab)}))
    merges_file.write_text("#version: 0.2\n" + "\n".join(dict.fromkeys(merges)) + "\n")
    tokenizer = CLIPTokenizer(str(vocab_file), str(merges_file), model_max_length=max_length, pad_token=_SPECIAL[1])
    tokenizer.save_pretrained(folder)
    return tokenizer


def _text_encoder(tokenizer: Any, hidden: int) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel

    bos, eos = tokenizer.convert_tokens_to_ids(list(_SPECIAL))
    return CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=1,
        num_attention_heads=max(1, hidden // 16), max_position_embeddings=tokenizer.model_max_length,
        bos_token_id=bos, eos_token_id=eos, pad_token_id=eos))


def _unet(size: int, channels: int, blocks: tuple[int, ...], attention: tuple[bool, ...], cross: int,
          groups: int) -> Any:
    from diffusers import UNet2DConditionModel

    down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attention)
    up = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention))
    return UNet2DConditionModel(sample_size=size, in_channels=channels, out_channels=channels, layers_per_block=1,
                                block_out_channels=blocks, down_block_types=down, up_block_types=up,
                                cross_attention_dim=cross, attention_head_dim=8, norm_num_groups=groups)


def _prompts(kinds: list[str]) -> list[str]:
    return [f"one {kind}" for kind in kinds]


def train_shapes_text(folder: Path, *, size: int = 16, blocks: tuple[int, ...] = (16, 32, 32),
                      attention: tuple[bool, ...] = (False, False, True), hidden: int = 32, groups: int = 8,
                      images: int = 4000, steps: int = 600, batch: int = 64, lr: float = 2e-3, timesteps: int = 100,
                      seed: int = 0, device: str = "cpu", encode: Any = None, latent_channels: int | None = None,
                      vae: Any = None) -> Path:
    """Train a text-conditional UNet (and its text encoder) on one-shape images; save the pipeline.

    ``encode`` (images -> latents) and ``vae`` make it a latent pipeline; without them it samples pixels.
    """
    from diffusers import DDPMScheduler, StableDiffusionPipeline

    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    kinds = [KINDS[k % len(KINDS)] for k in range(images)]
    pixels, _ = draw_shapes(images, size, rng, kinds)
    data = torch.tensor(pixels)
    if encode is not None:
        data = encode(data)
    tokenizer = shapes_tokenizer(folder / "tokenizer", sorted({w for p in CONDITIONS for w in p.split()}))
    text_encoder = _text_encoder(tokenizer, hidden).to(device)
    unet = _unet(data.shape[-1], data.shape[1], blocks, attention, hidden, groups).to(device)
    # Row 0 is the empty prompt, then one row per kind: each example's prompt is an index into them.
    ids = tokenizer(["", *_prompts(list(KINDS))], padding="max_length", return_tensors="pt").input_ids.to(device)
    labels = torch.tensor([1 + KINDS.index(k) for k in kinds])
    scheduler = DDPMScheduler(num_train_timesteps=timesteps, beta_start=1e-4 * 1000 / timesteps,
                              beta_end=0.02 * 1000 / timesteps, clip_sample=False,
                              steps_offset=1, timestep_spacing="trailing")
    abar = scheduler.alphas_cumprod.to(device)
    params = [*unet.parameters(), *text_encoder.parameters()]
    optimizer = torch.optim.AdamW(params, lr=lr)
    decay = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / steps)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        rows = torch.randint(0, len(data), (batch,), generator=generator)
        drop = torch.rand(batch, generator=generator) < UNCONDITIONAL
        prompt = torch.where(drop, 0, labels[rows])
        t = torch.randint(0, timesteps, (batch,), generator=generator).to(device)
        x0 = data[rows].to(device)
        noise = torch.randn(x0.shape, generator=generator).to(device)
        a = abar[t].reshape(-1, 1, 1, 1)
        states = text_encoder(ids)[0][prompt.to(device)]
        loss = torch.nn.functional.mse_loss(unet(a.sqrt() * x0 + (1 - a).sqrt() * noise, t, states).sample, noise)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        decay.step()
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder.cpu().eval(), tokenizer=tokenizer,
                                   unet=unet.cpu().eval(), scheduler=scheduler, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(folder)
    (folder / "modelsci.json").write_text(json.dumps({"data": {"kind": "shapes", "conditions": CONDITIONS}}))
    latent = "latents of a small AutoencoderKL" if vae is not None else "pixel space, one channel, no VAE"
    (folder / "README.md").write_text(_CARD.format(size=size, latent=latent))
    return folder


def train_shapes_text_16(folder: Path) -> Path:
    """The default demo's pipeline: 16x16 pixels, 600 steps of 64 images (about 70 s on one CPU core)."""
    with one_thread():
        return train_shapes_text(folder)


def train_shapes_text_64(folder: Path, *, steps: int = 4000) -> Path:
    """64x64 pixels (GPU machines). Step budget: 4,000 steps of 64 images (sized for about two minutes of an
    H100-class GPU; hours on a CPU)."""
    return train_shapes_text(folder, size=64, blocks=(32, 64, 64, 128), attention=(False, False, True, True),
                             hidden=64, images=20000, steps=steps, lr=1e-3, timesteps=1000, device=_device())


def train_shapes_latent_32(folder: Path, *, vae_steps: int = 2000, steps: int = 6000) -> Path:
    """A latent pipeline (GPU machines). Step budget: an AutoencoderKL trained on 32x32 images for 2,000 steps of 64
    (to 8x8x4 latents, scaled to unit std), then the UNet on its latents for 6,000 steps of 64 (sized for about
    two minutes of an H100-class GPU)."""
    from diffusers import AutoencoderKL

    device = _device()
    rng = np.random.default_rng(1)
    torch.manual_seed(1)
    data = torch.tensor(draw_shapes(8000, 32, rng)[0])
    vae = AutoencoderKL(in_channels=1, out_channels=1, latent_channels=4, block_out_channels=(32, 64, 64),
                        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
                        layers_per_block=1, norm_num_groups=16, sample_size=32).to(device)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(1)
    for _ in range(vae_steps):
        x = data[torch.randint(0, len(data), (64,), generator=generator)].to(device)
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample()).sample
        loss = torch.nn.functional.mse_loss(recon, x) + 1e-6 * posterior.kl().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    vae.eval()

    @torch.no_grad()
    def encode(images: torch.Tensor) -> torch.Tensor:
        return torch.cat([vae.encode(b.to(device)).latent_dist.mean.cpu() for b in images.split(256)])

    vae.register_to_config(scaling_factor=float(1 / encode(data[:2000]).std()))

    def scaled(images: torch.Tensor) -> torch.Tensor:
        return encode(images) * vae.config.scaling_factor

    return train_shapes_text(folder, size=32, blocks=(64, 128), attention=(True, True), hidden=64, groups=16,
                             images=8000, steps=steps, lr=5e-4, timesteps=1000, device=device, encode=scaled,
                             vae=vae.cpu())


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


LARGE = {"shapes_text_64": train_shapes_text_64, "shapes_latent_32": train_shapes_latent_32}
"""The shapes settings meant for GPU machines (``modelsci demo --large``), by the folder they are trained into."""


def train_demo_shapes(models: Path, *, large: bool = False) -> list[str]:
    """Put the 16x16 text-to-image shapes pipeline in ``models/shapes_text_16`` (the shipped weights, else
    trained here), and with ``large`` the GPU settings too. Returns the names of the models trained."""
    trained = shipped_or_trained(models, "shapes_text_16", train_shapes_text_16)
    for name, train in LARGE.items() if large else ():
        trained += shipped_or_trained(models, name, train)
    return trained


def sample_shapes(folder: Path, prompts: list[str], guidance_scale: float, *, seed: int = 0,
                  batch: int = 100) -> np.ndarray:
    """Images sampled by diffusers' own StableDiffusionPipeline from a saved shapes pipeline (every timestep)."""
    from diffusers import StableDiffusionPipeline

    note = json.loads((folder / "model_index.json").read_text())
    vae = {} if note.get("vae", [None])[0] else {"vae": None}
    pipe = StableDiffusionPipeline.from_pretrained(folder, use_safetensors=True, safety_checker=None, **vae)
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(seed)
    # Without a VAE diffusers still divides the image size by 8 for the latents' size.
    side = pipe.unet.config.sample_size * (pipe.vae_scale_factor if pipe.vae is not None else 8)
    out = []
    for start in range(0, len(prompts), batch):
        chunk = prompts[start:start + batch]
        with torch.no_grad():
            result = pipe(chunk, height=side, width=side, guidance_scale=guidance_scale,
                          num_inference_steps=pipe.scheduler.config.num_train_timesteps, generator=generator,
                          output_type="latent").images
            if pipe.vae is not None:
                result = pipe.vae.decode(result / pipe.vae.config.scaling_factor).sample
        out.append(result.float().numpy())
    return np.concatenate(out)


def _rates(folder: Path, n: int = 200, scales: tuple[float, ...] = (1.0, 3.0)) -> dict[float, float]:
    """The share of ``n`` samples (half per prompt) that ``shapes_truth`` calls hallucinated, per guidance scale."""
    prompts = [list(CONDITIONS)[k % len(CONDITIONS)] for k in range(n)]
    expected = [CONDITIONS[p] for p in prompts]
    return {scale: float(shapes_truth(sample_shapes(folder, prompts, scale), expected)[1].mean())
            for scale in scales}


if __name__ == "__main__":
    out = train_shapes_text_16(Path(sys.argv[1]))
    for scale, rate in _rates(out).items():
        print(f"{out}: guidance {scale:g}: {rate:.1%} of 200 samples hallucinated")
