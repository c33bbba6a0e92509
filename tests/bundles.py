"""Bundles beside ``conftest.accuracy_bundle``'s: another run of the same seed, and a verification run."""

from __future__ import annotations

from modelsci.schemas import Analysis, ModelInstance, ResultBundle
from tests.conftest import toy_analysis, toy_dataset, toy_model, toy_run


def rerun(value: float, ci: tuple[float, float] | None, attempt: int, *, seed: int = 0,
          analysis: Analysis | None = None, model: ModelInstance | None = None, subject: str = "") -> ResultBundle:
    """``accuracy_bundle``'s finding made again by another run of the same seed: the key's next version."""
    model, analysis = model or toy_model(), analysis or toy_analysis()
    run = toy_run(model, analysis, seed=seed, run_id=f"run-{analysis.version}-{seed}-attempt-{attempt}")
    bundle = ResultBundle(models=[model], datasets=[toy_dataset()], analyses=[analysis], runs=[run])
    bundle.add_finding(run, kind="accuracy", subject=subject, statement=f"accuracy is {value}", value=value,
                       ci=ci, n=38, unit="fraction")
    return bundle


def verification_of(bundle: ResultBundle, value: float, ci: tuple[float, float] | None, *,
                    kind: str = "accuracy", name: str = "verify") -> ResultBundle:
    """A verification run of ``bundle``'s (first) run that finds ``value`` for ``kind``."""
    original = bundle.runs[0]
    run = original.model_copy(update={"id": f"{name}-{original.id}", "verifies_run_id": original.id})
    verification = ResultBundle(models=list(bundle.models), datasets=list(bundle.datasets),
                                analyses=list(bundle.analyses), runs=[run])
    verification.add_finding(run, kind=kind, subject=bundle.findings[0].subject, statement=f"{kind} is {value}",
                             value=value, ci=ci, n=38, unit="fraction")
    return verification
