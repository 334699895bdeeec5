"""The cyclic garbage collector around what lives as long as the process: heavy imports and warm-ups.

torch's import set off three full collections (35-95 ms each) and every later full collection walked its
objects again (the command's last one: 80 ms); in the video process the compiled rasteriser's warm-up
(numba) left objects that 17 full collections of a job walked again (0.04-0.11 s, on the video's critical
path). Created with the collector paused and then frozen, they are never walked.
"""
from __future__ import annotations

import contextlib
import gc

__all__ = ["imports_kept"]


@contextlib.contextmanager
def imports_kept():
    """Run the block (imports, warm-ups) with the cyclic collector paused, then freeze what exists: it lives
    until the process ends. A collector the caller had turned off stays off."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()
