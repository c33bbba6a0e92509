"""``hf://org/name[@rev]`` sources through huggingface_hub, honouring its cache and offline mode."""

from __future__ import annotations

import os
import re
from pathlib import Path

from huggingface_hub import snapshot_download
from huggingface_hub.errors import (
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from modelsci.schemas.errors import ModelsciError

__all__ = ["HubError", "is_hub", "parse_hub_uri", "snapshot"]

SCHEME = "hf://"


class HubError(ModelsciError, LookupError):
    """A hub source that cannot be resolved (not in the cache while offline, unknown repo, ...)."""


def is_hub(source: str) -> bool:
    return source.startswith(SCHEME)


_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")
_REVISION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]*")


def parse_hub_uri(source: str, revision: str | None = None) -> tuple[str, str | None]:
    """``hf://org/name@rev`` -> (``org/name``, ``rev``); a separate ``revision`` wins over ``@rev``.

    Only hub ids are accepted: a path (``hf://../dir``) would make the hub client read a local folder.
    """
    repo, _, at_rev = source[len(SCHEME):].partition("@")
    rev = revision or at_rev or None
    if not _REPO_ID.fullmatch(repo) or ".." in repo or (
            rev is not None and (not _REVISION.fullmatch(rev) or ".." in rev)):
        raise HubError(f"{source!r}: a hub source is hf://org/name or hf://org/name@revision "
                       "(letters, digits, '-', '_' and '.')")
    return repo, rev


def _offline() -> bool:
    # Read at call time: huggingface_hub reads HF_HUB_OFFLINE once, at import.
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _cache_dir() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface")
    return Path(home) / "hub"


def snapshot(source: str, revision: str | None = None, *, repo_type: str = "model") -> tuple[Path, str]:
    """The local folder of a hub repo at a revision, and the commit sha that revision resolved to.

    Pickle weights are never downloaded: modelsci loads safetensors only.
    """
    repo, rev = parse_hub_uri(source, revision)
    try:
        folder = snapshot_download(
            repo, revision=rev, repo_type=repo_type, cache_dir=_cache_dir(),
            local_files_only=_offline(),
            ignore_patterns=["*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl", "*.msgpack", "*.h5", "*.onnx"],
        )
    except (LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError) as exc:
        where = " in the local cache (HF_HUB_OFFLINE is set)" if _offline() else ""
        raise HubError(f"{source}: not found{where} at revision {rev or 'main'} "
                       f"(cache: {_cache_dir()}): {type(exc).__name__}") from None
    except (HfHubHTTPError, OSError) as exc:
        raise HubError(f"{source}: cannot reach the hub and it is not cached: {exc}") from None
    path = Path(folder)
    # A snapshot folder is named by the commit sha that the revision resolved to.
    return path, path.name
