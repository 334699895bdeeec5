"""Tracked chunks as the overlapped job consumes them: the largest face's landmarks and, with a video,
each frame already cut to the video's window. Without torch, so that the tracking process
(:mod:`.trackproc`) and the job's own process make them with the same code."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from ..errors import NoFaceError
from ..faces.crop import FACE_CROP_SCALE, face_crop_transform
from ..faces.tracks import TRACK_FIELDS, FaceChunk, FaceTrack, FaceTracks, chosen_counts, most_chosen
from ..io.video import CHUNK_MB
from .rows import Rows
from .window import VideoWindow

__all__ = ["ChunkFaces", "CutSettings", "TrackedChunk", "TrackedParts", "cut_chunk"]


@dataclass(frozen=True)
class CutSettings:
    """What tracking needs to know of a job's config. The defaults are ``ReconstructConfig``'s, repeated
    because the command line builds these before it imports the configuration (which imports torch;
    tests/test_track_process.py checks that they agree)."""

    video: bool = True  # frames are cut to the video's window (a video is written)
    layout: str = "grid"
    video_frame: str = "auto"
    video_height: int = 512
    crop_scale: float = FACE_CROP_SCALE
    chunk_mb: int = CHUNK_MB
    track_chunk: int = 64

    @classmethod
    def of(cls, cfg, video: bool) -> CutSettings:
        """The settings of a ``ReconstructConfig``."""
        return cls(video=bool(video), layout=cfg.layout, video_frame=cfg.video_frame,
                   video_height=int(cfg.video_height), crop_scale=float(cfg.crop_scale),
                   chunk_mb=int(cfg.pipeline.chunk_mb), track_chunk=int(cfg.track_chunk))

    def with_given(self, **given) -> CutSettings:
        """These settings with the values that were given (``None``: not given)."""
        return dataclasses.replace(self, **{k: v for k, v in given.items() if v is not None})

    def window(self, width: int, height: int) -> VideoWindow | None:
        """A fresh window of a ``width`` x ``height`` video (None without a video)."""
        if not self.video:
            return None
        return VideoWindow(width, height, self.video_frame, self.video_height, layout=self.layout)


@dataclass
class TrackedChunk:
    """One tracked chunk of the largest face: track rows ``row:row + n`` and, with a video, each frame's
    window (uint8), its transform, crop transforms and timestamps."""

    row: int
    n: int
    lm: np.ndarray          # (n, 68, 2) input px
    valid: np.ndarray       # (n,) bool
    p478: np.ndarray        # (n, 478, 3)
    times: np.ndarray       # (n,) seconds
    frames: np.ndarray | None = None  # (n, H, W, 3) uint8 in the video's window
    tw: np.ndarray | None = None      # (n, 3, 3) input px -> window px
    tf: np.ndarray | None = None      # (n, 3, 3) input px -> official crop px


def _crop_tforms(lm68: np.ndarray, valid: np.ndarray, scale: float) -> np.ndarray:
    """Per-frame official crop transforms for the valid rows (identity elsewhere: nothing is drawn there)."""
    out = np.tile(np.eye(3), (len(valid), 1, 1))
    if valid.any():
        out[valid] = face_crop_transform(lm68[valid], scale=scale)
    return out


@dataclass
class ChunkFaces:
    """What a job keeps of a tracked chunk's faces: its frames' numbers and times, the largest face of
    each frame and in how many frames each track was that face (the other faces are dropped here, in
    the tracking process when there is one: only this crosses to the job)."""

    indices: np.ndarray     # (n,) frame numbers
    times: np.ndarray       # (n,) seconds
    largest: FaceTrack      # per frame, the largest face (:meth:`FaceTracks.largest_per_frame`)
    counts: dict[int, int]  # track id -> frames it was the largest
    size: tuple[int, int, float]  # the video's width, height and frame rate as the tracker saw them


def cut_chunk(fc: FaceChunk, row: int, window: VideoWindow | None,
              crop_scale: float) -> tuple[TrackedChunk, ChunkFaces]:
    """A tracked chunk (its first row ``row``) as the job keeps it and its faces. ``window`` (stateful: it
    follows the face) cuts each frame."""
    faces = fc.faces
    sel = faces.largest_per_frame()
    kept = ChunkFaces(np.asarray(faces.indices), np.asarray(faces.pts_seconds), sel,
                      chosen_counts(faces.largest_ids()), (faces.width, faces.height, faces.fps))
    valid = np.asarray(sel.valid, bool)
    lm = np.asarray(sel.landmarks68, np.float64)
    ch = TrackedChunk(row, len(faces.indices), lm, valid, np.asarray(sel.points478), kept.times)
    if window is not None:
        boxes = np.where(valid[:, None], sel.bbox, np.nan)
        ch.tw = window.transforms(boxes, faces.pts_seconds)
        frames = window.apply(fc.frames.frames, ch.tw)
        if frames is fc.frames.frames:
            frames = frames.copy()  # full frame: do not keep the tracker's whole chunk alive
        ch.frames = frames
        ch.tf = _crop_tforms(lm, valid, crop_scale)
    return ch, kept


class TrackedParts:
    """What a job keeps of its tracked chunks besides the frames: the largest face of every frame, in
    per-frame arrays that grow in place (:class:`~.rows.Rows`), so the whole track at the end is no copy."""

    def __init__(self, path, frames: int = 0):
        """``frames``: the video's announced frame count (room is reserved for them)."""
        self.path = path
        self._track = {f: None for f in TRACK_FIELDS}
        self._expect = frames
        self._indices = Rows((), np.int64, frames)
        self._times = Rows((), np.float64, frames)
        self._counts: dict[int, int] = {}
        self._any = False  # a valid face in some frame
        self._size: tuple[int, int, float] = (0, 0, 0.0)

    @property
    def rows(self) -> int:
        return len(self._indices)

    def add(self, ch: TrackedChunk, faces: ChunkFaces) -> TrackedChunk:
        for f, rows in self._track.items():
            x = getattr(faces.largest, f)
            if rows is None:
                rows = self._track[f] = Rows(x.shape[1:], x.dtype, self._expect)
            rows.append(x)
        self._indices.append(faces.indices)
        self._times.append(faces.times)
        for tid, n in faces.counts.items():
            self._counts[tid] = self._counts.get(tid, 0) + n
        self._any = self._any or bool(np.asarray(faces.largest.valid).any())
        self._size = faces.size
        return ch

    def check_faces(self) -> None:
        """:class:`NoFaceError` when no frame had a face."""
        if not self._any:
            raise NoFaceError(f"{self.path}: no face found in any of its {self.rows} frames")

    def result(self) -> tuple[FaceTracks, FaceTrack]:
        """The per-frame tracks (with the selected face only) and the selected (largest) face's track."""
        tid = most_chosen(self._counts)
        track = FaceTrack(tid, *(self._track[f].array() for f in TRACK_FIELDS))
        tracks = FaceTracks(self._indices.array(), self._times.array(), *self._size, {tid: track})
        return tracks, track
