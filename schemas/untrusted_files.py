"""Reading files that strangers made, within bounds.

Every read of a contributed file (weights, cards, configs, manifests, datasets, skops archives,
exports) goes through here, so that no file can hang, exhaust or mislead the reader:

- only regular files are read: a FIFO would block the read forever, ``/dev/zero`` never ends,
  a socket is not data; the check is made on the opened descriptor, after ``O_NONBLOCK``
  keeps a FIFO from blocking the open itself;
- inside a submitted folder, a symlink may only point to another place in that folder (the
  hub's cache links ``snapshots/<sha>/file`` to ``blobs/``: its folder is the repository's);
- each read has a size limit; the defaults are generous for real models and each can be
  changed with an environment variable;
- YAML is parsed with aliases refused (a 508-byte alias bomb expands without bound) and a
  duplicate key an error (YAML keeps the last one without a word);
- a folder walk stops at a depth and a file count.

| limit | default | environment variable |
|---|---|---|
| a manifest | 1 MB | ``MODELSCI_MAX_MANIFEST_BYTES`` |
| a model card (``README.md``) | 1 MB | ``MODELSCI_MAX_CARD_BYTES`` |
| a JSON file (configs, an export's manifest) | 16 MB | ``MODELSCI_MAX_JSON_BYTES`` |
| a safetensors header | 100 MB | ``MODELSCI_MAX_HEADER_BYTES`` |
| a skops archive, uncompressed | 8 GB | ``MODELSCI_MAX_SKOPS_BYTES`` |
| a skops member's compression ratio (members over 16 MB) | 200 | ``MODELSCI_MAX_COMPRESSION_RATIO`` |
| a dataset file | 16 GB | ``MODELSCI_MAX_DATASET_BYTES`` |
| a folder walk | 16 levels, 100,000 files | ``MODELSCI_MAX_DEPTH``, ``MODELSCI_MAX_FILES`` |

Weights are read up to their file's real size: a safetensors header must describe exactly
the bytes the file holds (``schemas.identity``).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import yaml

from modelsci.schemas.errors import ModelsciError

__all__ = ["LIMITS", "RefusedFileError", "limit", "load_yaml", "open_regular", "read_bytes", "read_text",
           "regular_file", "walk"]

LIMITS: dict[str, tuple[int, str]] = {
    "manifest": (1 << 20, "MODELSCI_MAX_MANIFEST_BYTES"),
    "card": (1 << 20, "MODELSCI_MAX_CARD_BYTES"),
    "json": (16 << 20, "MODELSCI_MAX_JSON_BYTES"),
    "safetensors_header": (100 << 20, "MODELSCI_MAX_HEADER_BYTES"),
    "skops": (8 << 30, "MODELSCI_MAX_SKOPS_BYTES"),
    "compression_ratio": (200, "MODELSCI_MAX_COMPRESSION_RATIO"),
    "dataset": (16 << 30, "MODELSCI_MAX_DATASET_BYTES"),
    "depth": (16, "MODELSCI_MAX_DEPTH"),
    "files": (100_000, "MODELSCI_MAX_FILES"),
}
"""Each limit's default and the environment variable that changes it."""


class RefusedFileError(ModelsciError, ValueError):
    """A contributed file that modelsci will not read: not a regular file, too large, leaving its folder."""


def limit(name: str) -> int:
    """The limit ``name`` (a key of ``LIMITS``): its environment variable if set, else its default."""
    default, variable = LIMITS[name]
    value = os.environ.get(variable)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise RefusedFileError(f"{variable}={value!r}: a limit is a whole number") from None


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def regular_file(path: Path, *, within: Path | None = None, what: str = "") -> Path:
    """``path`` resolved, if it is a regular file and (with ``within``) resolves inside that folder."""
    label = f"{what}: " if what else ""
    try:
        resolved = path.resolve(strict=True)
    except FileNotFoundError:
        raise RefusedFileError(f"{label}{path} does not exist") from None
    except (OSError, RuntimeError) as exc:  # a symlink loop
        raise RefusedFileError(f"{label}{path} cannot be resolved: {exc}") from None
    if within is not None and not resolved.is_relative_to(within.resolve()):
        raise RefusedFileError(f"{label}{path} is a link to {resolved}, outside {within}; "
                               "a submitted folder's links must stay inside it")
    mode = os.stat(resolved).st_mode
    if not stat.S_ISREG(mode):
        raise RefusedFileError(f"{label}{path} is {_kind(mode)}; modelsci reads only regular files")
    return resolved


@contextmanager
def open_regular(path: Path, *, within: Path | None = None, what: str = "",
                 max_bytes: int | None = None) -> Iterator[BinaryIO]:
    """Open a regular file for reading, refusing anything else (checked on the open descriptor)."""
    resolved = regular_file(path, within=within, what=what)
    label = f"{what}: " if what else ""
    fd = os.open(resolved, os.O_RDONLY | os.O_NONBLOCK)
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):  # swapped between the check and the open
        os.close(fd)
        raise RefusedFileError(f"{label}{path} is {_kind(info.st_mode)}; modelsci reads only regular files")
    if max_bytes is not None and info.st_size > max_bytes:
        os.close(fd)
        raise RefusedFileError(f"{label}{path} is {info.st_size:,} bytes, over the limit of {max_bytes:,}")
    with os.fdopen(fd, "rb") as f:
        yield f


def read_bytes(path: Path, max_bytes: int, *, within: Path | None = None, what: str = "") -> bytes:
    """A regular file's bytes, at most ``max_bytes`` of them (a file that grows past it is refused)."""
    with open_regular(path, within=within, what=what, max_bytes=max_bytes) as f:
        # Ask for what the file holds (and one byte more), not the limit: read(n) allocates n.
        data = f.read(min(os.fstat(f.fileno()).st_size, max_bytes) + 1)
    if len(data) > max_bytes:
        raise RefusedFileError(f"{what + ': ' if what else ''}{path} is over the limit of {max_bytes:,} bytes")
    return data


def read_text(path: Path, max_bytes: int, *, within: Path | None = None, what: str = "") -> str:
    """A regular file's text, which must be UTF-8."""
    data = read_bytes(path, max_bytes, within=within, what=what)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RefusedFileError(f"{what + ': ' if what else ''}{path} is not UTF-8 text "
                               f"(byte {exc.start}: {data[exc.start:exc.start + 1]!r})") from None


class _StrictLoader(yaml.SafeLoader):
    """YAML without aliases, and with duplicate keys an error."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, f"aliases (*{event.anchor}) are not allowed",
                                              event.start_mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key: SafeLoader refuses it in a moment
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def load_yaml(text: str) -> Any:
    """Parse YAML safely: plain data, no aliases, no duplicate keys (raises ``yaml.YAMLError``)."""
    return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass: plain data only


def walk(root: Path, *, what: str = "") -> list[Path]:
    """Every file under ``root`` (links to folders are not followed), within the depth and count limits."""
    max_depth, max_files = limit("depth"), limit("files")
    label = f"{what}: " if what else ""
    base = len(root.parts)
    files: list[Path] = []
    for folder, dirs, names in os.walk(root, followlinks=False):
        here = Path(folder)
        if len(here.parts) - base >= max_depth:
            raise RefusedFileError(f"{label}{root} is nested deeper than {max_depth} levels "
                                   f"({here}); point it at the model's or dataset's own folder")
        dirs.sort()
        files += (here / name for name in sorted(names))
        if len(files) > max_files:
            raise RefusedFileError(f"{label}{root} holds more than {max_files:,} files; point it at "
                                   "the model's or dataset's own folder")
    return files
