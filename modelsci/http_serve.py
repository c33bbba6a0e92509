"""Serving a folder (a built site, a published catalogue) over HTTP with byte-range requests.

Python's ``http.server`` answers every GET with the whole file. A published catalogue is read
with range requests (``modelsci.open("http://...")``, DuckDB-WASM on the Query page): a query
on one model fetches the Parquet footer and the row groups it needs, not the whole file. This
handler answers ``Range: bytes=a-b`` (also ``a-`` and ``-n``) with 206 and ``Content-Range``,
an unsatisfiable range with 416, and anything else as ``http.server`` does, 200 with the whole
file. A request with several ranges gets the whole file (a server may ignore ``Range``).

It serves regular files under its root only: paths are resolved (symlinks included) and must
stay inside the root, and directories are not listed (``index.html`` is served for a folder).
"""

from __future__ import annotations

import http.server
import os
import re
import sys
import threading
import urllib.parse
from collections import Counter
from functools import partial
from http import HTTPStatus
from pathlib import Path
from typing import BinaryIO

__all__ = ["RangeRequestHandler", "RangeServer", "make_server"]

_RANGE = re.compile(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*")
_CHUNK = 1 << 16


class RangeServer(http.server.ThreadingHTTPServer):
    """A threading HTTP server that counts the body bytes it sent, per request path."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[http.server.BaseHTTPRequestHandler] | partial) -> None:
        super().__init__(address, handler)
        self.sent: Counter[str] = Counter()
        self._sent_lock = threading.Lock()

    def handle_error(self, request: object, client_address: object) -> None:
        """A client that hung up mid-answer (a reader that had what it needed) is no error of the server's."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    def count(self, path: str, n: int) -> None:
        """Add ``n`` body bytes sent for the URL path ``path``."""
        with self._sent_lock:
            self.sent[path] += n


class RangeRequestHandler(http.server.SimpleHTTPRequestHandler):
    """``SimpleHTTPRequestHandler`` with byte ranges, no directory listings, and files under its root only."""

    server: RangeServer
    _span: tuple[int, int] | None = None  # (start, length) of the range being sent

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class' name
        """Quiet: a published catalogue is read in many small requests."""

    def list_directory(self, path: str | os.PathLike[str]) -> None:
        """No listings: only the files the site or the catalogue names are served."""
        self.send_error(HTTPStatus.NOT_FOUND, "File not found")

    def send_head(self) -> BinaryIO | None:
        """Headers of a 200, 206 or 416 answer; the open file to send, or None."""
        self._span = None
        target = Path(self.translate_path(self.path))
        if target.is_dir():
            parts = urllib.parse.urlsplit(self.path)
            if not parts.path.endswith("/"):
                return super().send_head()  # the redirect to the folder's URL with a slash
            target = target / "index.html"
        root = Path(self.directory).resolve()
        try:
            resolved = target.resolve()
        except (OSError, RuntimeError):  # a loop of links
            resolved = None
        if resolved is None or not resolved.is_relative_to(root) or not resolved.is_file():
            self.send_error(HTTPStatus.NOT_FOUND, "File not found")
            return None
        f = open(resolved, "rb")  # handed to the caller, which closes it
        try:
            size = os.fstat(f.fileno()).st_size
            span = self._range(size)
            if span == "unsatisfiable":
                f.close()
                self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return None
            if span is None:
                self.send_response(HTTPStatus.OK)
                self.send_header("Content-Length", str(size))
            else:
                start, length = span
                self._span = span
                self.send_response(HTTPStatus.PARTIAL_CONTENT)
                self.send_header("Content-Range", f"bytes {start}-{start + length - 1}/{size}")
                self.send_header("Content-Length", str(length))
            self.send_header("Content-Type", self.guess_type(str(resolved)))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Last-Modified", self.date_time_string(os.fstat(f.fileno()).st_mtime))
            self.end_headers()
            return f
        except BaseException:
            f.close()
            raise

    def _range(self, size: int) -> tuple[int, int] | str | None:
        """(start, length) of the one range asked for, ``"unsatisfiable"``, or None for the whole file."""
        header = self.headers.get("Range")
        if header is None or "," in header:
            return None
        match = _RANGE.fullmatch(header)
        if match is None or match[1] == match[2] == "":
            return None  # not a byte range this handler reads: answered with the whole file
        if match[1] == "":  # the last n bytes
            length = min(int(match[2]), size)
            return (size - length, length) if length > 0 else "unsatisfiable"
        start = int(match[1])
        end = min(int(match[2]), size - 1) if match[2] else size - 1
        if start >= size or end < start:
            return "unsatisfiable"
        return start, end - start + 1

    def copyfile(self, source: BinaryIO, outputfile: BinaryIO) -> None:  # type: ignore[override]
        """Send the range (or the whole file), counting the bytes sent."""
        path = urllib.parse.urlsplit(self.path).path
        start, left = self._span or (0, os.fstat(source.fileno()).st_size)
        source.seek(start)
        while left > 0:
            chunk = source.read(min(_CHUNK, left))
            if not chunk:
                break
            outputfile.write(chunk)
            self.server.count(path, len(chunk))
            left -= len(chunk)


def make_server(root: str | Path, host: str = "127.0.0.1", port: int = 0) -> RangeServer:
    """A server of the files under ``root`` on ``host:port`` (port 0: any free one); call ``serve_forever``."""
    handler = partial(RangeRequestHandler, directory=str(Path(root).resolve()))
    return RangeServer((host, port), handler)
