"""Make the small models and data files that the example manifests name (committed beside them).

    python examples/make_examples.py

Deterministic and quick on a CPU: the scikit-learn and PyTorch models are the demo's
(trained on the train split modelsci makes of breast_cancer), the rows are that dataset's
test split, and the diffusers pipeline is a tiny UNet with random weights.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import torch
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split

from modelsci.demo_models import TRAINERS
from modelsci.resources import demo_inputs

HERE = Path(__file__).resolve().parent


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for name, folder in (("breast_cancer_logreg", "my_model"), ("breast_cancer_mlp", "my_mlp")):
            TRAINERS[name](Path(tmp) / name)
            shutil.rmtree(HERE / folder, ignore_errors=True)
            shutil.copytree(Path(tmp) / name, HERE / folder)
    frame = load_breast_cancer(as_frame=True).frame
    # The MLP names the columns it reads, so a file gives them by name, in any order.
    config = json.loads((HERE / "my_mlp" / "modelsci.json").read_text())
    config["features"] = [c for c in frame.columns if c != "target"]
    (HERE / "my_mlp" / "modelsci.json").write_text(json.dumps(config, indent=2) + "\n")
    _, test = train_test_split(frame, test_size=0.25, random_state=0, stratify=frame["target"])
    test.rename(columns={"target": "outcome"}).to_csv(HERE / "rows.csv", index=False)
    shutil.copyfile(demo_inputs() / "sentence_pairs.csv", HERE / "sts_pairs.csv")
    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1,
                       block_out_channels=(8, 16), down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4)
    shutil.rmtree(HERE / "my_ddpm_pipeline", ignore_errors=True)
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=100)).save_pretrained(HERE / "my_ddpm_pipeline")


if __name__ == "__main__":
    main()
