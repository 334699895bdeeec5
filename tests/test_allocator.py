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
