"""Face crops of one track, decoded and warped in a stream for a chunk plan that only moves forward.

The learned backends ask for crops chunk by chunk (:mod:`.chunking`); frames are decoded once, in
order (in a thread, one chunk ahead, while the networks run), and each crop is handed out once, so memory
does not grow with the clip length.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ..errors import InputError

__all__ = ["CropStream"]


class CropStream:
    """``stream(positions)`` -> (N, 3, size, size) float crops in [0, 1] for increasing track positions.

    ``frame_indices``: the video frame index of each track position; ``tforms`` (T, 3, 3): frame pixel
    -> crop pixel transform per position; ``warp(frames, tforms, size)`` cuts the crops.
    """

    def __init__(self, source, frame_indices, tforms: np.ndarray, size: int, warp: Callable,
                 decode_chunk: int = 32):
        self.path = source.path
        self.positions = {int(fi): i for i, fi in enumerate(np.asarray(frame_indices))}
        self.tforms = tforms
        self.size = size
        self.warp = warp
        self._chunks = source.chunks_ahead(decode_chunk)  # decoded beside the networks
        self._pending: dict[int, np.ndarray] = {}

    def __call__(self, pos: np.ndarray) -> torch.Tensor:
        want = set(int(p) for p in pos)
        while not want <= set(self._pending):
            try:
                ch = next(self._chunks)
            except StopIteration:
                break
            rows = [(k, self.positions[int(fi)]) for k, fi in enumerate(ch.indices) if int(fi) in self.positions]
            if rows:
                ks, ps = zip(*rows)
                crops = self.warp(ch.frames[list(ks)], self.tforms[list(ps)], self.size)
                for p, c in zip(ps, crops):
                    self._pending[p] = np.asarray(c, np.float32)
        missing = want - set(self._pending)
        if missing:
            raise InputError(f"{self.path}: frames {sorted(missing)[:3]} could not be decoded again")
        out = torch.from_numpy(np.stack([self._pending.pop(int(p)) for p in pos])).permute(0, 3, 1, 2)
        return out.contiguous()
