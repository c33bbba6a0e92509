"""Site build on a generated catalogue: 1,000 models and 100,000 findings.

Reports build time, site size and the search index size (targets: under 2 minutes on 2 cores,
index under 5 MB). Findings are generated, not computed: each model gets accuracy with a CI
and 99 feature-importance findings over a shared set of feature names.

Run: python benchmarks/bench_site.py [--models 1000] [--findings-per-model 100]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from modelsci import catalogue
from modelsci.schemas import Analysis, Dataset, ModelInstance, ResultBundle, Run, params_hash
from modelsci.schemas.identity import tensor_hash_of_arrays
from modelsci.site_build import build_site


def generate(cat: catalogue.Catalogue, models: int, per_model: int) -> None:
    dataset = Dataset(id="sha256:" + "d" * 64, source_uri="sklearn://breast_cancer", split="test", rows=143)
    analyses = [Analysis(id="evaluation.performance@1", name="evaluation.performance", version="1",
                         family="evaluation", pillar="verify"),
                Analysis(id="attribution.shapley@1", name="attribution.shapley", version="1",
                         family="attribution", pillar="explore")]
    rng = np.random.default_rng(0)
    features = [f"feature {i}" for i in range(per_model - 1)]
    bundle = ResultBundle(datasets=[dataset], analyses=analyses)
    for m in range(models):
        weights = {"w": rng.normal(size=8).astype(np.float32)}
        model = ModelInstance(id=tensor_hash_of_arrays(weights), source_uri=f"hf://bench/model-{m}",
                              framework="sklearn", task="tabular-classification", modality="tabular",
                              parameter_count=8)
        bundle.models.append(model)
        for analysis in analyses:
            run = Run(id=f"run-{m}-{analysis.name}", model_id=model.id, dataset_id=dataset.id,
                      analysis_id=analysis.id, params={}, params_hash=params_hash({}), status="succeeded")
            bundle.runs.append(run)
            if analysis.family == "evaluation":
                acc = float(rng.uniform(0.8, 0.99))
                bundle.add_finding(run, kind="accuracy", value=acc, ci=(acc - 0.02, acc + 0.02), n=143,
                                   unit="fraction", statement=f"accuracy of model-{m} is {acc:.3f}")
            else:
                for name in features:
                    v = float(abs(rng.normal()))
                    bundle.add_finding(run, kind="feature_importance", subject=name, value=v,
                                       ci=(v * 0.8, v * 1.2), n=5, unit="mean |attribution|",
                                       statement=f"mean |attribution| of {name} for model-{m} is {v:.3g}")
        if (m + 1) % 50 == 0:
            cat.commit(bundle, message=f"bench models up to {m + 1}")
            bundle = ResultBundle()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--findings-per-model", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cat = catalogue.open(Path(tmp) / "cat", create=True)
        start = time.perf_counter()
        generate(cat, args.models, args.findings_per_model)
        generated_s = time.perf_counter() - start
        findings = cat.sql("SELECT count(*) AS n FROM findings").to_pylist()[0]["n"]
        start = time.perf_counter()
        report = build_site(cat, Path(tmp) / "site")
        build_s = time.perf_counter() - start
        files = [p for p in report.out.rglob("*") if p.is_file()]
        result = {
            "models": args.models, "findings": findings, "generate_s": round(generated_s, 1),
            "build_s": round(build_s, 1), "pages": report.pages, "finding_pages": report.finding_pages,
            "site_files": len(files), "site_mb": round(sum(p.stat().st_size for p in files) / 2**20, 1),
            "search_index_mb": round((report.out / "search" / "search_index.json").stat().st_size / 2**20, 2),
            "targets": {"build_s": "< 120", "search_index_mb": "< 5"},
        }
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "site.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
