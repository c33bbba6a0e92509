"""``modelsci demo``: the main job on the embedded default, through the contributor's own path.

The demo lays its shipped manifests and data out in ``<catalogue>/demo/``, trains its small
models there in seconds (``demo/models/``, skipped when already there), submits each manifest
exactly as ``modelsci submit`` does, runs the queue with progress bars, exports the catalogue,
builds the site, and answers three example queries. Running it twice reuses everything: ids
are content hashes and submitted runs are not planned again.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from rich.console import Console

from modelsci.catalogue.store import Catalogue
from modelsci.catalogue.transfer import export
from modelsci.demo_clip import train_demo_clip
from modelsci.demo_lm import train_demo_lm
from modelsci.demo_models import offline_hub_cache, train_demo_models
from modelsci.demo_shapes import train_demo_shapes
from modelsci.executors import run_queue
from modelsci.planner import read_manifest, submit
from modelsci.progress import ProgressReporter
from modelsci.resources import demo_inputs
from modelsci.site_build import build_site

__all__ = ["EXAMPLE_QUERIES", "run_demo"]

EXAMPLE_QUERIES = [
    "SELECT regexp_extract(m.source_uri, '[^/]+$') AS model, m.architecture, f.kind, round(f.value, 4) AS value, round(f.ci_low, 4) AS ci_low, "
    "round(f.ci_high, 4) AS ci_high FROM findings_current f JOIN models m ON m.id = f.model_id "
    "WHERE f.kind = 'accuracy' ORDER BY value DESC",
    "SELECT analysis_id, status, count(*) AS runs FROM runs GROUP BY ALL ORDER BY ALL",
    "SELECT seq, author, message, n_findings FROM commits ORDER BY seq DESC LIMIT 3",
]


def run_demo(cat: Catalogue, console: Console, *, large: bool = False, executor: str = "local",
             address: str | None = None) -> None:
    """Train the demo models, submit and run the demo manifests, export, and show answers.

    ``large`` adds the settings meant for GPU machines (the manifests in ``large/``).
    """
    demo_dir = lay_out_inputs(cat.root / "demo")
    with console.status("training the demo models ..."):
        trained = train_demo_models(demo_dir / "models", large=large)
        trained += train_demo_lm(demo_dir / "models")
        trained += train_demo_clip(demo_dir / "models", demo_dir / "digits_captions.parquet")
        trained += train_demo_shapes(demo_dir / "models", large=large)
        offline_hub_cache(demo_dir / "models" / "hf-cache")
    if trained:
        console.print(f"trained {', '.join(trained)}", highlight=False)
    manifests = sorted(demo_dir.glob("*.yaml")) + (sorted((demo_dir / "large").glob("*.yaml")) if large else [])
    for manifest in manifests:
        with console.status(f"submitting {manifest.name} ..."):
            submission = submit(cat, read_manifest(manifest), base_dir=manifest.parent)
        console.print(f"submitted {manifest.name}: {len(submission.queued)} run(s) queued, "
                      f"{len(submission.already_planned)} already planned", highlight=False)
    with ProgressReporter(console) as reporter:
        summary = run_queue(cat, executor=executor, address=address, reporter=reporter)
    console.print(f"{len(summary.succeeded)} run(s) succeeded, {len(summary.failed)} failed", highlight=False)
    with console.status("exporting ..."):
        export(cat, cat.root / "export")
    with console.status("building the site ..."):
        site = build_site(cat)
    for note in site.notes:
        console.print(f"note: {note}", highlight=False)
    console.print(f"\ncatalogue: {cat.root}", highlight=False)
    console.print(f"export (Parquet + manifest): {cat.root / 'export'}", highlight=False)
    console.print(f"site: {site.out / 'index.html'} ({site.pages} pages; `modelsci site serve` serves it)",
                  highlight=False)
    for query in EXAMPLE_QUERIES:
        console.print(f"\n$ modelsci sql \"{query}\"", style="bold", highlight=False)
        for row in cat.sql(query).to_pylist():
            console.print("  " + ", ".join(f"{k}={v}" for k, v in row.items()), highlight=False)


def lay_out_inputs(folder: Path) -> Path:
    """Copy the shipped manifests and data into ``folder`` (models are trained beside them)."""
    shipped = demo_inputs()
    for file in [*shipped.glob("*.yaml"), *shipped.glob("*.csv"), *shipped.glob("large/*.yaml")]:
        target = folder / file.relative_to(shipped)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(file, target)
    return folder
