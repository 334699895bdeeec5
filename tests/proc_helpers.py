"""Helpers for tests of processes and threads: whether a process still runs, and waiting with a hang guard."""
from __future__ import annotations

import time


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, ended but not yet reaped, does not)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return "zombie" not in f.read()
    except OSError:
        return False


def wait_until(cond, seconds: float = 60.0) -> None:
    """Poll ``cond`` until it holds; fail after ``seconds`` (a hang guard, not a speed test)."""
    deadline = time.monotonic() + seconds
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)
