"""MediaPipe per frame: 478-point face meshes (tracking mode, refined lips and irises) with a
confidence per face.

The confidence comes from the mesh graph's own face detections when it ran its detector on that frame,
otherwise from a separate BlazeFace detector on a shrunk copy (or not at all when the caller skips it).
MediaPipe is imported when the graphs open, so importing this module stays cheap.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.machinery
import logging
import os
import signal
import sys
import threading
import types

import numpy as np

from .boxes import box_iou, points_bbox

log = logging.getLogger(__name__)

_DETECT_MAX_SIDE = 640  # frames are shrunk to this long side before the confidence detector
_LM_RECORD = 17  # serialized NormalizedLandmark with x, y, z set: tag, len=15, 3 x (tag + float32)


@contextlib.contextmanager
def signals_deferred():
    """Ctrl-C / SIGTERM wait until a MediaPipe import or graph call returns, then act as usual. An exception raised
    inside one (open, process, close) leaves the graph's C++ threads running, and the process aborts at
    exit ("terminate called without an active exception") instead of exiting 130 / 143."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {s: signal.signal(s, lambda signum, frame: caught.append(signum))
                for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for s in dict.fromkeys(caught):
            handler = previous[s]
            if callable(handler):
                handler(s, None)  # KeyboardInterrupt, or the CLI's SIGTERM exception
            elif handler == signal.SIG_DFL:
                os.kill(os.getpid(), s)


_LOADING = threading.RLock()


class _LoadedOnUse(types.ModuleType):
    """Stands in for a module until one of its attributes is read: then imports the real one (which takes its
    place in ``sys.modules`` and on its package) and answers from it. Unlike ``importlib.util.LazyLoader``'s
    modules, the import machinery's own look at ``__spec__`` does not load it."""

    def __getattr__(self, attr: str):
        with _LOADING:
            real = self.__dict__.get("_real")
            if real is None:
                if sys.modules.get(self.__name__) is self:
                    del sys.modules[self.__name__]
                real = self.__dict__["_real"] = importlib.import_module(self.__name__)
        return getattr(real, attr)


#: MediaPipe's modules that tracking never uses and that cost most of its import: the drawing helpers import
#: matplotlib's pyplot (0.3 s), the audio tasks sounddevice (which runs ldconfig, gcc and ld to find PortAudio)
_DEFERRED = ("python.solutions.drawing_utils", "python.solutions.drawing_styles", "tasks.python.audio")


def import_mediapipe():
    """``import mediapipe``, with the modules in :data:`_DEFERRED` loaded only when something uses them.

    Why: 0.35 of the 0.5 s that importing MediaPipe takes, in every process that tracks. Those modules stand in
    as :class:`_LoadedOnUse` until one of their attributes is read, so code that draws with MediaPipe or runs
    its audio tasks works as before."""
    standing_in = {}
    if "mediapipe" not in sys.modules:
        for name in _DEFERRED:
            full = f"mediapipe.{name}"
            if full not in sys.modules:
                standing_in[full] = sys.modules[full] = _LoadedOnUse(full)
                standing_in[full].__spec__ = importlib.machinery.ModuleSpec(full, None)
    import mediapipe

    for full, module in standing_in.items():  # what importing them would have bound on their package
        package, _, name = full.rpartition(".")
        if package in sys.modules and not hasattr(sys.modules[package], name):
            setattr(sys.modules[package], name, module)
    return mediapipe


def _open_mesh(max_faces: int, min_detection_confidence: float, min_tracking_confidence: float):
    """MediaPipe's face-mesh graph in tracking mode with 478 points. Besides the landmarks we ask for
    the graph's own face detections: whenever it runs its detector (every frame while it follows fewer
    than ``max_faces`` faces) their scores give the per-face confidence without a second detector.
    Falls back to the plain ``FaceMesh`` solution if this MediaPipe build lays the graph out differently."""
    mp = import_mediapipe()

    try:
        from mediapipe.python.solution_base import SolutionBase
        from mediapipe.python.solutions import face_mesh as fm

        return SolutionBase(
            binary_graph_path=fm._BINARYPB_FILE_PATH,
            side_inputs={"num_faces": max_faces, "with_attention": True, "use_prev_landmarks": True},
            calculator_params={
                "facedetectionshortrangecpu__facedetectionshortrange__facedetection__"
                "TensorsToDetectionsCalculator.min_score_thresh": min_detection_confidence,
                "facelandmarkcpu__ThresholdingCalculator.threshold": min_tracking_confidence},
            outputs=["multi_face_landmarks", "face_detections"])
    except Exception:  # pragma: no cover - depends on the MediaPipe build
        return mp.solutions.face_mesh.FaceMesh(
            static_image_mode=False, max_num_faces=max_faces, refine_landmarks=True,
            min_detection_confidence=min_detection_confidence, min_tracking_confidence=min_tracking_confidence)


def _detection_boxes(detections, w: int, h: int) -> list[tuple[np.ndarray, float]]:
    out = []
    for d in detections or []:
        b = d.location_data.relative_bounding_box
        out.append((np.array([b.xmin * w, b.ymin * h, (b.xmin + b.width) * w, (b.ymin + b.height) * h]),
                    float(d.score[0])))
    return out


def _match_score(points: np.ndarray, dets: list[tuple[np.ndarray, float]]) -> float:
    box = points_bbox(points)
    return max((s for db, s in dets if box_iou(box, db) > 0.2), default=0.0)


def landmark_array(lm) -> np.ndarray:
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


class MeshDetector:
    """The MediaPipe graphs of one video (their tracking state is per video: ``open`` again for the next)."""

    def __init__(self, max_faces: int = 4, min_detection_confidence: float = 0.5,
                 min_tracking_confidence: float = 0.5, detector_model: int = 0):
        self.max_faces = max_faces
        self.min_detection_confidence = min_detection_confidence
        self.min_tracking_confidence = min_tracking_confidence
        self.detector_model = detector_model
        self._mesh = None
        self._det = None
        self.fresh = False  # graphs are open and have seen no frame yet
        self._warned_max = False

    @property
    def is_open(self) -> bool:
        return self._mesh is not None

    def open(self) -> None:
        self.close()
        os.environ.setdefault("GLOG_minloglevel", "2")
        self.fresh = True
        self._warned_max = False
        with signals_deferred():
            # the first import too: a signal handled while MediaPipe's bindings initialise fails the import
            # ("initialization failed", then "type already defined" on every later try) instead of stopping
            mp = import_mediapipe()
            self._mesh = _open_mesh(self.max_faces, self.min_detection_confidence, self.min_tracking_confidence)
            self._det = mp.solutions.face_detection.FaceDetection(
                model_selection=self.detector_model, min_detection_confidence=min(self.min_detection_confidence, 0.3))

    def close(self) -> None:
        with signals_deferred():
            for g in (self._mesh, self._det):
                if g is not None:
                    g.close()
            self._mesh = self._det = None

    def detect(self, frame: np.ndarray, score: bool = True) -> list[tuple[np.ndarray, float | None]]:
        """Faces in one RGB frame (tracking mode: call in frame order): [(points (478,3) px, score)];
        score is None when ``score`` is False (the detector is skipped)."""
        if self._mesh is None:
            self.open()
        self.fresh = False
        h, w = frame.shape[:2]
        frame = np.ascontiguousarray(frame)
        with signals_deferred():
            res = self._mesh.process(frame)
        if not res.multi_face_landmarks:
            return []
        scale = np.array([w, h, w], np.float32)
        faces = [landmark_array(lm) * scale for lm in res.multi_face_landmarks]
        # the mesh graph ran its own (short-range) detector on this frame: its scores come for free
        graph_dets = getattr(res, "face_detections", None) if self.detector_model == 0 else None
        if graph_dets:
            return [(pts, _match_score(pts, _detection_boxes(graph_dets, w, h))) for pts in faces]
        if not score:
            return [(pts, None) for pts in faces]
        small = frame
        if max(h, w) > _DETECT_MAX_SIDE:  # BlazeFace sees 128x128 anyway; shrinking first saves the copy
            import cv2

            f = _DETECT_MAX_SIDE / max(h, w)
            small = cv2.resize(frame, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_LINEAR)
        with signals_deferred():
            found = self._det.process(small).detections
        dets = _detection_boxes(found, w, h)
        if len(dets) > self.max_faces and not self._warned_max:
            self._warned_max = True  # once per video
            log.warning("%d faces in one frame but only %d are tracked (TrackerConfig.max_faces); the others are "
                        "ignored", len(dets), self.max_faces)
        return [(pts, _match_score(pts, dets)) for pts in faces]
