"""The one interface every analysis implements, and the registry that finds them.

An analysis declares its name, version, family, pillar, a pydantic parameter model and the
tasks it applies to, and turns a RunContext (model, dataset, parameters, device, seed,
progress) into findings on the context's result bundle. It never touches the catalogue.

Analyses register through the entry-point group ``modelsci.analyses``, so a third-party
package adds one with, in its pyproject.toml::

    [project.entry-points."modelsci.analyses"]
    "mylab.my_analysis" = "mylab.analysis:MyAnalysis [gpu]"

The bracketed extras (optional) name what the analysis needs installed: an analysis whose
extras' requirements are missing is not imported, and is listed as unavailable with the
``pip install`` line that brings them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import EntryPoint, PackageNotFoundError, entry_points, version
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from packaging.requirements import Requirement
from pydantic import BaseModel, ConfigDict

from modelsci.schemas.bundle import ResultBundle
from modelsci.schemas.entities import Analysis, Finding, Pillar, Run

if TYPE_CHECKING:  # the loaders import torch; an analysis' module imports them when it runs
    from modelsci.ingest.datasets import DatasetHandle
    from modelsci.ingest.loading import LoadedModel

__all__ = ["ENTRY_POINT_GROUP", "AnalysisPlugin", "FindingKind", "NoParams", "RunContext", "Unavailable",
           "describe", "registry", "unavailable"]

ENTRY_POINT_GROUP = "modelsci.analyses"


@dataclass(frozen=True)
class FindingKind:
    """One kind of finding an analysis writes, and what each of its fields means."""

    kind: str
    value: str
    """What ``value`` holds, in words precise enough to recompute it."""
    unit: str
    interval: str = "none"
    """What ``ci_low``/``ci_high`` hold (e.g. a Wilson 95% interval), or ``none``."""
    subject: str = "empty: the whole model"
    """What ``subject`` holds."""
    metrics: dict[str, str] = field(default_factory=dict)
    """Keys of ``metrics`` -> their meaning."""
    artifacts: dict[str, dict[str, str]] = field(default_factory=dict)
    """Artifact name -> column -> meaning."""
    null: str = ""
    """When ``value`` is null (and which ``metrics`` key says why); empty: never."""
    lower_is_better: bool = False
    """Smaller values are better (an error, a rate of failures): leaderboards list the smallest first."""


class NoParams(BaseModel):
    """Parameters of an analysis that takes none."""

    model_config = ConfigDict(extra="forbid")


@dataclass
class RunContext:
    """What an analysis gets for one run; it adds findings with ``ctx.add_finding``."""

    run: Run
    model: LoadedModel
    dataset: DatasetHandle | None
    params: BaseModel
    device: str
    seed: int
    progress: Callable[[float, float], None] = lambda done, total: None
    bundle: ResultBundle = field(default_factory=ResultBundle)
    train: DatasetHandle | None = None
    """The data a retraining analysis fits on (set when it declares ``needs_training_data``)."""

    @property
    def rng(self) -> np.random.Generator:
        """A generator seeded by the run's seed (one per call: take it once per analysis)."""
        return np.random.default_rng(self.seed)

    def add_finding(self, **kwargs: Any) -> Finding:
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
    needs_training_data: ClassVar[bool] = False
    """Whether it retrains the model, and so needs the dataset's training split in ``ctx.train``."""
    seed_dependent: ClassVar[bool] = True
    """Whether its result depends on the seed (sampling, bootstrap, initialisation); several seeds
    of an analysis that does not are refused at submit, since they could not fail to replicate."""
    seed_use: ClassVar[str] = ""
    """What the seed drives, in words (shown with ``seed_dependent`` in the documentation)."""
    tolerance: ClassVar[float | None] = None
    """Absolute difference within which two runs' values replicate; None: overlapping CIs."""
    kinds: ClassVar[tuple[FindingKind, ...]] = ()
    """Every kind of finding it writes (``describe`` and the site document them from here)."""

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


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _list(items: dict[str, str]) -> list[str]:
    return [f"  - `{name}`: {meaning}" for name, meaning in items.items()]


def describe(plugin: type[AnalysisPlugin]) -> str:
    """An analysis' documentation as Markdown: what it computes, its parameters and every finding kind."""
    lines = [f"# {plugin.name}@{plugin.version}", "", plugin.description, "",
             f"- family: {plugin.family}; pillar: {plugin.pillar.value}",
             f"- tasks: {', '.join(sorted(plugin.tasks)) or 'any'}; "
             f"frameworks: {', '.join(sorted(plugin.frameworks)) or 'any'}",
             f"- needs a dataset: {'yes' if plugin.needs_dataset else 'no'}; "
             f"needs training data: {'yes' if plugin.needs_training_data else 'no'}",
             f"- seed: {'the values depend on it' if plugin.seed_dependent else 'the values do not depend on it'}"
             + (f" ({plugin.seed_use})" if plugin.seed_use else ""),
             "- replication: " + (f"two runs replicate when their values differ by at most {plugin.tolerance}"
                                  if plugin.tolerance is not None else
                                  "two runs replicate when their 95% intervals overlap (equal values without)"),
             "", "## Parameters", ""]
    fields = plugin.Params.model_fields
    lines += [f"- `{name}` ({_type_name(info.annotation)}, default {info.default!r}): {info.description or ''}"
              for name, info in fields.items()] or ["None."]
    lines += ["", "## Findings", ""]
    if not plugin.kinds:
        lines.append("Not documented.")
    for k in plugin.kinds:
        lines += [f"### `{k.kind}`", "", f"- value: {k.value}", f"- unit: {k.unit}", f"- interval: {k.interval}",
                  f"- subject: {k.subject}"]
        if k.null:
            lines.append(f"- null: {k.null}")
        if k.lower_is_better:
            lines.append("- better: lower (leaderboards list the smallest first)")
        if k.metrics:
            lines += ["- metrics:", *_list(k.metrics)]
        for artifact, columns in k.artifacts.items():
            lines += [f"- artifact `{artifact}`:", *_list(columns)]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


@dataclass(frozen=True)
class Unavailable:
    """A registered analysis whose extras are not installed."""

    name: str
    missing: tuple[str, ...]
    install: str
    """The command that installs what it needs, e.g. ``pip install 'modelsci[explain]'``."""


def _missing(ep: EntryPoint) -> tuple[str, ...]:
    """Requirements of the entry point's extras that are not installed (read from metadata only)."""
    if not ep.extras or ep.dist is None:
        return ()
    missing = []
    for line in ep.dist.requires or []:
        requirement = Requirement(line)
        if requirement.marker is None or not any(requirement.marker.evaluate({"extra": e}) for e in ep.extras):
            continue
        wanted = f"{requirement.name}{requirement.specifier}"
        try:
            installed = version(requirement.name)
        except PackageNotFoundError:
            missing.append(wanted)
            continue
        if requirement.specifier and not requirement.specifier.contains(installed, prereleases=True):
            missing.append(f"{wanted} (have {installed})")
    return tuple(dict.fromkeys(missing))


@cache
def _entry_points() -> tuple[tuple[EntryPoint, tuple[str, ...]], ...]:
    return tuple((ep, _missing(ep)) for ep in entry_points(group=ENTRY_POINT_GROUP))


@cache
def registry() -> dict[str, type[AnalysisPlugin]]:
    """Every installed analysis by name, from the ``modelsci.analyses`` entry points.

    An analysis whose extras are missing is not imported: ``unavailable()`` lists it.
    """
    found: dict[str, type[AnalysisPlugin]] = {}
    for ep, missing in _entry_points():
        if missing:
            continue
        plugin = ep.load()
        if not (isinstance(plugin, type) and issubclass(plugin, AnalysisPlugin)):
            raise TypeError(f"entry point {ep.name} = {ep.value} is not an AnalysisPlugin subclass")
        if plugin.name != ep.name:
            raise TypeError(f"entry point {ep.name!r} loads an analysis named {plugin.name!r}")
        found[plugin.name] = plugin
    return dict(sorted(found.items()))


def unavailable() -> dict[str, Unavailable]:
    """Registered analyses that cannot run here, with what is missing and how to install it."""
    out = {}
    for ep, missing in _entry_points():
        if missing:
            package = ep.dist.name if ep.dist is not None else "modelsci"
            out[ep.name] = Unavailable(ep.name, missing, f"pip install '{package}[{','.join(ep.extras)}]'")
    return dict(sorted(out.items()))
