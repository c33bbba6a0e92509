"""Rich progress bars for ``modelsci run``: one bar per run, advanced by its analysis."""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from modelsci.executors.execution import Reporter
from modelsci.schemas.entities import Run
from modelsci.schemas.queued_run import QueuedRun

__all__ = ["ProgressReporter"]


class ProgressReporter(Reporter):
    def __init__(self, console: Console) -> None:
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[state]}"),
                                 TimeElapsedColumn(), console=console)
        self.tasks: dict[str, TaskID] = {}

    def __enter__(self) -> ProgressReporter:
        self.progress.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.progress.stop()

    def started(self, run: QueuedRun) -> Callable[[float, float], None]:
        model = run.model_spec.get("name") or run.model_id[7:19]
        task = self.progress.add_task(f"{run.analysis_id} on {escape(model)} seed {run.seed}",
                                      total=None, state="running")
        self.tasks[run.run_id] = task
        return lambda done, total: self.progress.update(task, completed=done, total=total)

    def finished(self, run: QueuedRun, result: Run) -> None:
        task = self.tasks.pop(run.run_id)
        state = "[green]succeeded" if result.status == "succeeded" else f"[red]failed: {escape(result.error or '')}"
        self.progress.update(task, total=1, completed=1, state=state)
