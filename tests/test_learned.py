"""Learned backend: the official chunking of SPEC §1.5 and (when nets land) the end-to-end inference."""
from __future__ import annotations

import numpy as np
import pytest

from spectre.reconstruct.chunking import plan_chunks


def official_demo_outputs(T, L=50):
    """The official demo's bookkeeping, restated from SPEC §1.5: pad 2+2, chunks of L every L-4, a tail
    under 5 frames merged, 2 outputs trimmed at inner borders, then the concatenation trimmed [2:-2].
    Returns the input frame each final output belongs to."""
    padded = [0, 0] + list(range(T)) + [T - 1, T - 1]
    idx = list(range(len(padded)))
    chunks = [idx[i:i + L] for i in range(0, len(idx), L - 4)]
    if len(chunks) > 1 and len(chunks[-1]) < 5:
        chunks[-2] = sorted(set(chunks[-2] + chunks[-1]))
        chunks = chunks[:-1]
    outs = []
    for c, ch in enumerate(chunks):
        if len(chunks) == 1:
            kept = ch
        elif c == 0:
            kept = ch[:-2]
        elif c == len(chunks) - 1:
            kept = ch[2:]
        else:
            kept = ch[2:-2]
        outs += [padded[i] for i in kept]
    return outs[2:-2]


@pytest.mark.parametrize("T", [1, 2, 3, 7, 45, 46, 47, 50, 51, 92, 93, 96, 97, 100, 137, 138, 139, 140, 250])
def test_plan_matches_official_bookkeeping(T):
    plan = plan_chunks(T)
    outs = np.concatenate([c.out_frames for c in plan]).tolist()
    assert outs == official_demo_outputs(T)
    assert outs == list(range(T)), "every input frame gets exactly one output, in order"
    for c in plan:
        assert len(c.frames) <= 50 + 4
        assert c.keep_to - c.keep_from == len(c.out_frames)
        assert (c.frames[c.keep_from:c.keep_to] == c.out_frames).all()


def test_inner_chunk_borders_drop_two_outputs_and_tail_merges():
    plan = plan_chunks(100)  # padded 104 -> starts 0, 46, 92 (12 frames: kept as its own chunk)
    assert [len(c.frames) for c in plan] == [50, 50, 12]
    assert plan[0].keep_from == 2 and plan[0].keep_to == 48  # padding dropped, last 2 trimmed
    assert plan[1].keep_from == 2 and plan[1].keep_to == 48
    assert plan[2].keep_from == 2 and plan[2].keep_to == 10  # first 2 trimmed, end padding dropped
    merged = plan_chunks(134)  # padded 138 -> tail chunk at 138 is empty; 92..137 = 46 frames
    short = plan_chunks(135)   # padded 139 -> tail of 1 frame (< 5) merged into the previous chunk
    assert len(short) == len(merged) == 3 and len(short[-1].frames) == 47


def test_single_chunk_keeps_all_but_padding():
    (c,) = plan_chunks(10)
    assert c.frames.tolist() == [0, 0] + list(range(10)) + [9, 9]
    assert (c.keep_from, c.keep_to) == (2, 12)
