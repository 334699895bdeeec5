"""Per-frame arrays that a streaming job fills chunk by chunk.

A job keeps a few arrays with a row per frame of the video (the tracked face, the fit's results). Kept as
a list of chunks and concatenated at the end, each was held twice at the end of the job, and that peak
grew with the video's length. :class:`Rows` appends in place instead (room for the frames the video says
it has, else amortised doubling; rows never written are never touched, so they cost no memory), is read
by absolute row, and forgets rows from the front that a stage will not read again.
"""
from __future__ import annotations

import numpy as np

__all__ = ["Rows"]

#: the most rows reserved up front from a video's announced length (its header may lie)
MAX_RESERVED = 1 << 16


class Rows:
    """A (T, *shape) array of ``dtype`` growing at the end. ``rows[a:b]`` or ``rows[index_array]`` read
    absolute rows (those not forgotten); ``len(rows)`` counts every row appended."""

    def __init__(self, shape: tuple[int, ...] = (), dtype=np.float32, expect: int = 0):
        """``expect``: the rows expected (a video's announced frame count), reserved with a little slack."""
        expect = max(int(expect), 0)
        self.data = np.empty((min(expect + expect // 32 + 64, MAX_RESERVED), *shape), dtype)
        self.first = 0  # absolute row of data[0]
        self.held = 0   # rows in data

    def __len__(self) -> int:
        return self.first + self.held

    def append(self, x: np.ndarray) -> None:
        x = np.asarray(x)
        need = self.held + len(x)
        if need > len(self.data):
            new = np.empty((max(need, 2 * len(self.data)), *self.data.shape[1:]), self.data.dtype)
            new[:self.held] = self.data[:self.held]
            self.data = new
        self.data[self.held:need] = x
        self.held = need

    def forget(self, before: int) -> None:
        """Drop the rows before absolute row ``before`` (the rest move to the front: a stage that forgets
        as it goes holds only what it still reads)."""
        k = min(before - self.first, self.held)
        if k <= 0:
            return
        self.data[:self.held - k] = self.data[k:self.held]
        self.first += k
        self.held -= k

    def __getitem__(self, rows):
        if isinstance(rows, slice):
            start, stop, step = rows.indices(len(self))
            if start < self.first:
                raise IndexError(f"rows before {self.first} were forgotten")
            return self.data[start - self.first:max(stop - self.first, 0):step]
        rows = np.asarray(rows)
        if rows.size and rows.min() < self.first:
            raise IndexError(f"rows before {self.first} were forgotten")
        return self.data[:self.held][rows - self.first]

    def array(self) -> np.ndarray:
        """All rows as one array, without a copy (a view: valid until the next append)."""
        if self.first:
            raise IndexError(f"rows before {self.first} were forgotten")
        return self.data[:self.held]
