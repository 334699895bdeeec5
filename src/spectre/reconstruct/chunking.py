"""The official temporal chunking of SPECTRE inference (SPEC §1.5), as an index plan.

The perceptual encoder's temporal convolution (kernel 5, zero padding 2) makes the two outputs at each
end of a forward pass unreliable. The official demo therefore pads the clip with 2 copies of its first
and last frames, runs chunks of ``L = 50`` frames every ``L − 4`` frames (4 frames of overlap), merges a
last chunk of fewer than 5 frames into the previous one, drops 2 outputs at each inner chunk border and
finally the 2 padding outputs at each end. :func:`plan_chunks` returns exactly which input frames each
forward pass sees and which of its outputs are kept, so every input frame gets exactly one output.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Chunk", "plan_chunks"]


@dataclass(frozen=True)
class Chunk:
    """One forward pass: ``frames`` are input frame indices (padding repeats the end frames);
    outputs ``keep_from:keep_to`` of the pass are the results for input frames ``out_frames``."""

    frames: np.ndarray
    keep_from: int
    keep_to: int
    out_frames: np.ndarray


def plan_chunks(num_frames: int, length: int = 50, overlap: int = 4, pad: int = 2, min_tail: int = 5) -> list[Chunk]:
    """Chunk plan for ``num_frames`` frames (demo semantics: edge padding ``pad`` on both ends)."""
    if num_frames <= 0:
        return []
    if length <= overlap:
        raise ValueError(f"chunk length {length} must exceed the overlap {overlap}")
    padded = np.concatenate([np.zeros(pad, np.int64), np.arange(num_frames), np.full(pad, num_frames - 1)])
    n = len(padded)
    positions = [np.arange(s, min(s + length, n)) for s in range(0, n, length - overlap)]
    if len(positions) > 1 and len(positions[-1]) < min_tail:
        positions[-2] = np.unique(np.concatenate([positions[-2], positions[-1]]))
        positions.pop()
    trim = overlap // 2
    chunks = []
    for i, pos in enumerate(positions):
        first, last = i == 0, i == len(positions) - 1
        a = 0 if first else trim
        b = len(pos) if last else len(pos) - trim
        kept_pos = pos[a:b]
        # the final [pad:-pad] trim of the concatenation removes the padding positions
        inside = (kept_pos >= pad) & (kept_pos < n - pad)
        idx = np.flatnonzero(inside)
        if len(idx) == 0:
            continue
        chunks.append(Chunk(frames=padded[pos], keep_from=a + int(idx[0]), keep_to=a + int(idx[-1]) + 1,
                            out_frames=padded[kept_pos[inside]]))
    return chunks
