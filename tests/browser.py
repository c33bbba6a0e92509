"""A real headless Chromium (Debian's ``chromium``) driven over the DevTools protocol.

Small on purpose: open a page, evaluate JavaScript, wait for a condition, take a screenshot,
record JavaScript dialogs (which it dismisses, so a page that opens one cannot hang) and
Content-Security-Policy violations (``Page.csp_violations``).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from modelsci.http_serve import make_server

__all__ = ["Browser", "chromium_or_skip", "chromium_path", "serving"]


_RECORD_CSP_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => window.__cspViolations.push(
  `${e.effectiveDirective} blocked ${e.blockedURI || "inline"} at ${e.sourceFile}:${e.lineNumber}`));
"""


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


class Page:
    def __init__(self, ws_url: str) -> None:
        import websocket  # websocket-client, a test dependency

        self.ws = websocket.create_connection(ws_url, timeout=60, suppress_origin=True)
        self.next_id = 0
        self.dialogs: list[str] = []
        self.console: list[str] = []
        self.log: list[str] = []  # the browser's own messages (Log domain): CSP reports, failed loads
        self.call("Page.enable")
        self.call("Runtime.enable")
        self.call("Log.enable")
        # Runs before any script of each document, whatever its CSP: records every violation.
        self.call("Page.addScriptToEvaluateOnNewDocument", source=_RECORD_CSP_VIOLATIONS)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        my_id = self.next_id
        self.ws.send(json.dumps({"id": my_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == my_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self._event(message)

    def _event(self, message: dict[str, Any]) -> None:
        method = message.get("method")
        if method == "Page.javascriptDialogOpening":
            self.dialogs.append(message["params"].get("message", ""))
            self.ws.send(json.dumps({"id": 10**9 + len(self.dialogs), "method": "Page.handleJavaScriptDialog",
                                     "params": {"accept": False}}))
        elif method == "Runtime.consoleAPICalled":
            self.console.append(" ".join(str(a.get("value", a.get("description", ""))) for a in message["params"]["args"]))
        elif method == "Log.entryAdded":
            entry = message["params"]["entry"]
            self.log.append(f"{entry.get('level')} {entry.get('source')}: {entry.get('text')}")
        elif method == "Runtime.exceptionThrown":
            self.console.append("exception: " + json.dumps(message["params"]["exceptionDetails"].get("exception", {}).get("description", "")))

    def goto(self, url: str, timeout: float = 30) -> None:
        self.call("Page.navigate", url=url)
        self.wait("document.readyState === 'complete'", timeout)

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return result.get("result", {}).get("value")

    def wait(self, expression: str, timeout: float = 60) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.2)
        raise TimeoutError(f"waited {timeout} s for {expression}; console: {self.console[-5:]}")

    def csp_violations(self) -> list[str]:
        """Violations of the Content-Security-Policy since the page was opened: the document's
        ``securitypolicyviolation`` events and the browser's log entries that name the policy."""
        events = self.evaluate("window.__cspViolations || []") or []
        logged = [line for line in self.log if "Content Security Policy" in line or "Content-Security-Policy" in line]
        return [*events, *logged]

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        self.ws.close()


class Browser:
    def __init__(self) -> None:
        binary = chromium_path()
        if binary is None:
            raise RuntimeError("no chromium")
        self.profile = tempfile.mkdtemp(prefix="modelsci-chromium-")
        self.proc = subprocess.Popen(
            [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--remote-debugging-port=0",
             f"--user-data-dir={self.profile}", "--window-size=1280,1600", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        port_file = Path(self.profile) / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not port_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        self.port = int(port_file.read_text().split()[0])

    def page(self) -> Page:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/json/new?about:blank", method="PUT")
        with urllib.request.urlopen(request, timeout=30) as response:
            target = json.loads(response.read())
        return Page(target["webSocketDebuggerUrl"])

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.profile, ignore_errors=True)


@contextmanager
def serving(root: Path) -> Iterator[str]:
    """Serve a built site over HTTP on a free local port (module scripts and workers need http); yields its URL."""
    httpd = make_server(root)  # byte ranges, as a static host answers them and DuckDB-WASM reads Parquet
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def chromium_or_skip() -> Iterator[Browser]:
    """A Browser for a fixture to yield from; the test skips without chromium, except in CI, where it fails."""
    if chromium_path() is None:
        if os.environ.get("CI"):
            pytest.fail("CI needs chromium for the browser tests; `make test` installs it with apt-get as root")
        pytest.skip("no chromium: install Debian's `chromium` (apt-get install chromium) to run the browser tests")
    browser = Browser()
    try:
        yield browser
    finally:
        browser.close()
