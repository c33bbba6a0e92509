"""Provenance of a run: package versions, platform, device, and modelsci's own commit."""

from __future__ import annotations

import platform
import subprocess
import sys
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

__all__ = ["device_name", "environment"]

PACKAGES = ("modelsci", "torch", "transformers", "sentence-transformers", "captum", "shapiq",
            "scikit-learn", "diffusers", "skops", "numpy", "duckdb", "pyarrow")


@cache
def environment() -> dict[str, Any]:
    """What a run ran with: python, platform, package versions, modelsci's git commit."""
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    return {"python": sys.version.split()[0], "platform": platform.platform(),
            "packages": versions, "modelsci_commit": _git_commit()}


def device_name(device: str) -> str:
    """``cpu``, or ``cuda (NVIDIA H100 80GB HBM3)``."""
    if device.startswith("cuda"):
        import torch

        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return device


def _git_commit() -> str | None:
    """The commit of the modelsci checkout this code runs from (None when not a git checkout)."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
