"""MediaPipe 478-point mesh -> iBUG-68 landmarks, and temporal filtering of landmark tracks.

The 68 points are fixed blends of mesh vertices (``IBUG68_FROM_MP478``): each iBUG point is one
vertex or the midpoint of two, chosen so that points lie on the same anatomical feature and are
evenly spaced like the iBUG annotation (see docs/faces.md for the table and the reasoning).
The jaw contour (0–16) uses the mesh's face-oval vertices from the tragus level down to the chin;
it is a *static* contour: under strong yaw the far-side points stay on the mesh surface instead of
sliding to the visible silhouette as a 2D annotator's would.

All 478 points are kept in the tracks; the 68 are derived on demand (cheap matrix product).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

NUM_MESH_POINTS = 478

# iBUG-68 parts (slices into the 68 points; subject's right = image left). The one place they are written.
IBUG68_JAW = slice(0, 17)
IBUG68_BROWS = slice(17, 27)
IBUG68_NOSE = slice(27, 36)
IBUG68_RIGHT_EYE = slice(36, 42)
IBUG68_LEFT_EYE = slice(42, 48)
IBUG68_EYES = slice(36, 48)
IBUG68_MOUTH = slice(48, 68)
IBUG68_OUTER_LIPS = slice(48, 60)
IBUG68_INNER_LIPS = slice(60, 68)

#: iBUG-68 index -> MediaPipe vertex ids averaged with equal weights (subject's right = image left).
IBUG68_FROM_MP478: tuple[tuple[int, ...], ...] = (
    # 0-16 jaw contour, subject's right ear -> chin (8) -> left ear
    (127, 234), (93,), (132,), (58,), (172,), (136,), (150,), (176,), (152,),
    (400,), (379,), (365,), (397,), (288,), (361,), (323,), (356, 454),
    # 17-21 right brow (outer -> inner), 22-26 left brow (inner -> outer): midline of upper/lower edge
    (70, 46), (63, 53), (105, 52), (66, 65), (107, 55),
    (336, 285), (296, 295), (334, 282), (293, 283), (300, 276),
    # 27-30 nose bridge (top -> tip), 31-35 nostril base (right -> left)
    (168,), (197,), (5,), (4,), (75,), (97,), (2,), (326,), (305,),
    # 36-41 right eye (outer corner, upper lid x2, inner corner, lower lid x2)
    (33,), (160,), (158,), (133,), (153,), (144,),
    # 42-47 left eye (inner corner, upper lid x2, outer corner, lower lid x2)
    (362,), (385,), (387,), (263,), (373,), (380,),
    # 48-59 outer lip: right corner, upper lip -> left corner, lower lip back
    (61,), (40,), (37,), (0,), (267,), (270,), (291,), (321,), (405,), (17,), (181,), (91,),
    # 60-67 inner lip: right corner, upper, left corner, lower
    (78,), (80, 81), (13,), (311, 310), (308,), (402, 318), (14,), (88, 178),
)


def _mapping_matrix() -> np.ndarray:
    m = np.zeros((68, NUM_MESH_POINTS), np.float32)
    for i, ids in enumerate(IBUG68_FROM_MP478):
        m[i, list(ids)] = 1.0 / len(ids)
    return m


MP478_TO_IBUG68 = _mapping_matrix()  # (68, 478) blend weights, rows sum to 1


def mp478_to_ibug68(points: np.ndarray) -> np.ndarray:
    """(..., 478, D) mesh points -> (..., 68, D) iBUG-68 points (NaN stays NaN)."""
    pts = np.asarray(points)
    if pts.shape[-2] != NUM_MESH_POINTS:
        raise ValueError(f"expected (..., {NUM_MESH_POINTS}, D) points, got {pts.shape}")
    return np.einsum("kp,...pd->...kd", MP478_TO_IBUG68, pts).astype(pts.dtype, copy=False)


# ---- temporal filtering --------------------------------------------------------------------------
@dataclass
class OneEuroConfig:
    """One-Euro filter (Casiez et al. 2012): a low-pass whose cutoff rises with speed, so slow jitter is
    removed while fast motion (a mouth opening) lags little. ``min_cutoff`` Hz at rest, ``beta`` how
    fast the cutoff grows with speed (in face-size-normalised units/s), ``d_cutoff`` for the speed."""

    min_cutoff: float = 1.5
    beta: float = 5.0
    d_cutoff: float = 1.0


def _alpha(cutoff, dt):
    tau = 1.0 / (2 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """Causal per-coordinate One-Euro filter for one landmark track. Call with each frame's points
    (any shape) and its timestamp; speeds are measured relative to ``scale`` (e.g. the face size in
    pixels), so the same parameters work at 224² and 1080p."""

    def __init__(self, config: OneEuroConfig | None = None):
        self.config = config or OneEuroConfig()
        self.reset()

    def reset(self) -> None:
        self._x = None
        self._dx = None
        self._t = None

    def __call__(self, x: np.ndarray, t: float, scale: float = 1.0) -> np.ndarray:
        x = np.asarray(x, np.float64)
        if self._x is None or self._t is None or t <= self._t:
            self._x, self._dx, self._t = x.copy(), np.zeros_like(x), t
            return x.copy()
        c = self.config
        dt = t - self._t
        dx = (x - self._x) / dt / max(scale, 1e-9)
        a_d = _alpha(c.d_cutoff, dt)
        self._dx = a_d * dx + (1 - a_d) * self._dx
        cutoff = c.min_cutoff + c.beta * np.abs(self._dx)
        a = 1.0 / (1.0 + 1.0 / (2 * math.pi * cutoff * dt))
        self._x = a * x + (1 - a) * self._x
        self._t = t
        return self._x.copy()


def landmark_jitter(landmarks: np.ndarray) -> float:
    """Mean magnitude of the second temporal difference of (T, P, 2) landmarks divided by the face size
    (bbox diagonal); high-frequency wobble scores high, smooth motion low. NaN frames are skipped."""
    lmk = np.asarray(landmarks, np.float64)[..., :2]
    if lmk.shape[0] < 3:
        return float("nan")
    size = np.linalg.norm(np.nanmax(lmk, axis=1) - np.nanmin(lmk, axis=1), axis=-1)
    acc = lmk[2:] - 2 * lmk[1:-1] + lmk[:-2]
    per_frame = np.linalg.norm(acc, axis=-1).mean(axis=-1) / size[1:-1]
    return float(np.nanmean(per_frame))
