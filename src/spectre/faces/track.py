"""The face tracker: MediaPipe meshes per frame, identities kept across frames, over a streamed video.

MediaPipe's face mesh runs in tracking mode (it re-detects only when it has lost a face) with refined
lips and irises (mesh.py); identities are kept by our own matching (matching.py); a face missing for at
most ``max_gap`` frames is linearly interpolated and flagged, a longer gap ends the track (the face comes
back under a new id; gaps.py). ``FaceTracker.stream`` is online: it yields final ``FaceChunk``s in order
and holds frames back only while a face is missing, so memory stays bounded on any length.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError, NoFaceError
from ..io.video import CHUNK_MB, VideoSource, chunk_frames, open_video, prefetch
from .gaps import PendingFrames, frontier
from .landmarks import OneEuroConfig, OneEuroFilter
from .matching import ActiveTrack, assign
from .mesh import MeshDetector
from .native_stderr import native_stderr_filtered
from .tracks import FaceChunk, FaceTrack, FaceTracks, select_faces

__all__ = ["FaceChunk", "FaceTrack", "FaceTracker", "FaceTracks", "TrackerConfig", "select_faces", "track_video"]


@dataclass
class TrackerConfig:
    max_faces: int = 4                    # faces MediaPipe follows at once (1 is fastest)
    min_detection_confidence: float = 0.5
    min_tracking_confidence: float = 0.5
    max_gap: int = 5                      # frames; gaps up to this are interpolated, longer ones split tracks
    landmark_weight: float = 1.0          # weight of the landmark distance in the matching cost
    max_match_cost: float = 1.5           # above this a detection starts a new track
    smoothing: OneEuroConfig | None = None
    detector_model: int = 0               # MediaPipe face detection: 0 short range (<2 m, talking heads), 1 full range
    detect_every: int = 1                 # run the confidence detector every N frames (tracks keep their last score)


class FaceTracker:
    """Runs MediaPipe face detection + face mesh over a ``VideoSource`` and tracks identities.
    One tracker handles one video at a time; ``stream``/``track`` reset it at the start."""

    def __init__(self, config: TrackerConfig | None = None):
        self.config = c = config or TrackerConfig()
        if c.max_faces < 1:
            raise InputError(f"max_faces must be >= 1, got {c.max_faces}")
        if c.max_gap < 0:
            raise InputError(f"max_gap must be >= 0, got {c.max_gap}")
        self._detector = MeshDetector(c.max_faces, c.min_detection_confidence, c.min_tracking_confidence,
                                      c.detector_model)

    def close(self) -> None:
        self._detector.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def detect(self, frame: np.ndarray, score: bool = True) -> list[tuple[np.ndarray, float | None]]:
        """Faces in one RGB frame (tracking mode: call in frame order): [(points (478,3) px, score)];
        score is None when ``score`` is False (the detector is skipped)."""
        return self._detector.detect(frame, score)

    def stream(self, source: VideoSource, chunk_size: int = 32) -> Iterator[FaceChunk]:
        """Track faces chunk by chunk; yields final ``FaceChunk``s in frame order."""
        with native_stderr_filtered():
            yield from self._stream(source, chunk_size)

    def _stream(self, source: VideoSource, chunk_size: int) -> Iterator[FaceChunk]:
        if not self._detector.is_open or not self._detector.fresh:
            self._detector.open()  # tracking state is per video
        c = self.config
        active: list[ActiveTrack] = []
        next_id = 0
        pending = PendingFrames(source)
        last = -1
        try:
            for chunk in prefetch(source.iter_chunks(chunk_size)):  # decode overlaps tracking
                for row, (frame, fidx, t) in enumerate(zip(chunk.frames, chunk.indices, chunk.pts_seconds)):
                    fidx, t = int(fidx), float(t)
                    faces = self.detect(frame, score=(fidx % max(c.detect_every, 1) == 0))
                    active = [a for a in active if fidx - a.last_frame - 1 <= c.max_gap]
                    pairs = assign(active, faces, c.landmark_weight, c.max_match_cost)
                    matched = {j for _, j in pairs}
                    here: dict[int, tuple[np.ndarray, float, bool]] = {}
                    for i, j in pairs:
                        tr = active[i]
                        pts, score = faces[j]
                        score = tr.score if score is None else score
                        pts = tr.smooth(pts, t)
                        pending.fill_gap(tr, fidx, pts)  # the gap's frames are still pending (see frontier)
                        here[tr.track_id] = (pts, score, True)
                        tr.move(fidx, pts, score)
                    for j, (pts, score) in enumerate(faces):
                        if j in matched:
                            continue
                        filt = OneEuroFilter(c.smoothing) if c.smoothing else None
                        tr = ActiveTrack.start(next_id, fidx, pts, filt, 0.0 if score is None else score)
                        tr.points = tr.smooth(pts, t)
                        next_id += 1
                        active.append(tr)
                        here[tr.track_id] = (tr.points, tr.score, True)
                    pending.add(fidx, t, (chunk.frames, row), here)
                    last = fidx
                # frames before the oldest gap that a returning face could still fill are final
                ready = pending.pop_before(frontier(active, last, c.max_gap))
                if ready is not None:
                    yield ready
            rest = pending.pop_all()
            if rest is not None:
                yield rest
        finally:
            self.close()

    def track(self, source: VideoSource, chunk_size: int = 32, chunk_mb: int = CHUNK_MB,
              progress: Callable[[int], None] | None = None) -> FaceTracks:
        """Whole-clip tracks (landmarks only; frames are not kept), decoded in chunks of at most
        ``chunk_size`` frames and about ``chunk_mb`` MB (1080p at 32 frames a chunk held 1 GB in all).
        ``progress(n)`` is told of every ``n`` frames tracked."""
        chunk = chunk_frames(source.width, source.height, chunk_mb, chunk_size)
        parts = []
        for fc in self.stream(source, chunk):
            parts.append(fc.faces)
            if progress is not None:
                progress(len(fc.faces.indices))
        return FaceTracks.concat(parts)


def track_video(path: str | Path | VideoSource, face: str | int = "largest", config: TrackerConfig | None = None,
                chunk_size: int = 32, progress: Callable[[int], None] | None = None) -> FaceTracks:
    """Open ``path``, track its faces and select ``face`` (``progress``: as :meth:`FaceTracker.track`). Raises
    ``NoFaceError`` when no face is found."""
    source = path if isinstance(path, VideoSource) else open_video(path)
    with FaceTracker(config) as tracker:
        tracks = tracker.track(source, chunk_size, progress=progress)
    selected = select_faces(tracks, face)
    if not selected.tracks:
        raise NoFaceError(f"{source.path}: no face found in any of its {len(tracks)} frames")
    return selected
