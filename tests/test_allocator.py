"""The commands' malloc policy: freed large buffers are reused, not mapped and zeroed again."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from spectre.allocator import MALLOC_ENV

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux") or
                                not os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc"),
                                reason="a glibc malloc policy")

# 20 rounds of three 8 MB buffers alive at once, written, then freed (a chunk received, unpickled and sent on):
# the minor page faults they cost
_CHURN = """
import resource, sys
from spectre.allocator import keep_freed_buffers
applied = keep_freed_buffers() if sys.argv[1] == "policy" else None
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    bufs = [bytearray(8 << 20) for _ in range(3)]
    for b in bufs:
        b[::4096] = b"x" * len(b[::4096])
    del bufs, b
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _churn(mode: str) -> tuple[str, int]:
    clean = {k: v for k, v in os.environ.items() if k not in MALLOC_ENV}
    out = subprocess.run([sys.executable, "-c", _CHURN, mode], env=clean, capture_output=True, text=True,
                         check=True).stdout.split()
    return out[0], int(out[1])


def test_freed_buffers_are_reused_instead_of_faulted_in_again():
    _, default_faults = _churn("default")
    applied, policy_faults = _churn("policy")
    assert applied == "True"
    # glibc's default gives most of the 60 buffers back and faults them in again (2048 pages each); the
    # policy faults in the first round's three
    assert default_faults > 20 * 2048
    assert policy_faults < 5 * 2048


def test_children_inherit_the_policy_and_a_users_values_win(monkeypatch):
    from spectre.allocator import keep_freed_buffers

    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "12345")
    assert keep_freed_buffers()
    assert os.environ["MALLOC_MMAP_THRESHOLD_"] == MALLOC_ENV["MALLOC_MMAP_THRESHOLD_"]
    assert os.environ["MALLOC_TRIM_THRESHOLD_"] == "12345"


# threads that each hold a buffer: the arenas malloc made for them (glibc's malloc_info names each heap)
_THREADS = """
import ctypes, sys, tempfile, threading
from spectre.allocator import keep_freed_buffers
if sys.argv[1] == "policy":
    keep_freed_buffers()
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.fopen.restype = ctypes.c_void_p
held, go = [], threading.Barrier(4)
def work():
    go.wait()  # all four at once, as the job's threads
    held.append(libc.malloc(1 << 20))
threads = [threading.Thread(target=work) for _ in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
with tempfile.NamedTemporaryFile("r") as f:
    fp = libc.fopen(f.name.encode(), b"w")
    libc.malloc_info(0, ctypes.c_void_p(fp))
    libc.fclose(ctypes.c_void_p(fp))
    print(f.read().count("<heap nr="))
"""


def test_a_processs_threads_share_one_arena():
    """Each thread's own arena kept its own free memory: the job's process grew with the clip's length."""
    clean = {k: v for k, v in os.environ.items() if k not in MALLOC_ENV}
    heaps = {mode: int(subprocess.run([sys.executable, "-c", _THREADS, mode], env=clean, capture_output=True,
                                      text=True, check=True).stdout) for mode in ("default", "policy")}
    assert heaps["default"] > 1 and heaps["policy"] == 1
