"""Regenerate the second toy denoiser the hallucination tests load: `python tests/data/toy-denoisers/make.py`.

It is `train_denoiser` on three Gaussians at 1, 2 and 3 (std 0.05) with seed 1, exactly as the test
trained it before its weights were committed (training takes about a minute). Seed 0's is the demo's
toy, shipped in examples/demo/toy_mixture_1d (`python -m modelsci.demo_models toy_mixture_1d examples/demo`)."""

from pathlib import Path

from modelsci.analyses.hallucination.toy import train_denoiser

MODES = [[1.0], [2.0], [3.0]]
STD = 0.05

if __name__ == "__main__":
    here = Path(__file__).parent
    for seed in (1,):
        train_denoiser(MODES, STD, steps=6000, seed=seed, folder=here / f"seed{seed}")
