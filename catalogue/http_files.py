"""The HTTP filesystem DuckDB reads a published catalogue through (the ``remote`` extra: fsspec, aiohttp).

DuckDB's own ``httpfs`` extension is downloaded from an extension host at run time, which a
machine without one cannot do; DuckDB reads any fsspec filesystem registered with it instead.
fsspec's HTTP filesystem as it is does not serve DuckDB as it should, in three ways fixed here:

- DuckDB asks each file for its modification time, which fsspec's HTTP filesystem does not
  implement (``NotImplementedError``): one fixed time is given, since a reader's connection
  lives for one query and DuckDB only compares the time within it;
- fsspec checks that a URL exists with a GET without a range, so a server sends the whole
  file before the check is closed: a HEAD request is enough;
- a file's size is asked for once per filesystem, not three times per file: a reader's
  filesystem lives for one query, so it cannot see a file change within it anyway;
- files are read with no cache (``cache_type="none"``): each read is one range request of the
  bytes DuckDB asks for. fsspec's caches are not safe under DuckDB's threads reading one file
  (its ``bytes`` cache returned short reads and corrupt pages), and its read-ahead cache fetched
  twice the bytes of a full scan.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import aiohttp
from fsspec.implementations.http import HTTPFileSystem

__all__ = ["DuckDBHTTPFileSystem", "http_filesystem"]

_SOME_TIME = datetime(2000, 1, 1, tzinfo=UTC)
_BLOCK = 1 << 16  # only needs to be positive: 0 would open files as one unranged stream


class DuckDBHTTPFileSystem(HTTPFileSystem):
    """fsspec's HTTP filesystem, made to answer what DuckDB asks of a registered filesystem."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._infos: dict[tuple[str, str], dict[str, Any]] = {}

    def modified(self, path: str) -> datetime:
        """A fixed time: DuckDB compares it only within one connection's reads."""
        return _SOME_TIME

    async def _info(self, url: str, **kwargs: Any) -> dict[str, Any]:
        """A file's size and headers, asked once per filesystem (DuckDB asks several times per file)."""
        key = (url, repr(sorted(kwargs.items())))
        if key not in self._infos:
            self._infos[key] = await super()._info(url, **kwargs)
        return self._infos[key]

    async def _exists(self, path: str, **kwargs: Any) -> bool:
        """Whether the URL answers a HEAD request (not a GET of the whole file)."""
        try:
            await self._info(path, **kwargs)
        except FileNotFoundError:
            return False
        return True


def http_filesystem(timeout_s: float) -> DuckDBHTTPFileSystem:
    """A fresh filesystem (no instance shared with other connections), each read one range request."""
    return DuckDBHTTPFileSystem(block_size=_BLOCK, cache_type="none", skip_instance_cache=True,
                                client_kwargs={"timeout": aiohttp.ClientTimeout(total=timeout_s)})
