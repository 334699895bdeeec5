"""A small Chrome DevTools Protocol client for tests: headless Chromium, console errors, screenshots."""
from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--use-angle=swiftshader",
                  "--enable-unsafe-swiftshader", "--no-first-run", "--no-default-browser-check",
                  "--autoplay-policy=no-user-gesture-required", "--window-size=1280,900",
                  "--remote-debugging-port=0", "--remote-allow-origins=*"]


class Chromium:
    """``with Chromium(binary) as page: page.navigate(url); page.eval('1+1')``."""

    def __init__(self, binary: str, timeout: float = 60.0):
        import websocket  # websocket-client (test extra)

        self._profile = tempfile.TemporaryDirectory(prefix="spectre-chromium-", ignore_cleanup_errors=True)
        self.proc = subprocess.Popen([binary, *CHROMIUM_FLAGS, f"--user-data-dir={self._profile.name}", "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        port_file = Path(self._profile.name) / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while not (port_file.exists() and port_file.read_text().strip()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                err = self.proc.stderr.read().decode(errors="replace")[-2000:] if self.proc.poll() is not None else ""
                self.close()
                raise RuntimeError(f"Chromium did not start its DevTools endpoint: {err}")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10))
        page = next(t for t in targets if t.get("type") == "page")
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=timeout, suppress_origin=True)
        self._id = 0
        self.console_errors: list[str] = []
        for method in ("Runtime.enable", "Log.enable", "Page.enable"):
            self.call(method)

    def _record(self, msg: dict) -> None:
        method, p = msg.get("method"), msg.get("params", {})
        if method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            self.console_errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", [])))
        elif method == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            self.console_errors.append(d.get("exception", {}).get("description") or d.get("text", "exception"))
        elif method == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            e = p["entry"]
            self.console_errors.append(f"{e.get('source')}: {e.get('text')} {e.get('url', '')}")

    def call(self, method: str, **params) -> dict:
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self._id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self._record(msg)

    def eval(self, expression: str, await_promise: bool = False):
        r = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=await_promise)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expression[:60]}: {r['exceptionDetails'].get('text')}")
        return r.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float = 60.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.eval(expression)
            if value:
                return value
            time.sleep(0.1)
        raise TimeoutError(f"timed out waiting for {expression}")

    def navigate(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def screenshot(self, clip: dict | None = None) -> bytes:
        params = {"format": "png"}
        if clip:
            params["clip"] = {**clip, "scale": 1}
        return base64.b64decode(self.call("Page.captureScreenshot", **params)["data"])

    def close(self) -> None:
        """Stop Chromium and all its helper processes, then delete the profile.

        Chromium's renderer, GPU and crash-handler processes outlive the browser process for a moment and keep
        writing into the profile, so the whole process group is stopped and awaited before the folder goes."""
        try:
            if getattr(self, "ws", None) is not None:
                self.ws.close()
        finally:
            self._stop_group(signal.SIGTERM, grace=10.0)
            self._stop_group(signal.SIGKILL, grace=5.0)
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            for _ in range(50):  # a helper that ignored the group (its own session) may still flush a file
                shutil.rmtree(self._profile.name, ignore_errors=True)
                if not os.path.exists(self._profile.name):
                    break
                time.sleep(0.1)

    def _stop_group(self, sig: int, grace: float) -> None:
        deadline = time.monotonic() + grace
        try:
            os.killpg(self.proc.pid, sig)
            while time.monotonic() < deadline:
                self.proc.poll()  # reap the leader so that the group can empty
                os.killpg(self.proc.pid, 0)
                time.sleep(0.05)
        except ProcessLookupError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
