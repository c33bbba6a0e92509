"""The queued-run record: a planned run, as the queue holds it and an executor receives it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = ["QueuedRun"]


@dataclass
class QueuedRun:
    """A planned run: everything an executor needs to load the model and data and run it."""

    run_id: str
    run_key: str
    attempt: int
    model_id: str
    dataset_id: str | None
    analysis_id: str
    params: dict[str, Any]
    seed: int
    model_spec: dict[str, Any]
    dataset_spec: dict[str, Any] | None
    submission_id: str | None = None
    train_dataset_id: str | None = None
    """The dataset a retraining analysis fits on (None for the others)."""
    train_spec: dict[str, Any] | None = None
    """How to read it: a resolved ``DataSource`` (columns explicit, hub revision pinned)."""
    status: str = "queued"
    worker: str | None = None
    lease: str | None = None
    """The token of the claim that handed the run to an executor (``catalogue.queue``)."""
    queued_at: datetime = field(default_factory=lambda: datetime.now(UTC).replace(tzinfo=None))

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> QueuedRun:
        names = cls.__dataclass_fields__
        values = {k: v for k, v in row.items() if k in names}
        for key in ("params", "model_spec", "dataset_spec", "train_spec"):
            if isinstance(values.get(key), str):
                values[key] = json.loads(values[key])
        return cls(**values)
