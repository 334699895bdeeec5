"""Gap handling: frames wait here until no missing face can still come back into them.

A face missing for at most ``max_gap`` frames and then matched again is filled in linearly across the
gap and flagged ``interpolated``; the frames of an open gap are held back (at most ``max_gap`` of them),
so every chunk the tracker yields is final and memory stays bounded on any length.
"""
from __future__ import annotations

import numpy as np

from ..io.video import FrameChunk, VideoSource
from .landmarks import mp478_to_ibug68
from .matching import ActiveTrack
from .tracks import FaceChunk, FaceTrack, FaceTracks


def _gather(refs: list[tuple[np.ndarray, int]]) -> np.ndarray:
    """Frames given as (chunk array, row) -> one array; consecutive rows of one chunk become a view
    (1080p chunks are ~200 MB: copying them again would double the cost of the stream)."""
    parts = []
    for arr, row in refs:
        if parts and parts[-1][0] is arr and parts[-1][2] == row:
            parts[-1][2] = row + 1
        else:
            parts.append([arr, row, row + 1])
    views = [arr[a:b] for arr, a, b in parts]
    return views[0] if len(views) == 1 else np.concatenate(views)


def frontier(active: list[ActiveTrack], last: int, max_gap: int) -> int:
    """First frame that a face missing since then could still fill: every frame before it is final."""
    open_gaps = [a.last_frame + 1 for a in active if a.last_frame < last and last - a.last_frame <= max_gap]
    return min(open_gaps) if open_gaps else last + 1


class PendingFrames:
    """Per-frame observations ``{track_id: (points, score, present)}`` and frame references not yet final."""

    def __init__(self, source: VideoSource):
        self.source = source
        self._obs: dict[int, dict[int, tuple[np.ndarray, float, bool]]] = {}
        self._frames: list[tuple[np.ndarray, int]] = []
        self._idx: list[int] = []
        self._pts: list[float] = []

    def __len__(self) -> int:
        return len(self._idx)

    def add(self, frame_index: int, pts_seconds: float, frame_ref: tuple[np.ndarray, int],
            observed: dict[int, tuple[np.ndarray, float, bool]]) -> None:
        """One tracked frame; ``frame_ref`` is (chunk array, row): a reference, not a copy."""
        self._obs[frame_index] = observed
        self._frames.append(frame_ref)
        self._idx.append(frame_index)
        self._pts.append(pts_seconds)

    def fill_gap(self, track: ActiveTrack, frame_index: int, points: np.ndarray) -> None:
        """``track`` is seen again at ``frame_index``: interpolate its points over the frames it missed."""
        gap = frame_index - track.last_frame - 1
        for k in range(1, gap + 1):
            a = k / (gap + 1)
            self._obs[track.last_frame + k][track.track_id] = ((1 - a) * track.points + a * points, 0.0, False)

    def pop_before(self, first_open: int) -> FaceChunk | None:
        """The final frames (index < ``first_open``) as one ``FaceChunk``, or None when there are none."""
        n = sum(1 for i in self._idx if i < first_open)
        if not n:
            return None
        out = self._emit(self._frames[:n], self._idx[:n], self._pts[:n])
        del self._frames[:n], self._idx[:n], self._pts[:n]
        return out

    def pop_all(self) -> FaceChunk | None:
        return self.pop_before(self._idx[-1] + 1) if self._idx else None

    def _emit(self, frames, idx, pts_s) -> FaceChunk:
        n = len(idx)
        ids = sorted({tid for i in idx for tid in self._obs[i]})
        tracks = {}
        for tid in ids:
            tr = FaceTrack.empty(tid, n)
            for r, fi in enumerate(idx):
                rec = self._obs[fi].get(tid)
                if rec is None:
                    continue
                tr.points478[r], tr.confidence[r], tr.present[r] = rec
                tr.interpolated[r] = not rec[2]
            ok = tr.valid
            tr.landmarks68[ok] = mp478_to_ibug68(tr.points478[ok, :, :2])
            tr.bbox[ok] = np.concatenate([tr.points478[ok, :, :2].min(1), tr.points478[ok, :, :2].max(1)], axis=1)
            tracks[tid] = tr
        for fi in idx:
            self._obs.pop(fi, None)
        src = self.source
        faces = FaceTracks(np.asarray(idx, np.int64), np.asarray(pts_s, np.float64), src.width, src.height,
                           src.fps, tracks)
        return FaceChunk(FrameChunk(_gather(frames), faces.indices, faces.pts_seconds), faces)
