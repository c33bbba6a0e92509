"""The spool: result bundles that were computed but could not land yet, kept on disk.

A committer that cannot get the write lock in time (a long reader, an import holding the
catalogue) keeps the bundle here instead of throwing the work away, and lands it once the lock
frees; whatever is left (the committer was killed, or stopped waiting) is landed by the next
``modelsci run`` before it claims anything.

Layout: ``<catalogue>/spool/<sha256 of the file>.bundle``, one file per bundle, an Arrow IPC
file (never pickle) of five columns, ``kind``, ``finding_id``, ``name``, ``rows``, ``data``:
- one row per entity, ``kind`` its list in the bundle (``models``, ``datasets``, ``analyses``,
  ``runs``, ``findings``, ``links``) and ``data`` its ``model_dump(mode="json")`` as JSON;
- one row per artifact, ``kind`` = ``artifact``, with its finding, name, rows and Parquet bytes;
- one row ``kind`` = ``meta``: a JSON object the writer chose (the executor keeps the queued run).
The schema's metadata says ``modelsci.spool: 1``, the format's version.

What a kill can leave: a file is written under a temporary name, flushed to disk and renamed,
and the directory flushed, so a file under its final name is complete; it is removed only
after its bundle has landed. A kill therefore leaves the spool file, or the landed run, or
both (between the commit and the removal); landing the same bundle again adds nothing, since
every id is a content id, and removes the file.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa

from modelsci.catalogue.landing import fsync_dir
from modelsci.schemas.bundle import BundleArtifact, ResultBundle
from modelsci.schemas.entities import Analysis, Dataset, Finding, FindingLink, ModelInstance, Run
from modelsci.schemas.errors import ModelsciError

__all__ = ["Spool", "SpoolError"]

FORMAT_VERSION = b"1"
SUFFIX = ".bundle"
_ENTITIES = {"models": ModelInstance, "datasets": Dataset, "analyses": Analysis, "runs": Run,
             "findings": Finding, "links": FindingLink}
_SCHEMA = pa.schema([("kind", pa.string()), ("finding_id", pa.string()), ("name", pa.string()),
                     ("rows", pa.int64()), ("data", pa.large_binary())],
                    metadata={"modelsci.spool": FORMAT_VERSION})


class SpoolError(ModelsciError, OSError):
    """A spool file that cannot be read back as a bundle."""


class Spool:
    """The folder of bundles waiting to land; ``put``, ``pending``, ``read``, ``remove``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def __repr__(self) -> str:
        return f"Spool({str(self.folder)!r})"

    def put(self, bundle: ResultBundle, meta: dict[str, Any] | None = None) -> Path:
        """Write ``bundle`` (and ``meta``, JSON) to the spool, durably; returns its file."""
        data = _encode(bundle, meta or {})
        self.folder.mkdir(parents=True, exist_ok=True)
        target = self.folder / f"{hashlib.sha256(data).hexdigest()}{SUFFIX}"
        tmp = self.folder / f".tmp-{os.getpid()}-{target.name}"
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        fsync_dir(self.folder)
        return target

    def pending(self) -> list[Path]:
        """The spooled bundles, oldest first (the order they were spooled in)."""
        try:
            entries = list(os.scandir(self.folder))
        except FileNotFoundError:
            return []
        found = []
        for entry in entries:
            if entry.name.endswith(SUFFIX) and not entry.name.startswith("."):
                try:
                    found.append((entry.stat(follow_symlinks=False).st_mtime_ns, entry.name))
                except FileNotFoundError:  # landed by another process just now
                    continue
            elif entry.name.startswith(".tmp-") and not _alive(entry.name.split("-")[1]):
                Path(entry.path).unlink(missing_ok=True)  # its writer was killed mid-write
        return [self.folder / name for _, name in sorted(found)]

    def read(self, path: Path) -> tuple[ResultBundle, dict[str, Any]]:
        """The bundle in a spool file, and its meta; ``FileNotFoundError`` if it landed meanwhile."""
        data = path.read_bytes()
        try:
            table = pa.ipc.open_file(pa.BufferReader(data)).read_all()
        except (OSError, pa.ArrowException) as exc:
            raise SpoolError(f"the spool file {path} cannot be read ({exc}); move it out of {self.folder} "
                             "to go on without it") from None
        try:
            return _decode(table)
        except (KeyError, ValueError, TypeError) as exc:  # pydantic's ValidationError is a ValueError
            raise SpoolError(f"the spool file {path} does not hold a bundle ({type(exc).__name__}: {exc}); "
                             f"move it out of {self.folder} to go on without it") from None

    def remove(self, path: Path) -> None:
        """Forget a spooled bundle once it has landed (idempotent)."""
        path.unlink(missing_ok=True)
        fsync_dir(self.folder)


def _encode(bundle: ResultBundle, meta: dict[str, Any]) -> bytes:
    rows: dict[str, list[Any]] = {name: [] for name in _SCHEMA.names}

    def add(kind: str, data: bytes, finding_id: str | None = None, name: str | None = None,
            count: int | None = None) -> None:
        for column, value in zip(_SCHEMA.names, (kind, finding_id, name, count, data)):
            rows[column].append(value)

    for kind in _ENTITIES:
        for entity in getattr(bundle, kind):
            add(kind, json.dumps(entity.model_dump(mode="json", warnings=False)).encode())
    for artifact in bundle.artifacts:
        add("artifact", artifact.data, artifact.finding_id, artifact.name, artifact.rows)
    add("meta", json.dumps(meta).encode())
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, _SCHEMA) as writer:
        writer.write_table(pa.table(rows, schema=_SCHEMA))
    return sink.getvalue().to_pybytes()


def _decode(table: pa.Table) -> tuple[ResultBundle, dict[str, Any]]:
    if (table.schema.metadata or {}).get(b"modelsci.spool") != FORMAT_VERSION:
        raise ValueError(f"not a spool file of format {FORMAT_VERSION.decode()}")
    bundle, meta = ResultBundle(), None
    for row in table.to_pylist():
        kind = row["kind"]
        if kind == "artifact":
            bundle.artifacts.append(BundleArtifact(row["finding_id"], row["name"], row["data"], row["rows"]))
        elif kind == "meta":
            meta = json.loads(row["data"])
        else:
            getattr(bundle, kind).append(_ENTITIES[kind].model_validate(json.loads(row["data"])))
    if not isinstance(meta, dict):
        raise ValueError("no meta row")
    return bundle, meta


def _alive(pid_text: str) -> bool:
    try:
        os.kill(int(pid_text), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True
