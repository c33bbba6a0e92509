"""Peak memory is each run's own: a small run after a large one in the same process reports little."""

from __future__ import annotations

import json
from pathlib import Path

from modelsci import catalogue
from tests.conftest import modelsci
from tests.models import breast_cancer_skops, installed_plugin, write_manifest

PLUGIN = '''
import time
import numpy as np
from pydantic import BaseModel, ConfigDict
from modelsci.analyses.base import AnalysisPlugin
from modelsci.schemas.entities import Pillar


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")
    megabytes: int = 0


class Hog(AnalysisPlugin):
    name = "testing.hog"
    version = "1"
    family = "testing"
    pillar = Pillar.verify
    description = "Holds an array of the given size for 0.2 s."
    Params = Params

    def run(self, ctx):
        block = np.ones(ctx.params.megabytes * 2**17)  # float64: 2**17 per MiB, every page touched
        time.sleep(0.2)  # ten samples of the executor's 20 ms sampler
        ctx.add_finding(kind="held", value=float(block.sum()), statement="array held")
'''


def test_a_small_run_after_a_large_one_in_one_process_reports_its_own_peak(tmp_path: Path) -> None:
    env = installed_plugin(tmp_path / "plugin_site", "hog_plugin", PLUGIN, "testing.hog", "Hog")
    model = str(breast_cancer_skops(tmp_path / "lr"))
    cat_dir = tmp_path / "cat"
    for megabytes, run in ((400, []), (0, ["--run", "--device", "cpu"])):
        manifest = write_manifest(tmp_path / f"m{megabytes}.yaml", model,
                                  analyses=[{"name": "testing.hog", "params": {"megabytes": megabytes}}])
        modelsci("submit", str(manifest), *run, catalogue_dir=cat_dir, env=env)  # the queue runs oldest first
    runs = catalogue.open(cat_dir, create=True).sql(
        "SELECT params, peak_memory_bytes, environment, started_at FROM runs WHERE status = 'succeeded' "
        "ORDER BY started_at").to_pylist()
    peaks = {json.loads(r["params"])["megabytes"]: r["peak_memory_bytes"] for r in runs}
    assert [json.loads(r["params"])["megabytes"] for r in runs] == [400, 0]
    assert peaks[400] - peaks[0] > 300 * 2**20, peaks  # the old ru_maxrss gave both the same
    assert "during the run" in json.loads(runs[1]["environment"])["peak_memory"]
