"""Run a command as a user at a terminal sees it: its stdout and stderr a pseudo-terminal 100 columns wide
(progress bars draw only on a terminal, and not at all at width 0). Returns (exit code, everything shown)."""
from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import termios


def run_in_terminal(cmd: list[str], timeout: float = 300) -> tuple[int, str]:
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=follower, stderr=follower)
    os.close(follower)
    chunks = []
    try:
        while True:
            try:
                data = os.read(leader, 65536)
            except OSError:  # every writer has closed the terminal (Linux: EIO)
                break
            if not data:
                break
            chunks.append(data)
        code = proc.wait(timeout=timeout)
    finally:
        os.close(leader)
        if proc.poll() is None:
            proc.kill()
    return code, b"".join(chunks).decode(errors="replace")
