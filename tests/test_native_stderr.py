"""The native-stderr filter drops MediaPipe's C++ log lines and passes everything else, a progress bar's
redraws (``\\r``, no newline) as they come rather than when the filter ends."""
from __future__ import annotations

import os
import tempfile
import time

from spectre.faces.native_stderr import native_stderr_filtered


def test_filter_drops_native_lines_and_passes_bar_redraws_at_once(monkeypatch):
    monkeypatch.delenv("SPECTRE_DEBUG", raising=False)
    with tempfile.TemporaryFile() as sink:
        real = os.dup(2)
        os.dup2(sink.fileno(), 2)  # what the terminal would get
        try:
            with native_stderr_filtered():
                os.write(2, b"I0000 00:00:1712.345   123 gl_context.cc:357] GL version: 3.2\n")
                os.write(2, b"our warning\n")
                os.write(2, b"\rclip:  50%|#####     | 5/10")
                deadline = time.monotonic() + 5.0
                while b"5/10" not in (seen := os.pread(sink.fileno(), 4096, 0)) and time.monotonic() < deadline:
                    time.sleep(0.01)
                assert b"5/10" in seen, "the bar's redraw waited for the end of the filter"
                os.write(2, b"\rclip: 100%|##########| 10/10\n")
        finally:
            os.dup2(real, 2)
            os.close(real)
        out = os.pread(sink.fileno(), 4096, 0)
    assert b"gl_context" not in out
    assert b"our warning\n" in out and out.endswith(b"10/10\n")
