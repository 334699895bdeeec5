"""Geometric mouth metrics on iBUG-68 landmark sequences: the project's single definition.

Every quality number about landmarks (reconstruction tests, ``spectre evaluate``, benchmarks) is
computed here so that "aperture" or "NME" means the same thing everywhere. Numpy only: importing this
module must stay cheap (no torch, no mediapipe).

Conventions
-----------
* A sequence is an array ``(T, 68, D)`` with ``D`` = 2 (pixels) or 3; frames containing NaN, or
  marked ``False`` in an optional ``valid`` mask ``(T,)``, are ignored.
* Distances are divided by the **inter-ocular distance** (IOD): outer eye corners 36 and 45,
  per frame, always taken from the *reference* when comparing two sequences.
* Aperture = mean distance of the inner-lip pairs (61,67), (62,66), (63,65);
  width = distance 48-54; jitter = mean norm of the second temporal difference / IOD;
  lips are "closed" when aperture / IOD < ``CLOSED_LIPS_THRESHOLD``.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from ..errors import InputError
from ..faces.landmarks import (
    IBUG68_BROWS,
    IBUG68_EYES,
    IBUG68_INNER_LIPS,
    IBUG68_JAW,
    IBUG68_MOUTH,
    IBUG68_NOSE,
    IBUG68_OUTER_LIPS,
)

#: Outer eye corners used for the inter-ocular distance.
OUTER_EYE_CORNERS = (36, 45)
#: Upper/lower inner-lip landmark pairs whose mean distance is the lip aperture.
INNER_LIP_PAIRS = ((61, 67), (62, 66), (63, 65))
#: Left and right mouth corners (outer lip contour) whose distance is the mouth width.
MOUTH_CORNERS = (48, 54)
#: iBUG-68 landmark groups (index tuples) used for per-group errors.
LANDMARK_GROUPS: dict[str, tuple[int, ...]] = {
    "all": tuple(range(68)),
    **{name: tuple(range(68)[part]) for name, part in (
        ("jaw", IBUG68_JAW), ("brows", IBUG68_BROWS), ("nose", IBUG68_NOSE), ("eyes", IBUG68_EYES),
        ("mouth", IBUG68_MOUTH), ("outer_lips", IBUG68_OUTER_LIPS), ("inner_lips", IBUG68_INNER_LIPS))},
}
#: aperture / IOD below this counts as closed lips. Closed lips measure ~0.00-0.02 on tracked
#: landmarks, speech openings ~0.05-0.25, so 0.03 separates them with margin on both sides.
CLOSED_LIPS_THRESHOLD = 0.03


def as_landmarks(points: object, what: str = "landmarks") -> np.ndarray:
    """Validate and convert to float64 ``(T, 68, D)``; a single frame ``(68, D)`` becomes T = 1."""
    arr = np.asarray(points, dtype=np.float64)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[1] != 68 or arr.shape[2] not in (2, 3):
        raise InputError(f"{what}: expected landmarks of shape (T, 68, 2|3), got {tuple(np.shape(points))}")
    return arr


def frame_validity(points: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Boolean ``(T,)``: frames whose landmarks are all finite and that ``valid`` (if given) keeps."""
    ok = np.isfinite(points).all(axis=(1, 2))
    if valid is not None:
        v = np.asarray(valid, dtype=bool).reshape(-1)
        if v.shape[0] != points.shape[0]:
            raise InputError(f"valid mask has {v.shape[0]} frames, landmarks have {points.shape[0]}")
        ok &= v
    return ok


def interocular_distance(points: np.ndarray) -> np.ndarray:
    """Per-frame distance between the outer eye corners, ``(T,)``."""
    a, b = OUTER_EYE_CORNERS
    return np.linalg.norm(points[:, a] - points[:, b], axis=-1)


def lip_aperture(points: np.ndarray) -> np.ndarray:
    """Per-frame inner-lip opening, ``(T,)``, in the units of ``points``."""
    return np.mean([np.linalg.norm(points[:, u] - points[:, lo], axis=-1) for u, lo in INNER_LIP_PAIRS], axis=0)


def mouth_width(points: np.ndarray) -> np.ndarray:
    """Per-frame mouth-corner distance, ``(T,)``, in the units of ``points``."""
    a, b = MOUTH_CORNERS
    return np.linalg.norm(points[:, a] - points[:, b], axis=-1)


def closed_lips(points: np.ndarray, threshold: float = CLOSED_LIPS_THRESHOLD) -> np.ndarray:
    """Boolean ``(T,)``: aperture / IOD below ``threshold``."""
    return lip_aperture(points) / interocular_distance(points) < threshold


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation; NaN when either signal is constant or fewer than 2 samples."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.size < 2:
        return math.nan
    da, db = a - a.mean(), b - b.mean()
    sa, sb = float(np.sqrt(da @ da)), float(np.sqrt(db @ db))
    # relative tolerance: a signal whose spread is rounding noise is constant
    if sa <= 1e-9 * (1.0 + float(np.abs(a).max())) or sb <= 1e-9 * (1.0 + float(np.abs(b).max())):
        return math.nan
    return float(np.clip((da @ db) / (sa * sb), -1.0, 1.0))


def point_errors(pred: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Per-frame, per-point distance divided by the reference IOD, ``(T, 68)``."""
    iod = interocular_distance(ref)
    return np.linalg.norm(pred - ref, axis=-1) / iod[:, None]


def nme(pred: object, ref: object, indices: Sequence[int] = LANDMARK_GROUPS["all"],
        valid: np.ndarray | None = None) -> float:
    """Normalised mean error: mean over valid frames and ``indices`` of |pred - ref| / IOD(ref)."""
    p, r = _pair(pred, ref)
    ok = frame_validity(p, valid) & frame_validity(r)
    if not ok.any():
        return math.nan
    return float(point_errors(p[ok], r[ok])[:, list(indices)].mean())


def jitter(points: object, valid: np.ndarray | None = None,
           indices: Sequence[int] = LANDMARK_GROUPS["all"]) -> float:
    """Mean norm of the second temporal difference of each point, divided by the frame's IOD.

    Only triples of consecutive valid frames count; NaN when there is none. Perfectly smooth
    (constant-velocity) motion gives 0; points alternating by +-e every frame give 4e / IOD.
    """
    p = as_landmarks(points)
    ok = frame_validity(p, valid)
    if p.shape[0] < 3:
        return math.nan
    triple = ok[:-2] & ok[1:-1] & ok[2:]
    if not triple.any():
        return math.nan
    idx = list(indices)
    second = p[2:, idx] - 2.0 * p[1:-1, idx] + p[:-2, idx]
    iod = interocular_distance(p[1:-1])
    per_frame = np.linalg.norm(second, axis=-1).mean(axis=1) / iod
    return float(per_frame[triple].mean())


@dataclass(frozen=True)
class LandmarkMetrics:
    """Geometric comparison of a predicted landmark sequence against a reference one.

    Error fields are dimensionless (fractions of the inter-ocular distance); ``*_r`` are Pearson
    correlations over valid frames; closure fields count reference frames with closed lips.
    """

    frames: int                    #: valid frames compared
    nme_all: float                 #: NME over all 68 points
    nme_mouth: float               #: NME over points 48-67
    nme_inner_lips: float          #: NME over points 60-67
    aperture_r: float              #: correlation of lip aperture, pred vs ref
    aperture_mae: float            #: mean |aperture_pred - aperture_ref| / IOD
    width_r: float                 #: correlation of mouth width, pred vs ref
    jitter_pred: float             #: jitter of the prediction
    jitter_ref: float              #: jitter of the reference
    closed_frames_ref: int         #: reference frames with closed lips
    closure_recall: float          #: fraction of those where the prediction is closed too (NaN if none)
    closure_precision: float       #: fraction of predicted-closed frames that are closed in the ref
    false_closure_rate: float = math.nan  #: fraction of the reference's open-lip frames closed in the prediction

    def as_dict(self) -> dict:
        return asdict(self)


def group_nme(pred: object, ref: object, valid: np.ndarray | None = None) -> dict[str, float]:
    """NME of every group in ``LANDMARK_GROUPS``."""
    p, r = _pair(pred, ref)
    ok = frame_validity(p, valid) & frame_validity(r)
    if not ok.any():
        return {name: math.nan for name in LANDMARK_GROUPS}
    err = point_errors(p[ok], r[ok])
    return {name: float(err[:, list(idx)].mean()) for name, idx in LANDMARK_GROUPS.items()}


def compare_landmarks(pred: object, ref: object, valid: np.ndarray | None = None,
                      closure_threshold: float = CLOSED_LIPS_THRESHOLD) -> LandmarkMetrics:
    """All geometric metrics of ``pred`` against ``ref`` (both ``(T, 68, D)``, same units)."""
    p, r = _pair(pred, ref)
    ok = frame_validity(p, valid) & frame_validity(r)
    n = int(ok.sum())
    jit_p = jitter(p, ok)
    jit_r = jitter(r, ok)
    if n == 0:
        nan = math.nan
        return LandmarkMetrics(0, nan, nan, nan, nan, nan, nan, jit_p, jit_r, 0, nan, nan, nan)
    p, r = p[ok], r[ok]
    iod = interocular_distance(r)
    err = point_errors(p, r)
    ap_p, ap_r = lip_aperture(p), lip_aperture(r)
    closed_r = ap_r / iod < closure_threshold
    closed_p = ap_p / iod < closure_threshold
    both = int((closed_r & closed_p).sum())
    return LandmarkMetrics(
        frames=n,
        nme_all=float(err.mean()),
        nme_mouth=float(err[:, list(LANDMARK_GROUPS["mouth"])].mean()),
        nme_inner_lips=float(err[:, list(LANDMARK_GROUPS["inner_lips"])].mean()),
        aperture_r=pearson(ap_p, ap_r),
        aperture_mae=float(np.mean(np.abs(ap_p - ap_r) / iod)),
        width_r=pearson(mouth_width(p), mouth_width(r)),
        jitter_pred=jit_p,
        jitter_ref=jit_r,
        closed_frames_ref=int(closed_r.sum()),
        closure_recall=both / int(closed_r.sum()) if closed_r.any() else math.nan,
        closure_precision=both / int(closed_p.sum()) if closed_p.any() else math.nan,
        false_closure_rate=float((closed_p & ~closed_r).sum() / (~closed_r).sum()) if (~closed_r).any() else math.nan,
    )


def _pair(pred: object, ref: object) -> tuple[np.ndarray, np.ndarray]:
    p = as_landmarks(pred, "predicted landmarks")
    r = as_landmarks(ref, "reference landmarks")
    if p.shape[0] != r.shape[0]:
        raise InputError(f"predicted landmarks have {p.shape[0]} frames, reference has {r.shape[0]}")
    if p.shape[2] != r.shape[2]:
        p, r = p[..., :2], r[..., :2]
    return p, r
