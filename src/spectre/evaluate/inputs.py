"""Landmark sequences to evaluate, from wherever they come from.

A *prediction* is a reconstruction's 2D landmarks: the ``landmarks2d`` of a ``spectre fit`` result
(``.npz``), a plain ``(T, 68, 2)`` array file, or a video rendered by any tool (ours or another, e.g.
the left half of the official demo's grid video) whose landmarks are re-tracked. A *reference* is
the same from the input side: the tracked landmarks stored in the result, an array file, or a video.
Both end as a ``LandmarkSequence`` in one pixel frame.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..faces.landmarks import mp478_to_ibug68
from ..faces.track import track_video
from ..io.video import VIDEO_SUFFIXES
from .metrics import as_landmarks

log = logging.getLogger(__name__)

ARRAY_SUFFIXES = (".npz", ".npy")
HALVES = ("full", "left", "right")
#: tool suffixes stripped from a file's stem to find the video it belongs to (``<name>_grid.mp4`` -> ``<name>``)
NAME_SUFFIXES = ("_grid", "_shape", "_render", "_rendered", "_mouth", "_landmarks", "_result")

#: keys of a result ``.npz`` (``spectre.io.results``), in order of preference
PREDICTION_KEYS = ("landmarks2d", "landmarks68", "landmarks")
REFERENCE_68_KEYS = ("tracked68", "tracked_landmarks68", "landmarks68_tracked", "track_landmarks68",
                     "reference_landmarks")
REFERENCE_478_KEYS = ("tracked478", "points478", "landmarks478", "track_points478")


@dataclass
class LandmarkSequence:
    """``points`` (T, 68, 2) pixels, NaN where missing; ``valid`` (T,); where they came from.

    ``video``/``half`` name the video the points were tracked on (None for array files);
    ``offset`` is the index of the first frame in that source (after trimming).
    """

    points: np.ndarray
    valid: np.ndarray
    source: str
    fps: float = 25.0
    extras: dict = field(default_factory=dict)
    video: Path | None = None
    half: str = "full"
    offset: int = 0

    def __post_init__(self) -> None:
        self.points = as_landmarks(self.points, self.source)[..., :2]
        self.valid = np.asarray(self.valid, dtype=bool).reshape(-1)
        if self.valid.shape[0] != self.points.shape[0]:
            raise InputError(f"{self.source}: valid mask has {self.valid.shape[0]} frames, "
                             f"landmarks {self.points.shape[0]}")

    def __len__(self) -> int:
        return int(self.points.shape[0])


def read_arrays(path: Path) -> dict[str, np.ndarray]:
    """All arrays of a ``.npz`` (or ``{"landmarks": array}`` of a ``.npy``); no pickles; ``InputError`` on failure."""
    if path.suffix.lower() not in ARRAY_SUFFIXES:
        raise InputError(f"{path}: unsupported file type (expected a result .npz, a (T,68,2) .npy/.npz or a video)")
    try:
        with open(path, "rb") as fh:
            magic = fh.read(6)
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if magic not in (b"\x93NUMPY",) and not magic.startswith(b"PK"):
        raise InputError(f"{path}: not a numpy .npy/.npz file")
    try:
        if path.suffix.lower() == ".npy":
            return {"landmarks": np.load(path, allow_pickle=False)}
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except (OSError, ValueError, EOFError) as exc:
        reason = "contains Python objects (refused)" if "pickle" in str(exc).lower() else " ".join(str(exc).split())
        raise InputError(f"{path}: cannot read landmark arrays: {reason}") from None


def _valid_from(arrays: dict, points: np.ndarray) -> np.ndarray:
    for key in ("valid", "valid_mask", "present"):
        if key in arrays and np.asarray(arrays[key]).shape[:1] == points.shape[:1]:
            return np.asarray(arrays[key], dtype=bool).reshape(-1)
    return np.isfinite(points).all(axis=(1, 2))


def _fps_from(arrays: dict, default: float = 25.0) -> float:
    if "fps" in arrays:
        try:
            return float(np.asarray(arrays["fps"]).reshape(-1)[0])
        except (TypeError, ValueError, IndexError):
            pass
    return default


def load_prediction_file(path: str | Path) -> LandmarkSequence:
    """Predicted landmarks from a result ``.npz`` or a ``(T, 68, 2)`` ``.npy``/``.npz``."""
    path = Path(path)
    arrays = read_arrays(path)
    key = next((k for k in PREDICTION_KEYS if k in arrays), None)
    if key is None:
        raise InputError(f"{path}: no predicted landmarks (expected one of {', '.join(PREDICTION_KEYS)})")
    points = arrays[key]
    return LandmarkSequence(points, _valid_from(arrays, as_landmarks(points, str(path))), f"{path}:{key}",
                            _fps_from(arrays), extras={"arrays": arrays})


def _input_video(arrays: dict) -> Path | None:
    """The input video a result names (``video`` key), when that file is still there."""
    try:
        p = Path(str(np.asarray(arrays["video"]).reshape(-1)[0]))
    except (KeyError, IndexError, TypeError, ValueError):
        return None
    return p if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file() else None


def reference_from_result(path: str | Path, arrays: dict | None = None) -> LandmarkSequence | None:
    """The tracked landmarks a result file stores (68 points, or the 478 mesh mapped to 68); None if absent.

    ``video`` of the returned sequence is the result's input video when it still exists."""
    path = Path(path)
    arrays = read_arrays(path) if arrays is None else arrays
    for key in REFERENCE_68_KEYS:
        if key in arrays:
            pts = as_landmarks(arrays[key], f"{path}:{key}")
            return LandmarkSequence(pts, _valid_from(arrays, pts), f"{path}:{key}", _fps_from(arrays),
                                    video=_input_video(arrays))
    for key in REFERENCE_478_KEYS:
        if key in arrays:
            pts478 = np.asarray(arrays[key], dtype=np.float64)
            if pts478.ndim != 3 or pts478.shape[1] != 478:
                raise InputError(f"{path}:{key}: expected (T, 478, D), got {pts478.shape}")
            pts = mp478_to_ibug68(pts478)[..., :2]
            return LandmarkSequence(pts, _valid_from(arrays, pts), f"{path}:{key}", _fps_from(arrays),
                                    video=_input_video(arrays))
    return None


def track_video_landmarks(path: str | Path, half: str = "full") -> LandmarkSequence:
    """Re-track a video (any tool's render, or an input) with the MediaPipe tracker.

    ``half`` picks the face in the left or right half of a side-by-side video (the official demo's
    grid: left = shape render, right = input crop); coordinates are then relative to that half.
    """
    if half not in HALVES:
        raise InputError(f"half must be one of {', '.join(HALVES)}, got {half!r}")
    path = Path(path)
    tracks = _tracked(path)
    T = len(tracks.indices)
    if half == "full":
        track = tracks.largest_per_frame()  # the official rule: per frame, the face with the largest bbox
        pts = np.asarray(track.landmarks68, dtype=np.float64)
        valid = np.asarray(track.valid, dtype=bool)
    else:
        mid = tracks.width / 2.0
        pts = np.full((T, 68, 2), np.nan)
        best = np.zeros(T)
        for track in tracks.tracks.values():
            lm = np.asarray(track.landmarks68, dtype=np.float64)
            bbox = np.asarray(track.bbox, dtype=np.float64)
            cx = 0.5 * (bbox[:, 0] + bbox[:, 2])
            size = (bbox[:, 2] - bbox[:, 0]) + (bbox[:, 3] - bbox[:, 1])
            inside = (cx < mid) if half == "left" else (cx >= mid)
            take = np.asarray(track.valid, bool) & inside & (size > best)
            pts[take] = lm[take]
            best[take] = size[take]
        if half == "right":
            pts[..., 0] -= mid
        valid = np.isfinite(pts).all(axis=(1, 2))
    if not valid.any():
        raise InputError(f"{path}: no face found{'' if half == 'full' else f' in the {half} half'}")
    return LandmarkSequence(pts, valid, f"{path}" + ("" if half == "full" else f" ({half} half)"),
                            float(tracks.fps or 25.0), video=path, half=half)


_TRACKED: dict[tuple, object] = {}


def _tracked(path: Path):
    """All face tracks of a video; the last few are kept so both halves of a grid video track once."""
    st = path.stat()
    key = (path.resolve(), st.st_mtime_ns, st.st_size)
    if key not in _TRACKED:
        if len(_TRACKED) >= 2:
            _TRACKED.pop(next(iter(_TRACKED)))
        _TRACKED[key] = track_video(path, face="all")
    return _TRACKED[key]


def load_landmarks(path: str | Path, half: str = "full", role: str = "prediction") -> LandmarkSequence:
    """Dispatch by file type: array files are read, videos are re-tracked."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    suffix = path.suffix.lower()
    if suffix in VIDEO_SUFFIXES or path.is_dir():  # a video, or a folder of its frames
        return track_video_landmarks(path, half)
    if suffix in ARRAY_SUFFIXES:
        if role == "reference":
            arrays = read_arrays(path)
            ref = reference_from_result(path, arrays)
            if ref is not None:
                return ref
        return load_prediction_file(path)
    raise InputError(f"{path}: unsupported file type (expected a result .npz, a (T,68,2) .npy/.npz or a video)")


def align_lengths(pred: LandmarkSequence, ref: LandmarkSequence, name: str) -> tuple[LandmarkSequence, LandmarkSequence]:
    """Make both sequences the same length.

    The official test-set videos lose 2 frames at each end (T - 4 frames, SPEC 1.5): such a
    prediction is matched to the reference's frames 2..T-3. Other small differences (a trailing
    frame dropped by an encoder) are cut at the end, with a warning; large ones are an error.
    """
    tp, tr = len(pred), len(ref)
    if tp == tr:
        return pred, ref
    if tr - tp == 4:
        log.warning("%s: prediction has %d frames, reference %d: assuming the official [2:-2] trim", name, tp, tr)
        return pred, _slice(ref, slice(2, tr - 2))
    if abs(tp - tr) <= max(2, int(0.02 * max(tp, tr))):
        n = min(tp, tr)
        log.warning("%s: prediction has %d frames, reference %d: comparing the first %d", name, tp, tr, n)
        return _slice(pred, slice(0, n)), _slice(ref, slice(0, n))
    raise InputError(f"{name}: prediction has {tp} frames but the reference has {tr}")


def _slice(seq: LandmarkSequence, s: slice) -> LandmarkSequence:
    return LandmarkSequence(seq.points[s], seq.valid[s], seq.source, seq.fps, seq.extras, seq.video, seq.half,
                            seq.offset + (s.start or 0))


# ---- name matching: a result, its renders and its input share a name
def video_name(path: Path) -> str:
    """Name shared by a result, its renders and its input: the stem without tool suffixes."""
    stem = path.stem
    for suffix in NAME_SUFFIXES:
        if stem.endswith(suffix) and len(stem) > len(suffix):
            return stem[: -len(suffix)]
    return stem


def find_by_name(folder: Path, name: str, suffixes: Sequence[str]) -> Path | None:
    """A file in ``folder`` whose name (without tool suffixes) is ``name``."""
    for q in sorted(folder.iterdir()):
        if q.suffix.lower() in suffixes and video_name(q) == name:
            return q
    return None
