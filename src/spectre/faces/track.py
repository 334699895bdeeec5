"""Face detection, 478-point meshes and identity tracking over a streamed video.

MediaPipe's face mesh runs in tracking mode (it re-detects only when it has lost a face) with refined
lips and irises; MediaPipe's face detector gives each face a confidence. Identities are kept by our own
tracker: Hungarian assignment (scipy) on ``(1 - IoU) + w * landmark distance / face size``. A face
missing for at most ``max_gap`` frames is linearly interpolated and flagged; a longer gap ends the
track (the face comes back under a new id).

``FaceTracker.stream`` is online: it yields ``FaceChunk``s in order, each final; it holds frames back
only while a face is missing (at most ``max_gap`` frames) so memory stays bounded on any length.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import InputError, NoFaceError
from ..io.video import FrameChunk, VideoSource, open_video, prefetch
from .landmarks import NUM_MESH_POINTS, OneEuroConfig, OneEuroFilter, mp478_to_ibug68

log = logging.getLogger(__name__)

_DETECT_MAX_SIDE = 640  # frames are shrunk to this long side before the confidence detector


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
    def empty(cls, track_id: int, n: int) -> "FaceTrack":
        return cls(track_id, np.full((n, NUM_MESH_POINTS, 3), np.nan, np.float32), np.full((n, 68, 2), np.nan, np.float32),
                   np.full((n, 4), np.nan, np.float32), np.zeros(n, bool), np.zeros(n, bool), np.zeros(n, np.float32))

    def take(self, rows: np.ndarray) -> "FaceTrack":
        return FaceTrack(self.track_id, self.points478[rows], self.landmarks68[rows], self.bbox[rows],
                         self.present[rows], self.interpolated[rows], self.confidence[rows])


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
    def concat(cls, parts: list["FaceTracks"]) -> "FaceTracks":
        if not parts:
            raise ValueError("FaceTracks.concat needs at least one part")
        ids = sorted({i for p in parts for i in p.tracks})
        tracks = {}
        for tid in ids:
            pieces = [p.tracks.get(tid) or FaceTrack.empty(tid, len(p)) for p in parts]
            tracks[tid] = FaceTrack(tid, *(np.concatenate([getattr(x, f) for x in pieces])
                                          for f in ("points478", "landmarks68", "bbox", "present", "interpolated", "confidence")))
        p0 = parts[0]
        return cls(np.concatenate([p.indices for p in parts]), np.concatenate([p.pts_seconds for p in parts]),
                   p0.width, p0.height, p0.fps, tracks)

    def largest_per_frame(self) -> FaceTrack:
        """The official rule: in every frame, the valid face with the largest bbox w + h. Its id is the
        track chosen most often."""
        n = len(self)
        out = FaceTrack.empty(-1, n)
        if not self.tracks:
            return out
        ids = list(self.tracks)
        sizes = np.stack([self.tracks[i].size for i in ids])  # (K,T)
        best = sizes.argmax(0)
        has = sizes.max(0) > 0
        for k, tid in enumerate(ids):
            rows = np.flatnonzero(has & (best == k))
            src = self.tracks[tid]
            for f in ("points478", "landmarks68", "bbox", "present", "interpolated", "confidence"):
                getattr(out, f)[rows] = getattr(src, f)[rows]
        counts = np.bincount(best[has], minlength=len(ids)) if has.any() else np.zeros(len(ids), int)
        out.track_id = ids[int(counts.argmax())]
        return out


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


# ---- geometry helpers ----------------------------------------------------------------------------
# MediaPipe's C++ start-up chatter (absl/TFLite write it straight to fd 2, before any log set-up can apply)
_NATIVE_NOISE = re.compile(rb"^(?:[IW]\d{4} [\d:.]+ +\d+ \S+\.cc:\d+\]|INFO: Created TensorFlow Lite"
                           rb"|WARNING: All log messages before absl::InitializeLog)")
_filter_depth = 0


@contextlib.contextmanager
def _native_stderr_filtered():
    """Route fd 2 through a filter that drops MediaPipe's native INFO/WARNING lines and passes every
    other line (our warnings, progress bars, errors) through unchanged. SPECTRE_DEBUG keeps everything."""
    global _filter_depth
    if os.environ.get("SPECTRE_DEBUG") or _filter_depth:
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
        read_end, write_end = os.pipe()
    except OSError:  # no usable fd 2 (embedded interpreters): leave it alone
        yield
        return

    def pump() -> None:
        with os.fdopen(read_end, "rb", buffering=0) as pipe:
            pending = b""
            while chunk := pipe.read(65536):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                out = b"".join(ln + b"\n" for ln in lines if not _NATIVE_NOISE.match(ln))
                if out:
                    os.write(saved, out)
            if pending:  # a partial line (progress bars redraw with \r) is passed on as is
                os.write(saved, pending)

    os.dup2(write_end, 2)
    os.close(write_end)
    thread = threading.Thread(target=pump, name="spectre-stderr-filter", daemon=True)
    thread.start()
    _filter_depth += 1
    try:
        yield
    finally:
        _filter_depth -= 1
        sys.stderr.flush()
        os.dup2(saved, 2)  # closes the pipe's last write end: the pump drains and stops
        thread.join(timeout=10)
        os.close(saved)


def _bbox(points: np.ndarray) -> np.ndarray:
    return np.concatenate([points[:, :2].min(0), points[:, :2].max(0)])


def _open_mesh(c: TrackerConfig):
    """MediaPipe's face-mesh graph in tracking mode with 478 points. Besides the landmarks we ask for
    the graph's own face detections: whenever it runs its detector (every frame while it follows fewer
    than ``max_faces`` faces) their scores give the per-face confidence without a second detector.
    Falls back to the plain ``FaceMesh`` solution if this MediaPipe build lays the graph out differently."""
    import mediapipe as mp

    try:
        from mediapipe.python.solution_base import SolutionBase
        from mediapipe.python.solutions import face_mesh as fm

        return SolutionBase(
            binary_graph_path=fm._BINARYPB_FILE_PATH,
            side_inputs={"num_faces": c.max_faces, "with_attention": True, "use_prev_landmarks": True},
            calculator_params={
                "facedetectionshortrangecpu__facedetectionshortrange__facedetection__"
                "TensorsToDetectionsCalculator.min_score_thresh": c.min_detection_confidence,
                "facelandmarkcpu__ThresholdingCalculator.threshold": c.min_tracking_confidence},
            outputs=["multi_face_landmarks", "face_detections"])
    except Exception:  # pragma: no cover - depends on the MediaPipe build
        return mp.solutions.face_mesh.FaceMesh(
            static_image_mode=False, max_num_faces=c.max_faces, refine_landmarks=True,
            min_detection_confidence=c.min_detection_confidence, min_tracking_confidence=c.min_tracking_confidence)


def _detection_boxes(detections, w: int, h: int) -> list[tuple[np.ndarray, float]]:
    out = []
    for d in detections or []:
        b = d.location_data.relative_bounding_box
        out.append((np.array([b.xmin * w, b.ymin * h, (b.xmin + b.width) * w, (b.ymin + b.height) * h]), float(d.score[0])))
    return out


def _match_score(points: np.ndarray, dets: list[tuple[np.ndarray, float]]) -> float:
    box = _bbox(points)
    return max((s for db, s in dets if _iou(box, db) > 0.2), default=0.0)


_LM_RECORD = 17  # serialized NormalizedLandmark with x, y, z set: tag, len=15, 3 x (tag + float32)


def _landmark_array(lm) -> np.ndarray:
    """MediaPipe NormalizedLandmarkList -> (N,3) float32 [x, y, z] (normalised).

    Reading 478 protobuf messages attribute by attribute costs ~0.6 ms per face; when the serialized
    list has the fixed layout (only x, y, z set) the floats are read straight from the bytes (~0.1 ms).
    Any other layout takes the attribute path, so a MediaPipe change cannot silently corrupt points."""
    raw = lm.SerializeToString()
    n = len(lm.landmark)
    if len(raw) == n * _LM_RECORD:
        rec = np.frombuffer(raw, np.uint8).reshape(n, _LM_RECORD)
        if ((rec[:, 0] == 0x0A) & (rec[:, 1] == 15) & (rec[:, 2] == 0x0D) & (rec[:, 7] == 0x15)
                & (rec[:, 12] == 0x1D)).all():
            cols = [3, 4, 5, 6, 8, 9, 10, 11, 13, 14, 15, 16]
            return np.ascontiguousarray(rec[:, cols]).view("<f4").reshape(n, 3).astype(np.float32)
    return np.array([(p.x, p.y, p.z) for p in lm.landmark], np.float32)


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


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


@dataclass
class _Active:
    track_id: int
    last_frame: int
    points: np.ndarray
    bbox: np.ndarray
    lmk68: np.ndarray
    filt: OneEuroFilter | None
    score: float = 0.0


class FaceTracker:
    """Runs MediaPipe face detection + face mesh over a ``VideoSource`` and tracks identities.
    One tracker handles one video at a time; ``stream``/``track`` reset it at the start."""

    def __init__(self, config: TrackerConfig | None = None):
        self.config = config or TrackerConfig()
        if self.config.max_faces < 1:
            raise InputError(f"max_faces must be >= 1, got {self.config.max_faces}")
        if self.config.max_gap < 0:
            raise InputError(f"max_gap must be >= 0, got {self.config.max_gap}")
        self._mesh = None
        self._det = None
        self._fresh = False

    # -- MediaPipe -----------------------------------------------------------------------------
    def _open_graphs(self) -> None:
        self.close()
        os.environ.setdefault("GLOG_minloglevel", "2")
        import mediapipe as mp

        c = self.config
        self._fresh = True  # graphs have seen no frame yet (tracking state is per video)
        self._warned_max = False
        self._mesh = _open_mesh(c)
        self._det = mp.solutions.face_detection.FaceDetection(
            model_selection=c.detector_model, min_detection_confidence=min(c.min_detection_confidence, 0.3))

    def close(self) -> None:
        for g in (self._mesh, self._det):
            if g is not None:
                g.close()
        self._mesh = self._det = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def detect(self, frame: np.ndarray, score: bool = True) -> list[tuple[np.ndarray, float | None]]:
        """Faces in one RGB frame (tracking mode: call in frame order): [(points (478,3) px, score)];
        score is None when ``score`` is False (the detector is skipped)."""
        if self._mesh is None:
            self._open_graphs()
        self._fresh = False
        h, w = frame.shape[:2]
        frame = np.ascontiguousarray(frame)
        res = self._mesh.process(frame)
        if not res.multi_face_landmarks:
            return []
        faces = []
        scale = np.array([w, h, w], np.float32)
        for lm in res.multi_face_landmarks:
            faces.append(_landmark_array(lm) * scale)
        # the mesh graph ran its own (short-range) detector on this frame: its scores come for free
        graph_dets = getattr(res, "face_detections", None) if self.config.detector_model == 0 else None
        if graph_dets:
            return [(pts, _match_score(pts, _detection_boxes(graph_dets, w, h))) for pts in faces]
        if not score:
            return [(pts, None) for pts in faces]
        small = frame
        if max(h, w) > _DETECT_MAX_SIDE:  # BlazeFace sees 128x128 anyway; shrinking first saves the copy
            import cv2

            f = _DETECT_MAX_SIDE / max(h, w)
            small = cv2.resize(frame, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_LINEAR)
        dets = _detection_boxes(self._det.process(small).detections, w, h)
        if len(dets) > self.config.max_faces and not self._warned_max:
            self._warned_max = True  # once per video
            log.warning("%d faces in one frame but only %d are tracked (TrackerConfig.max_faces); the others are "
                        "ignored", len(dets), self.config.max_faces)
        return [(pts, _match_score(pts, dets)) for pts in faces]

    # -- tracking ------------------------------------------------------------------------------
    def _assign(self, active: list[_Active], faces: list[tuple[np.ndarray, float]]) -> list[tuple[int, int]]:
        from scipy.optimize import linear_sum_assignment

        if not active or not faces:
            return []
        c = self.config
        cost = np.full((len(active), len(faces)), 1e6)
        for i, tr in enumerate(active):
            diag = float(np.hypot(tr.bbox[2] - tr.bbox[0], tr.bbox[3] - tr.bbox[1])) or 1.0
            for j, (pts, _) in enumerate(faces):
                box = _bbox(pts)
                iou = _iou(tr.bbox, box)
                dist = float(np.linalg.norm(mp478_to_ibug68(pts[:, :2]) - tr.lmk68, axis=-1).mean()) / diag
                v = (1.0 - iou) + c.landmark_weight * dist
                if v <= c.max_match_cost:
                    cost[i, j] = v
        rows, cols = linear_sum_assignment(cost)
        return [(r, k) for r, k in zip(rows, cols) if cost[r, k] < 1e6]

    def stream(self, source: VideoSource, chunk_size: int = 32) -> Iterator[FaceChunk]:
        """Track faces chunk by chunk; yields final ``FaceChunk``s in frame order."""
        with _native_stderr_filtered():
            yield from self._stream(source, chunk_size)

    def _stream(self, source: VideoSource, chunk_size: int) -> Iterator[FaceChunk]:
        if self._mesh is None or not self._fresh:
            self._open_graphs()
        c = self.config
        active: list[_Active] = []
        next_id = 0
        # pending per-frame data, keyed by frame index: {track_id: [points, score, present]}
        obs: dict[int, dict[int, list]] = {}
        pend_frames: list[tuple[np.ndarray, int]] = []
        pend_idx: list[int] = []
        pend_pts: list[float] = []
        last = -1
        try:
            for chunk in prefetch(source.iter_chunks(chunk_size)):  # decode overlaps tracking
                for row, (frame, fidx, t) in enumerate(zip(chunk.frames, chunk.indices, chunk.pts_seconds)):
                    fidx = int(fidx)
                    faces = self.detect(frame, score=(fidx % max(c.detect_every, 1) == 0))
                    active = [a for a in active if fidx - a.last_frame - 1 <= c.max_gap]
                    pairs = self._assign(active, faces)
                    matched = {j for _, j in pairs}
                    here: dict[int, list] = {}
                    for i, j in pairs:
                        tr = active[i]
                        pts, score = faces[j]
                        score = tr.score if score is None else score
                        pts = self._smooth(tr, pts, float(t))
                        gap = fidx - tr.last_frame - 1
                        if gap > 0:  # fill the gap linearly (frames still pending, see frontier)
                            for k in range(1, gap + 1):
                                a = k / (gap + 1)
                                obs[tr.last_frame + k][tr.track_id] = [(1 - a) * tr.points + a * pts, 0.0, False]
                        here[tr.track_id] = [pts, score, True]
                        tr.last_frame, tr.points, tr.bbox, tr.score = fidx, pts, _bbox(pts), score
                        tr.lmk68 = mp478_to_ibug68(pts[:, :2])
                    for j, (pts, score) in enumerate(faces):
                        if j in matched:
                            continue
                        filt = OneEuroFilter(c.smoothing) if c.smoothing else None
                        score = 0.0 if score is None else score
                        tr = _Active(next_id, fidx, pts, _bbox(pts), mp478_to_ibug68(pts[:, :2]), filt, score)
                        tr.points = self._smooth(tr, pts, float(t))
                        next_id += 1
                        active.append(tr)
                        here[tr.track_id] = [tr.points, score, True]
                    obs[fidx] = here
                    pend_frames.append((chunk.frames, row))  # a reference, not a copy
                    pend_idx.append(fidx)
                    pend_pts.append(float(t))
                    last = fidx
                # frames before the oldest gap that a returning face could still fill are final
                open_gaps = [a.last_frame + 1 for a in active if a.last_frame < last and last - a.last_frame <= c.max_gap]
                frontier = min(open_gaps) if open_gaps else last + 1
                n_ready = sum(1 for i in pend_idx if i < frontier)
                if n_ready:
                    yield self._emit(source, obs, pend_frames[:n_ready], pend_idx[:n_ready], pend_pts[:n_ready])
                    del pend_frames[:n_ready], pend_idx[:n_ready], pend_pts[:n_ready]
            if pend_idx:
                yield self._emit(source, obs, pend_frames, pend_idx, pend_pts)
        finally:
            self.close()

    def _smooth(self, tr: _Active, pts: np.ndarray, t: float) -> np.ndarray:
        if tr.filt is None:
            return pts
        size = float(np.ptp(pts[:, 0]) + np.ptp(pts[:, 1])) / 2
        return tr.filt(pts, t, scale=size).astype(np.float32)

    def _emit(self, source, obs, frames, idx, pts_s) -> FaceChunk:
        n = len(idx)
        ids = sorted({tid for i in idx for tid in obs[i]})
        tracks = {}
        for tid in ids:
            tr = FaceTrack.empty(tid, n)
            for r, fi in enumerate(idx):
                rec = obs[fi].get(tid)
                if rec is None:
                    continue
                tr.points478[r] = rec[0]
                tr.confidence[r] = rec[1]
                tr.present[r] = rec[2]
                tr.interpolated[r] = not rec[2]
            ok = tr.valid
            tr.landmarks68[ok] = mp478_to_ibug68(tr.points478[ok, :, :2])
            tr.bbox[ok] = np.concatenate([tr.points478[ok, :, :2].min(1), tr.points478[ok, :, :2].max(1)], axis=1)
            tracks[tid] = tr
        for fi in idx:
            obs.pop(fi, None)
        faces = FaceTracks(np.asarray(idx, np.int64), np.asarray(pts_s, np.float64), source.width, source.height,
                           source.fps, tracks)
        return FaceChunk(FrameChunk(_gather(frames), faces.indices, faces.pts_seconds), faces)

    def track(self, source: VideoSource, chunk_size: int = 32) -> FaceTracks:
        """Whole-clip tracks (landmarks only; frames are not kept)."""
        parts = [fc.faces for fc in self.stream(source, chunk_size)]
        return FaceTracks.concat(parts)


def track_video(path: str | Path | VideoSource, face: str | int = "largest", config: TrackerConfig | None = None,
                chunk_size: int = 32) -> FaceTracks:
    """Open ``path``, track its faces and select ``face``. Raises ``NoFaceError`` when no face is found."""
    source = path if isinstance(path, VideoSource) else open_video(path)
    with FaceTracker(config) as tracker:
        tracks = tracker.track(source, chunk_size)
    selected = select_faces(tracks, face)
    if not selected.tracks:
        raise NoFaceError(f"{source.path}: no face found in any of its {len(tracks)} frames")
    return selected
