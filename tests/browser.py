"""A tiny Chrome DevTools Protocol client for tests: headless Chromium driven over
``--remote-debugging-pipe`` (JSON messages ending in a NUL byte on file descriptors 3 and 4),
bounded in time; it opens a page, waits for a condition, evaluates expressions and keeps the
console messages and uncaught exceptions."""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Browser", "chromium"]


def chromium() -> str | None:
    """The Chromium binary (Debian's ``chromium``), or None."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


@dataclass
class Browser:
    """One headless Chromium with one page; use as a context manager."""

    timeout_s: float = 30.0
    console: list[dict[str, Any]] = field(default_factory=list)
    exceptions: list[str] = field(default_factory=list)

    def __enter__(self) -> Browser:
        binary = chromium()
        if binary is None:
            raise RuntimeError("no chromium")
        self._profile = tempfile.TemporaryDirectory(prefix="fusewb-chromium-",
                                                    ignore_cleanup_errors=True)
        to_child, self._out = os.pipe()
        self._in, from_child = os.pipe()

        def fds() -> None:  # the child reads commands on 3 and writes answers on 4
            os.dup2(to_child, 3)
            os.dup2(from_child, 4)

        self._proc = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
             "--window-size=1400,1000", f"--user-data-dir={self._profile.name}", "about:blank"],
            pass_fds=(3, 4), preexec_fn=fds, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True)
        os.close(to_child)
        os.close(from_child)
        self._buffer = b""
        self._next = 0
        target = self._call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self._session = self._call("Target.attachToTarget",
                                   {"targetId": target, "flatten": True})["sessionId"]
        self._call("Runtime.enable", session=True)
        self._call("Page.enable", session=True)
        return self

    def __exit__(self, *exc: object) -> None:
        os.killpg(self._proc.pid, signal.SIGKILL)  # its own session: Chromium and its helpers
        self._proc.wait(timeout=10)
        os.close(self._out)
        os.close(self._in)
        self._profile.cleanup()

    def _call(self, method: str, params: dict[str, Any] | None = None,
              session: bool = False) -> dict[str, Any]:
        self._next += 1
        message: dict[str, Any] = {"id": self._next, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self._session
        os.write(self._out, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            while b"\0" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\0", 1)
                answer = json.loads(raw)
                if answer.get("id") == self._next:
                    if "error" in answer:
                        raise RuntimeError(f"{method}: {answer['error']}")
                    return answer["result"]
                self._note(answer)
            ready, _, _ = select.select([self._in], [], [], 0.5)
            if ready:
                chunk = os.read(self._in, 1 << 20)
                if not chunk:
                    raise RuntimeError("chromium exited")
                self._buffer += chunk
        raise TimeoutError(f"chromium did not answer {method} in {self.timeout_s:g} s")

    def _note(self, event: dict[str, Any]) -> None:
        params = event.get("params", {})
        if event.get("method") == "Runtime.consoleAPICalled":
            self.console.append({"type": params.get("type"), "text": " ".join(
                str(a.get("value", a.get("description", ""))) for a in params.get("args", []))})
        elif event.get("method") == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            self.exceptions.append(details.get("exception", {}).get("description")
                                   or details.get("text", "?"))

    def open(self, url: str) -> None:
        """Navigate the page to ``url``."""
        self._call("Page.navigate", {"url": url}, session=True)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (an exception raises)."""
        result = self._call("Runtime.evaluate", {"expression": expression,
                                                 "returnByValue": True}, session=True)
        if "exceptionDetails" in result:
            raise RuntimeError(result["exceptionDetails"].get("exception", {})
                               .get("description", "exception"))
        return result["result"].get("value")

    def wait_for(self, expression: str) -> Any:
        """Evaluate ``expression`` until it is truthy (bounded by ``timeout_s``); its value."""
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            try:
                value = self.evaluate(expression)
            except RuntimeError:
                value = None
            if value:
                return value
            time.sleep(0.2)
        raise TimeoutError(f"{expression} stayed false for {self.timeout_s:g} s")
