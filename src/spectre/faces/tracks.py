"""Face tracks: one identity's per-frame points, boxes and flags, a clip's tracks, and face selection.

Every array is aligned to the frames of the owning ``FaceTracks``; invalid frames hold NaN, so tracks of
different chunks concatenate without bookkeeping. ``FaceTracker`` (track.py) produces them.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from ..io.video import FrameChunk
from .landmarks import NUM_MESH_POINTS

#: a :class:`FaceTrack`'s per-frame arrays
TRACK_FIELDS = ("points478", "landmarks68", "bbox", "present", "interpolated", "confidence")


@dataclass
class FaceTrack:
    """One identity; every array is aligned to the frames of the owning ``FaceTracks`` (length T)."""

    track_id: int
    points478: np.ndarray     # (T,478,3) float32: x, y frame pixels, z = MediaPipe depth * width; NaN if invalid
    landmarks68: np.ndarray   # (T,68,2) float32 iBUG-68 pixels; NaN if invalid
    bbox: np.ndarray          # (T,4) float32 x0,y0,x1,y1 of the 478 points; NaN if invalid
    present: np.ndarray       # (T,) bool: detected in this frame
    interpolated: np.ndarray  # (T,) bool: filled across a short gap
    confidence: np.ndarray    # (T,) float32: face-detection score (0 when none matched / invalid)

    @property
    def valid(self) -> np.ndarray:
        return self.present | self.interpolated

    @property
    def size(self) -> np.ndarray:
        """(T,) bbox w + h (the official 'largest face' criterion), 0 where invalid."""
        s = (self.bbox[:, 2] - self.bbox[:, 0]) + (self.bbox[:, 3] - self.bbox[:, 1])
        return np.where(self.valid, np.nan_to_num(s), 0.0)

    @classmethod
    def empty(cls, track_id: int, n: int) -> FaceTrack:
        return cls(track_id, np.full((n, NUM_MESH_POINTS, 3), np.nan, np.float32), np.full((n, 68, 2), np.nan, np.float32),
                   np.full((n, 4), np.nan, np.float32), np.zeros(n, bool), np.zeros(n, bool), np.zeros(n, np.float32))

    def take(self, rows: np.ndarray) -> FaceTrack:
        return FaceTrack(self.track_id, *(getattr(self, f)[rows] for f in TRACK_FIELDS))


@dataclass
class FaceTracks:
    """Face tracks over a run of frames: ``indices`` (T,) frame numbers, ``pts_seconds`` (T,)."""

    indices: np.ndarray
    pts_seconds: np.ndarray
    width: int
    height: int
    fps: float
    tracks: dict[int, FaceTrack] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    @classmethod
    def concat(cls, parts: list[FaceTracks]) -> FaceTracks:
        if not parts:
            raise ValueError("FaceTracks.concat needs at least one part")
        ids = sorted({i for p in parts for i in p.tracks})
        tracks = {}
        for tid in ids:
            pieces = [p.tracks.get(tid) or FaceTrack.empty(tid, len(p)) for p in parts]
            tracks[tid] = FaceTrack(tid, *(np.concatenate([getattr(x, f) for x in pieces]) for f in TRACK_FIELDS))
        p0 = parts[0]
        return cls(np.concatenate([p.indices for p in parts]), np.concatenate([p.pts_seconds for p in parts]),
                   p0.width, p0.height, p0.fps, tracks)

    def largest_ids(self) -> np.ndarray:
        """(T,) int64: in every frame the id of the valid face with the largest bbox w + h (the official
        rule; ties go to the smaller id), -1 where no face is valid."""
        out = np.full(len(self), -1, np.int64)
        ids = sorted(self.tracks)
        if ids:
            sizes = np.stack([self.tracks[i].size for i in ids])  # (K,T)
            has = sizes.max(0) > 0
            out[has] = np.asarray(ids, np.int64)[sizes.argmax(0)[has]]
        return out

    def largest_per_frame(self) -> FaceTrack:
        """The official rule: in every frame, the valid face with the largest bbox w + h. Its id is the
        track chosen most often (:func:`most_chosen`)."""
        chosen = self.largest_ids()
        out = FaceTrack.empty(-1, len(self))
        for tid, src in self.tracks.items():
            rows = np.flatnonzero(chosen == tid)
            for f in TRACK_FIELDS:
                getattr(out, f)[rows] = getattr(src, f)[rows]
        out.track_id = most_chosen(chosen_counts(chosen), default=min(self.tracks, default=-1))
        return out


def chosen_counts(chosen: np.ndarray) -> dict[int, int]:
    """How many frames each track was chosen in (``chosen``: :meth:`FaceTracks.largest_ids`)."""
    ids, counts = np.unique(chosen[chosen >= 0], return_counts=True)
    return {int(i): int(c) for i, c in zip(ids, counts)}


def most_chosen(counts: dict[int, int], default: int = -1) -> int:
    """The id chosen in the most frames (ties: the smaller id); ``default`` when none was chosen."""
    return min(counts, key=lambda i: (-counts[i], i)) if counts else default


@dataclass
class FaceChunk:
    """Frames and their face tracks (same frames, same order)."""

    frames: FrameChunk
    faces: FaceTracks


def select_faces(tracks: FaceTracks, face: str | int = "largest") -> FaceTracks:
    """``"largest"``: one track, per frame the largest face (official behaviour); ``"all"``: every
    track; an int (or digit string): that track id (``InputError`` if it does not exist)."""
    if face == "all":
        return tracks
    if face == "largest":
        t = tracks.largest_per_frame()
        sel = {t.track_id: t} if t.valid.any() else {}
    else:
        try:
            tid = int(face)
        except (TypeError, ValueError):
            raise InputError(f"--face must be 'largest', 'all' or a track id, got {face!r}") from None
        if tid not in tracks.tracks:
            raise InputError(f"no face track {tid} (tracks: {sorted(tracks.tracks) or 'none'})")
        sel = {tid: tracks.tracks[tid]}
    return FaceTracks(tracks.indices, tracks.pts_seconds, tracks.width, tracks.height, tracks.fps, sel)
