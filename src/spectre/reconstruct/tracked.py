"""Tracked chunks as the overlapped job consumes them: the largest face's landmarks and, with a video,
each frame already cut to the video's window. Without torch, so that the tracking process
(:mod:`.trackproc`) and the job's own process make them with the same code."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from ..errors import NoFaceError
from ..faces.crop import FACE_CROP_SCALE, face_crop_transform
from ..faces.track import FaceTrack, FaceTracks, select_faces
from ..faces.tracks import FaceChunk
from ..io.video import CHUNK_MB
from .window import VideoWindow

__all__ = ["CutSettings", "TrackedChunk", "TrackedParts", "cut_chunk"]


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


def cut_chunk(fc: FaceChunk, row: int, window: VideoWindow | None,
              crop_scale: float) -> tuple[TrackedChunk, FaceTracks, FaceTrack]:
    """A tracked chunk (its first row ``row``) as the job keeps it, the chunk's tracks without its frames,
    and its largest face per frame. ``window`` (stateful: it follows the face) cuts each frame."""
    faces = fc.faces
    sel = faces.largest_per_frame()
    part = FaceTracks(faces.indices, faces.pts_seconds, faces.width, faces.height, faces.fps, dict(faces.tracks))
    valid = np.asarray(sel.valid, bool)
    lm = np.asarray(sel.landmarks68, np.float64)
    ch = TrackedChunk(row, len(faces.indices), lm, valid, np.asarray(sel.points478), np.asarray(faces.pts_seconds))
    if window is not None:
        boxes = np.where(valid[:, None], sel.bbox, np.nan)
        ch.tw = window.transforms(boxes, faces.pts_seconds)
        frames = window.apply(fc.frames.frames, ch.tw)
        if frames is fc.frames.frames:
            frames = frames.copy()  # full frame: do not keep the tracker's whole chunk alive
        ch.frames = frames
        ch.tf = _crop_tforms(lm, valid, crop_scale)
    return ch, part, sel


class TrackedParts:
    """What a job keeps of its tracked chunks besides the frames: each chunk's tracks and largest face."""

    def __init__(self, path):
        self.path = path
        self.parts: list[FaceTracks] = []
        self.chosen: list[FaceTrack] = []
        self.rows = 0

    def add(self, ch: TrackedChunk, part: FaceTracks, chosen: FaceTrack) -> TrackedChunk:
        self.parts.append(part)
        self.chosen.append(chosen)
        self.rows += ch.n
        return ch

    def check_faces(self) -> None:
        """:class:`NoFaceError` when no frame had a face."""
        if not any(np.asarray(c.valid).any() for c in self.chosen):
            raise NoFaceError(f"{self.path}: no face found in any of its {self.rows} frames")

    def result(self) -> tuple[FaceTracks, FaceTrack]:
        """The per-frame tracks and the selected (largest) face track."""
        tracks = FaceTracks.concat(self.parts)
        (track,) = select_faces(tracks, "largest").tracks.values()
        return tracks, track
