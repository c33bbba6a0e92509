"""The one interface every analysis implements, and the registry that finds them.

An analysis declares its name, version, family, pillar, a pydantic parameter model and the
tasks it applies to, and turns a RunContext (model, dataset, parameters, device, seed,
progress) into findings on the context's result bundle. It never touches the catalogue.

Analyses register through the entry-point group ``modelsci.analyses``, so a third-party
package adds one with, in its pyproject.toml::

    [project.entry-points."modelsci.analyses"]
    "mylab.my_analysis" = "mylab.analysis:MyAnalysis"
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import entry_points
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict

from schemas.bundle import ResultBundle
from schemas.entities import Analysis, Pillar, Run

__all__ = ["ENTRY_POINT_GROUP", "AnalysisPlugin", "NoParams", "RunContext", "registry"]

ENTRY_POINT_GROUP = "modelsci.analyses"


class NoParams(BaseModel):
    """Parameters of an analysis that takes none."""

    model_config = ConfigDict(extra="forbid")


@dataclass
class RunContext:
    """What an analysis gets for one run; it adds findings with ``ctx.add_finding``."""

    run: Run
    model: Any                      # ingest.loading.LoadedModel
    dataset: Any                    # ingest.datasets.DatasetHandle, or None
    params: BaseModel
    device: str
    seed: int
    progress: Callable[[float, float], None] = lambda done, total: None
    bundle: ResultBundle = field(default_factory=ResultBundle)

    @property
    def rng(self) -> np.random.Generator:
        """A generator seeded by the run's seed (one per call: take it once per analysis)."""
        return np.random.default_rng(self.seed)

    def add_finding(self, **kwargs: Any) -> Any:
        return self.bundle.add_finding(self.run, **kwargs)


class AnalysisPlugin(ABC):
    """Base class of every analysis."""

    name: ClassVar[str]
    version: ClassVar[str]
    family: ClassVar[str]
    pillar: ClassVar[Pillar]
    description: ClassVar[str]
    Params: ClassVar[type[BaseModel]] = NoParams
    tasks: ClassVar[frozenset[str]] = frozenset()
    """Tasks it applies to; empty means any."""
    needs_dataset: ClassVar[bool] = True
    tolerance: ClassVar[float | None] = None
    """Absolute difference within which two runs' values replicate; None: overlapping CIs."""

    @classmethod
    def entity(cls) -> Analysis:
        return Analysis(
            id=f"{cls.name}@{cls.version}", name=cls.name, version=cls.version, family=cls.family,
            pillar=cls.pillar, description=cls.description,
            params_schema=cls.Params.model_json_schema(), tolerance=cls.tolerance,
        )

    frameworks: ClassVar[frozenset[str]] = frozenset()
    """Frameworks it applies to; empty means any."""

    @classmethod
    def refusal(cls, task: str, framework: str, has_dataset: bool) -> str | None:
        """Why this analysis cannot run on a ``framework`` model for ``task`` (None when it can)."""
        if cls.tasks and task not in cls.tasks:
            return f"{cls.name} applies to {', '.join(sorted(cls.tasks))}, not {task}"
        if cls.frameworks and framework not in cls.frameworks:
            return f"{cls.name} applies to {', '.join(sorted(cls.frameworks))} models, not {framework}"
        if cls.needs_dataset and not has_dataset:
            return f"{cls.name} needs a dataset"
        return None

    @abstractmethod
    def run(self, ctx: RunContext) -> None:
        """Compute and add findings (with their artifacts) to ``ctx.bundle``."""


@cache
def registry() -> dict[str, type[AnalysisPlugin]]:
    """Every registered analysis by name, from the ``modelsci.analyses`` entry points."""
    found: dict[str, type[AnalysisPlugin]] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        plugin = ep.load()
        if not (isinstance(plugin, type) and issubclass(plugin, AnalysisPlugin)):
            raise TypeError(f"entry point {ep.name} = {ep.value} is not an AnalysisPlugin subclass")
        if plugin.name != ep.name:
            raise TypeError(f"entry point {ep.name!r} loads an analysis named {plugin.name!r}")
        found[plugin.name] = plugin
    return dict(sorted(found.items()))
