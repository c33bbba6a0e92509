"""Submitting the demo's models and all-MiniLM-L6-v2: what resolving and registering costs.

A submission reads the model's files (hashing every tensor for its id) and the dataset's rows,
checks them, registers them and plans the runs. Its floor is reading and hashing the weight
files once: the peer here is sha256 over every file of the model folder, in the same run.

Run: python benchmarks/bench_submit.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import tempfile
import time
from pathlib import Path

import modelsci
from modelsci.demo import lay_out_inputs
from modelsci.demo_models import offline_hub_cache, train_demo_models
from modelsci.planner import read_manifest, submit


def _hash_folder(folder: Path) -> None:
    for file in sorted(folder.rglob("*")):
        if file.is_file():
            hashlib.sha256(file.read_bytes()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        inputs = lay_out_inputs(Path(tmp) / "demo")
        train_demo_models(inputs / "models")
        offline_hub_cache(inputs / "models" / "hf-cache")
        manifests = sorted(inputs.glob("*.yaml"))
        folders = sorted(p for p in (inputs / "models").iterdir() if p.is_dir() and p.name != "hf-cache")
        folders += list((inputs / "models" / "hf-cache").glob("models--*/snapshots/*"))
        submits, hashes = [], []
        for repeat in range(args.repeats):
            cat = modelsci.open(Path(tmp) / f"cat-{repeat}", create=True)
            start = time.perf_counter()
            for manifest in manifests:
                submit(cat, read_manifest(manifest), base_dir=manifest.parent)
            submits.append(time.perf_counter() - start)
            start = time.perf_counter()
            for folder in folders:
                _hash_folder(folder.resolve())
            hashes.append(time.perf_counter() - start)
    result = {"manifests": len(manifests), "submit_s": round(statistics.median(submits), 3),
              "hash_files_s": round(statistics.median(hashes), 3),
              "ratio": round(statistics.median(submits) / statistics.median(hashes), 2),
              "submit_runs_s": [round(s, 3) for s in submits]}
    print(json.dumps(result, indent=2))
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "submit.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
