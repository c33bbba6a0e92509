"""Regenerate the toy denoisers the hallucination tests load: `python tests/data/toy-denoisers/make.py`.

Each is `train_denoiser` on three Gaussians at 1, 2 and 3 (std 0.05) with its seed, exactly as the
test trained them before their weights were committed (training takes about a minute per seed)."""

from pathlib import Path

from modelsci.analyses.hallucination.toy import train_denoiser

MODES = [[1.0], [2.0], [3.0]]
STD = 0.05

if __name__ == "__main__":
    here = Path(__file__).parent
    for seed in (0, 1):
        train_denoiser(MODES, STD, steps=6000, seed=seed, folder=here / f"seed{seed}")
