"""Hallucination filters: seconds per 1,000 samples scored, against the cost of sampling them.

Trajectory variance is free given the sampler's x̂₀ history (its cost is keeping it); LID
costs extra forward passes (DSM: one per draw; FLIPD: one forward and one backward per
probe). Settings: the 1D toy denoiser (trained here, ~25 s) and a tiny diffusers UNet (8x8,
random weights, 40 steps). Ratios are filter time / sampling time, measured in one run.

Run: python benchmarks/bench_filters.py  (writes benchmarks/results/filters.json)
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from modelsci.analyses.hallucination.diffusion import DiffusionModel, Schedule, sample
from modelsci.analyses.hallucination.lid import lid_dsm, lid_flipd
from modelsci.analyses.hallucination.toy import ground_truth, train_denoiser


def measure(model: DiffusionModel, n: int, keep_last: int = 10) -> dict[str, float]:
    generator = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    sample(model, n, generator, keep_last=1)
    plain = time.perf_counter() - start
    start = time.perf_counter()
    samples, history = sample(model, n, torch.Generator().manual_seed(0), keep_last=keep_last)
    with_history = time.perf_counter() - start
    start = time.perf_counter()
    history.reshape(n, keep_last, -1).var(axis=1).mean(axis=1)
    variance = time.perf_counter() - start
    x = torch.as_tensor(samples)
    start = time.perf_counter()
    lid_dsm(model, x, 2, 8, generator)
    dsm = time.perf_counter() - start
    start = time.perf_counter()
    lid_flipd(model, x, 2, 8, generator)
    flipd = time.perf_counter() - start
    per_k = 1000 / n
    return {
        "samples": n, "sampling_s_per_1k": plain * per_k,
        "trajectory_variance_s_per_1k": (with_history - plain + variance) * per_k,
        "trajectory_variance_ratio": (with_history - plain + variance) / plain,
        "lid_dsm_8_draws_s_per_1k": dsm * per_k, "lid_dsm_ratio": dsm / plain,
        "lid_flipd_8_probes_s_per_1k": flipd * per_k, "lid_flipd_ratio": flipd / plain,
    }


def main() -> None:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    results = {"device": device, "threads": torch.get_num_threads()}
    start = time.perf_counter()
    denoiser = train_denoiser([[1.0], [2.0], [3.0]], 0.05, steps=6000, seed=0)
    results["toy_training_s"] = time.perf_counter() - start
    toy = DiffusionModel(denoiser.to(device), Schedule.linear(1000, 0.001, 0.2), (1,), device, {})
    results["toy_1d"] = measure(toy, 5000)
    samples, _ = sample(toy, 5000, torch.Generator().manual_seed(1), keep_last=1)
    results["toy_1d"]["true_hallucination_rate"] = float(ground_truth(samples, np.array([[1.0], [2.0], [3.0]]), 0.05)[1].mean())

    from diffusers import UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1,
                       block_out_channels=(8, 16), down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4).eval().to(device)
    results["tiny_unet"] = measure(DiffusionModel(unet, Schedule.linear(40, 1e-4, 0.02), (1, 8, 8), device, {}), 200)
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "filters.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
