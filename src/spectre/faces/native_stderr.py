"""Keep MediaPipe's native start-up chatter off the terminal without hiding anything else.

absl/TFLite write their INFO/WARNING lines straight to file descriptor 2 from C++, before any Python
log set-up can apply, so the only place to drop them is the descriptor itself.
"""
from __future__ import annotations

import contextlib
import os
import re
import sys
import threading

_NATIVE_NOISE = re.compile(rb"^(?:[IW]\d{4} [\d:.]+ +\d+ \S+\.cc:\d+\]|INFO: Created TensorFlow Lite"
                           rb"|WARNING: All log messages before absl::InitializeLog)")
_filter_depth = 0


@contextlib.contextmanager
def native_stderr_filtered():
    """Route fd 2 through a filter that drops MediaPipe's native INFO/WARNING lines and passes every
    other line (our warnings, progress bars, errors) through unchanged. SPECTRE_DEBUG keeps everything."""
    global _filter_depth
    if os.environ.get("SPECTRE_DEBUG") or _filter_depth:
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
        read_end, write_end = os.pipe()
    except OSError:  # no usable fd 2 (embedded interpreters): leave it alone
        yield
        return

    def pump() -> None:
        try:
            with os.fdopen(read_end, "rb", buffering=0) as pipe:
                pending = b""
                while chunk := pipe.read(65536):
                    pending += chunk
                    *lines, pending = pending.split(b"\n")
                    out = b"".join(ln + b"\n" for ln in lines if not _NATIVE_NOISE.match(ln))
                    if b"\r" in pending:  # a progress bar redrawing its line (native lines end in \n): now
                        out, pending = out + pending, b""
                    if out:
                        os.write(saved, out)
                if pending:  # a partial line (progress bars redraw with \r) is passed on as is
                    os.write(saved, pending)
        finally:
            os.close(saved)

    os.dup2(write_end, 2)
    os.close(write_end)
    thread = threading.Thread(target=pump, name="stderr-filter", daemon=True)
    thread.start()
    _filter_depth += 1
    try:
        yield
    finally:
        _filter_depth -= 1
        sys.stderr.flush()
        os.dup2(saved, 2)  # closes our write end: the pump drains and stops
        # a child process spawned meanwhile (a stage process, multiprocessing's resource tracker)
        # inherited the pipe as its stderr: the pump then serves it until it exits (and closes ``saved``
        # itself), so do not wait for it beyond our own lines; it is not a ``spectre-`` worker thread,
        # which the command waits for at exit
        thread.join(timeout=0.5)
