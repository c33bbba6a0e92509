"""The Ray executor against the local one: the demo's queue, per-run overhead, committer throughput.

Three measurements, in one run so that their ratios are comparable:
1. the demo's queue (its models trained and submitted once, the catalogue copied): the local
   executor with ``--jobs N`` against Ray on this one node with N CPUs (ratio Ray / local);
2. ``--cheap`` runs of one model with an analysis that does nothing but return one finding: wall
   time per run on each executor, i.e. each executor's own overhead per run, and where it goes
   (``QueueSummary.timings``, in ms per run: task start, shipped files written, model load, the
   analysis, result transfer, commit; ``loads`` says how many runs loaded the model rather than
   reusing their worker's);
3. the committer alone: the same number of finished bundles landed one by one (runs per second),
   the rate above which adding workers no longer shortens a queue.

Run: python benchmarks/bench_ray.py [--jobs 2] [--cheap 500] [--skip-demo]
(the breakdown alone, in about a minute on 2 cores: --skip-demo --cheap 60 --skip-committer)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import ray

from modelsci import catalogue
from modelsci.catalogue.store import Catalogue
from modelsci.executors.execution import Reporter, execute
from modelsci.executors.local import run_queue_locally
from modelsci.executors.on_ray import run_queue_on_ray

CHEAP = '''
from pydantic import BaseModel, ConfigDict
from modelsci.analyses.base import AnalysisPlugin
from modelsci.schemas.entities import Pillar


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Cheap(AnalysisPlugin):
    name = "bench.cheap"
    version = "1"
    family = "testing"
    pillar = Pillar.verify
    description = "Returns one finding at once."
    Params = Params
    needs_dataset = False

    def run(self, ctx):
        ctx.add_finding(kind="seed", value=float(ctx.seed), statement="seed noted")
'''


class Quiet(Reporter):
    def note(self, message: str) -> None:
        pass


def _install_cheap(site: Path) -> None:
    """The cheap analysis as an installed package (module + entry point), here and in Ray's workers."""
    dist = site / "bench_cheap-1.0.dist-info"
    dist.mkdir(parents=True)
    (site / "bench_cheap.py").write_text(CHEAP)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: bench-cheap\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[modelsci.analyses]\nbench.cheap = bench_cheap:Cheap\n")
    sys.path.insert(0, str(site))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))


def _copy(cat: Catalogue, to: Path) -> Catalogue:
    shutil.copytree(cat.root, to)
    return catalogue.open(to)


def _time_both(cat: Catalogue, tmp: Path, name: str, jobs: int) -> dict[str, float]:
    local, on_ray = _copy(cat, tmp / f"{name}-local"), _copy(cat, tmp / f"{name}-ray")
    clock = time.perf_counter()
    done = run_queue_locally(local, device="cpu", jobs=jobs, reporter=Quiet())
    local_s = time.perf_counter() - clock
    clock = time.perf_counter()
    done_ray = run_queue_on_ray(on_ray, device="cpu", address=None, reporter=Quiet())
    ray_s = time.perf_counter() - clock
    assert len(done.succeeded) == len(done_ray.succeeded) and not done.failed and not done_ray.failed
    runs = len(done.succeeded)
    return {"runs": runs, "local_s": round(local_s, 2), "ray_s": round(ray_s, 2), "ray_over_local": round(ray_s / local_s, 3),
            "local_ms_per_run": round(1000 * local_s / runs, 1), "ray_ms_per_run": round(1000 * ray_s / runs, 1),
            "local_mean_ms": done.timings.per_run_ms(), "ray_mean_ms": done_ray.timings.per_run_ms(),
            "local_median_ms": done.timings.median_ms(), "ray_median_ms": done_ray.timings.median_ms(),
            "local_loads": done.timings.loads, "ray_loads": done_ray.timings.loads}


def _committer_rate(cat: Catalogue, tmp: Path) -> dict[str, float]:
    """Runs landed per second by the committer alone: bundles made first, then landed one by one."""
    target = _copy(cat, tmp / "committer")
    queued = []
    while (run := target.claim("bench")) is not None:
        queued.append(run)
    bundles = [execute(run, "cpu") for run in queued]
    clock = time.perf_counter()
    for bundle in bundles:
        target.commit(bundle, author="bench")
    seconds = time.perf_counter() - clock
    return {"runs": len(bundles), "seconds": round(seconds, 2), "runs_per_s": round(len(bundles) / seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--cheap", type=int, default=500)
    parser.add_argument("--skip-demo", action="store_true")
    parser.add_argument("--skip-committer", action="store_true")
    args = parser.parse_args()
    results: dict[str, object] = {"jobs": args.jobs, "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        _install_cheap(tmp / "site")
        ray.init(num_cpus=args.jobs, include_dashboard=False, log_to_driver=False, configure_logging=False)
        try:
            if not args.skip_demo:
                from rich.console import Console

                from modelsci.demo import lay_out_inputs
                from modelsci.demo_lm import train_demo_lm
                from modelsci.demo_models import offline_hub_cache, train_demo_models
                from modelsci.planner import read_manifest, submit

                demo = catalogue.open(tmp / "demo-cat", create=True)
                inputs = lay_out_inputs(demo.root / "demo")
                train_demo_models(inputs / "models")
                train_demo_lm(inputs / "models")
                offline_hub_cache(inputs / "models" / "hf-cache")
                for manifest in sorted(inputs.glob("*.yaml")):
                    submit(demo, read_manifest(manifest), base_dir=manifest.parent)
                Console(stderr=True).print("demo queue submitted")
                results["demo"] = _time_both(demo, tmp, "demo", args.jobs)
            cheap = catalogue.open(tmp / "cheap-cat", create=True)
            from modelsci.planner import submit
            from tests.models import breast_cancer_skops, write_manifest

            model = breast_cancer_skops(tmp / "lr")
            manifest = write_manifest(tmp / "cheap.yaml", str(model), dataset=False,
                                      analyses=[{"name": "bench.cheap", "seeds": list(range(args.cheap))}])
            submit(cheap, manifest.read_text(), base_dir=tmp)
            results["cheap"] = _time_both(cheap, tmp, "cheap", args.jobs)
            if not args.skip_committer:
                results["committer"] = _committer_rate(cheap, tmp)
        finally:
            ray.shutdown()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
