"""glibc's malloc in the commands that stream video: freed large buffers are kept for the next ones.

A job passes its frames' windows, posed vertices and pickled messages between processes in buffers of 1-10
MB. By default glibc maps each such buffer fresh and unmaps it when freed (its threshold for mapping adapts
only up to the largest buffer freed so far, and free memory at the top of the heap beyond twice that is returned),
so every buffer of every chunk is faulted in and zeroed by the kernel again (at 1080p the job's process spent
0.2 s of CPU zeroing pages). Buffers below 32 MB now come from the heap and up to 64 MB of free heap is
kept: in A/B runs the 224² and 1080p jobs 5 % faster, `spectre track` up to 4 %, for 30-50 MB more peak
memory across the job's processes (docs/performance.md, thirteenth session, with the smaller gains of the
final interleaved runs).

One arena for all of a process's threads: with one per thread (the fit's, the posing thread, the encoder's),
each kept its own free memory and the job's process grew about 90 KB a frame at 224² (peak RSS 443 MB at
246 frames, 560 MB at 1500); with one, 402 and 446 MB, at the same speed (fifteenth session).
"""
from __future__ import annotations

import ctypes
import os

__all__ = ["MALLOC_ENV", "keep_freed_buffers"]

#: glibc's own environment variables for the policy: children read them when they start
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(64 << 20),
              "MALLOC_ARENA_MAX": "1"}
#: mallopt's parameter numbers (malloc.h)
_MALLOPT = {"MALLOC_TRIM_THRESHOLD_": -1, "MALLOC_MMAP_THRESHOLD_": -3, "MALLOC_ARENA_MAX": -8}


def keep_freed_buffers() -> bool:
    """Apply the policy to this process (``mallopt``) and, through the environment, to the processes it
    starts. Values the user set win. Only with glibc (elsewhere nothing changes); returns whether applied."""
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc"):
            return False
    except (AttributeError, ValueError, OSError):  # not a glibc system
        return False
    libc = ctypes.CDLL(None)
    applied = True
    for key, value in MALLOC_ENV.items():
        if key not in os.environ:  # else glibc read the user's value when this process started
            os.environ[key] = value
            applied = libc.mallopt(_MALLOPT[key], int(value)) == 1 and applied
    return applied
