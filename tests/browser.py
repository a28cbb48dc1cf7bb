"""Debian's Chromium, headless, driven over the DevTools protocol on a pipe: a page as a person sees it.

`--remote-debugging-pipe` speaks the DevTools protocol on file descriptors 3 (commands in) and 4
(answers out), one JSON message per NUL byte: no WebSocket client, no port, no driver binary.
`Browser.open(url)` loads a page and waits for its load event; `text(expression)` evaluates in the
page and returns the value (e.g. `document.body.innerText`: only rendered, visible text);
`screenshot()` returns a PNG of the whole page. `make test` installs Chromium (apt-get); in CI a
missing one fails the test (tests.conftest.require).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

CANDIDATES = ("chromium", "chromium-browser", "google-chrome")


def find_chromium() -> str | None:
    return next((found for name in CANDIDATES if (found := shutil.which(name))), None)


class BrowserError(RuntimeError):
    pass


class Browser:
    def __init__(self, binary: str, width: int = 1200, height: int = 900, timeout: float = 30.0) -> None:
        self.timeout = timeout
        self._profile = tempfile.mkdtemp(prefix="newsbeam-chromium-")
        commands_read, self._commands = os.pipe()
        self._answers, answers_write = os.pipe()

        def onto_fds_3_and_4() -> None:  # in the child, before exec: fresh copies first, then 3 and 4
            commands, answers = os.dup(commands_read), os.dup(answers_write)
            os.dup2(commands, 3)
            os.dup2(answers, 4)

        self._process = subprocess.Popen(
            [
                binary,
                "--headless",
                "--remote-debugging-pipe",
                "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
                "--disable-gpu",
                "--no-first-run",
                "--hide-scrollbars",
                f"--user-data-dir={self._profile}",
                f"--window-size={width},{height}",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=(3, 4),
            preexec_fn=onto_fds_3_and_4,
        )
        os.close(commands_read)
        os.close(answers_write)
        self._buffer = b""
        self._next_id = 0
        self._session: str | None = None

    def _send(
        self, method: str, params: dict[str, Any] | None = None, session: bool = True
    ) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session and self._session:
            message["sessionId"] = self._session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        while True:
            answer = self._receive()
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise BrowserError(f"{method}: {answer['error']}")
                result: dict[str, Any] = answer.get("result", {})
                return result

    def _receive(self, deadline: float | None = None) -> dict[str, Any]:
        deadline = deadline or time.monotonic() + self.timeout
        while b"\0" not in self._buffer:
            if time.monotonic() > deadline:
                raise BrowserError("Chromium did not answer in time")
            chunk = os.read(self._answers, 1 << 16)
            if not chunk:
                raise BrowserError("Chromium closed its DevTools pipe")
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        document: dict[str, Any] = json.loads(message)
        return document

    def open(self, url: str) -> None:
        target = self._send("Target.createTarget", {"url": "about:blank"}, session=False)
        attached = self._send(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}, session=False
        )
        self._session = attached["sessionId"]
        self._send("Page.enable")
        self._send("Page.navigate", {"url": url})
        deadline = time.monotonic() + self.timeout
        while True:
            event = self._receive(deadline)
            if event.get("method") == "Page.loadEventFired":
                return

    def evaluate(self, expression: str) -> Any:
        result = self._send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self) -> bytes:
        shot = self._send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
        return base64.b64decode(shot["data"])

    def close(self) -> None:
        with contextlib.suppress(BrowserError, OSError):
            self._send("Browser.close", session=False)
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        for fd in (self._commands, self._answers):
            os.close(fd)
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def screenshot_file(page: Path, target: Path, width: int = 1100, height: int = 1400) -> None:
    """A PNG of the top of `page` (what the README shows)."""
    binary = find_chromium()
    if binary is None:
        raise SystemExit("no Chromium found: apt-get install chromium")
    with Browser(binary, width, height) as browser:
        browser.open(page.resolve().as_uri())
        shot = browser._send("Page.captureScreenshot", {"format": "png"})
        target.write_bytes(base64.b64decode(shot["data"]))
