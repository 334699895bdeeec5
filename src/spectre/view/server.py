"""A local web server for one reconstruction: the page, the vendored three.js, the video (with HTTP
range requests, which browsers need to seek), the ``.glb`` and the curves as JSON.

It binds to 127.0.0.1 only and serves exactly those resources (no file-system browsing).
"""
from __future__ import annotations

import json
import mimetypes
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path

from .files import ViewFiles

__all__ = ["ViewServer", "STATIC_FILES"]

#: files of the page, in ``spectre/view/static``
STATIC_FILES = ("index.html", "viewer.js", "three-viewer.min.js")
_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
          ".json": "application/json", ".glb": "model/gltf-binary"}


def _static(name: str) -> bytes:
    return resources.files("spectre.view").joinpath("static", name).read_bytes()


class _Handler(BaseHTTPRequestHandler):
    server: ViewServer

    def log_message(self, format, *args):  # noqa: A002 - quiet: the CLI prints the URL only
        return

    def _send(self, body: bytes, ctype: str, status: int = 200, extra: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _file(self, path: Path, ctype: str) -> None:
        size = path.stat().st_size
        m = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", "").strip())
        if m and (m.group(1) or m.group(2)):
            if m.group(1):
                start = int(m.group(1))
                end = min(int(m.group(2)) if m.group(2) else size - 1, size - 1)
            else:  # suffix range: the last N bytes
                start, end = max(size - int(m.group(2)), 0), size - 1
            if start > end or start >= size:
                self._send(b"", ctype, 416, {"Content-Range": f"bytes */{size}"})
                return
            with open(path, "rb") as fh:
                fh.seek(start)
                body = fh.read(end - start + 1)
            self._send(body, ctype, 206, {"Content-Range": f"bytes {start}-{end}/{size}", "Accept-Ranges": "bytes"})
            return
        self._send(path.read_bytes(), ctype, 200, {"Accept-Ranges": "bytes"})

    def do_GET(self):  # noqa: N802 - http.server's naming
        files = self.server.files
        route = self.path.split("?", 1)[0]
        try:
            if route in ("/", "/index.html"):
                self._send(_static("index.html"), _TYPES[".html"])
            elif route.startswith("/static/") and route[len("/static/"):] in STATIC_FILES:
                name = route[len("/static/"):]
                self._send(_static(name), _TYPES[Path(name).suffix])
            elif route == "/video":
                ctype = mimetypes.guess_type(files.video.name)[0] or "video/mp4"
                self._file(files.video, ctype)
            elif route == "/head.glb":
                self._file(files.glb, _TYPES[".glb"])
            elif route == "/data.json":
                self._send(json.dumps(files.data).encode("utf-8"), _TYPES[".json"])
            elif route == "/favicon.ico":
                self._send(b"", "image/x-icon", 204)
            else:
                self._send(b"not found", "text/plain", 404)
        except (BrokenPipeError, ConnectionResetError):
            pass

    do_HEAD = do_GET


class ViewServer(ThreadingHTTPServer):
    """``ViewServer(files, port=0)``: port 0 picks a free port; ``url`` says where; ``start()`` serves in
    a daemon thread, ``serve_forever()`` in this one."""

    daemon_threads = True

    def __init__(self, files: ViewFiles, port: int = 0):
        self.files = files
        super().__init__(("127.0.0.1", int(port)), _Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="spectre-view", daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        self.shutdown()
        self.server_close()
