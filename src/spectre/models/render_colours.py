"""Per-vertex colours of the video render: red lips, brows, and where a model has the parts a dark mouth
inside, teeth, irises and pupils, on the grey shape.

Why: on a uniformly grey mesh the lips, eyes and brows are visible only through shading, so a viewer (or a
landmark detector) cannot see where the mouth corners are or whether a thin gap is open; the face the fit
produced is there, but the render hides it. Tinted, the independent judges (``spectre evaluate --judge``)
find the mouth's outline and width on the render far closer to the input's, its closures more often and
its landmarks steadier (docs/evaluate.md, "Colours on the render").

The lips are the vertices inside MediaPipe's outer lip line (the model's table of its 20 points, as the fit
uses them) seen from the front on the neutral face, 1 mm in from the line with a soft edge about 1 mm wide,
and no deeper than 1.5 cm behind the lip line (so nothing at the back of the head is tinted); the brows a
band along the 68 landmarks' brow lines. Colours are factors of the grey albedo (1 = the official grey),
so the lighting is unchanged.
"""
from __future__ import annotations

import numpy as np

__all__ = ["BROWS", "IRIS", "LIPS", "MOUTH_INSIDE", "PUPIL", "TEETH", "TONGUE", "brow_weights", "eye_colours",
           "face_colours", "lip_weights"]

#: factors of the grey albedo (180/255): lips, the mouth's socket (dark, as a mouth seen from outside),
#: gums and tongue, teeth. Teeth are darker than the lips, as in the shade of a mouth: a thin gap between
#: nearly closed lips then reads as the dark line it is in a video, not as bright teeth (judged: with teeth
#: at 0.7 dlib read the mouth as more open, docs/evaluate.md)
LIPS = (0.88, 0.54, 0.54)
MOUTH_INSIDE = (0.25, 0.25, 0.25)
TONGUE = (0.40, 0.22, 0.22)
TEETH = (0.45, 0.45, 0.45)
#: metres: width of the soft lip edge, how far inside the outer lip line the edge's middle lies (with the
#: edge on the line, dlib read more closed mouths as open; 2 mm in, the outline's NME grew), and how far
#: behind the lip line the tint reaches
EDGE_M = 0.001
INSET_M = 0.001
DEPTH_M = 0.015
#: brows: a band along the 68 landmarks' brow lines, this half-height and soft edge (metres), darkened
BROWS = (0.62, 0.58, 0.55)
BROW_HALF_M = 0.004
BROW_EDGE_M = 0.0015
#: eyeballs: iris and pupil as caps around the eyeball's forward axis (half-angles in degrees)
IRIS = (0.45, 0.40, 0.35)
PUPIL = (0.12, 0.12, 0.12)
IRIS_DEG, PUPIL_DEG = 28.0, 11.0


def _inside(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """(N,) bool: ``points`` (N, 2) inside the closed ``polygon`` (P, 2) (even-odd rule)."""
    x, y = points[:, 0:1], points[:, 1:2]
    a, b = polygon, np.roll(polygon, -1, axis=0)
    crosses = (a[:, 1] > y) != (b[:, 1] > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        x_at = a[:, 0] + (y - a[:, 1]) * (b[:, 0] - a[:, 0]) / (b[:, 1] - a[:, 1])
    return (crosses & (x < x_at)).sum(1) % 2 == 1


def _distance_to_outline(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """(N,) distance of ``points`` (N, 2) to the closed outline ``polygon`` (P, 2)."""
    a, b = polygon, np.roll(polygon, -1, axis=0)
    ab = b - a
    t = np.clip(((points[:, None] - a) * ab).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-20), 0.0, 1.0)
    nearest = a + t[..., None] * ab
    return np.linalg.norm(points[:, None] - nearest, axis=-1).min(1)


def _near(template: np.ndarray, lines: np.ndarray, reach: float, depth: float) -> np.ndarray:
    """Indices of the vertices within ``reach`` of the bounding box of ``lines`` (N, 3) seen from the front and
    not more than ``depth`` behind its nearest point: the only ones a weight can be non-zero for (the test
    below then runs on a few hundred vertices instead of all)."""
    lo, hi = lines[:, :2].min(0) - reach, lines[:, :2].max(0) + reach
    xy = template[:, :2]
    return np.flatnonzero((xy >= lo).all(1) & (xy <= hi).all(1) & (template[:, 2] >= lines[:, 2].min() - depth))


def lip_weights(template: np.ndarray, outer_lip: np.ndarray, units_per_metre: float) -> np.ndarray:
    """(V,) in [0, 1]: how much each vertex of the neutral ``template`` (V, 3; x right, y up, z towards the
    viewer) belongs to the lips inside the closed outer lip line ``outer_lip`` (P, 3)."""
    w = np.zeros(len(template))
    idx = _near(template, outer_lip, (EDGE_M + INSET_M) * units_per_metre, DEPTH_M * units_per_metre)
    xy, line = template[idx, :2].astype(np.float64), outer_lip[:, :2].astype(np.float64)
    signed = _distance_to_outline(xy, line) * np.where(_inside(xy, line), 1.0, -1.0)
    w[idx] = np.clip(0.5 + (signed - INSET_M * units_per_metre) / (EDGE_M * units_per_metre), 0.0, 1.0)
    return w


def _distance_to_polyline(points: np.ndarray, line: np.ndarray) -> np.ndarray:
    """(N,) distance of ``points`` (N, 2) to the open polyline ``line`` (P, 2)."""
    closed = _distance_to_outline
    return np.minimum.reduce([closed(points, line[i:i + 2]) for i in range(len(line) - 1)])


def brow_weights(template: np.ndarray, brows: list[np.ndarray], units_per_metre: float) -> np.ndarray:
    """(V,) in [0, 1]: the band of :data:`BROW_HALF_M` around each brow line in ``brows`` (each (P, 3), the
    68 landmarks' 17-21 and 22-26 on the neutral face) seen from the front, not deeper than :data:`DEPTH_M`."""
    w = np.zeros(len(template))
    idx = _near(template, np.concatenate(brows), (BROW_HALF_M + BROW_EDGE_M) * units_per_metre,
                DEPTH_M * units_per_metre)
    xy = template[idx, :2].astype(np.float64)
    d = np.minimum.reduce([_distance_to_polyline(xy, b[:, :2].astype(np.float64)) for b in brows])
    w[idx] = np.clip(0.5 + (BROW_HALF_M * units_per_metre - d) / (BROW_EDGE_M * units_per_metre), 0.0, 1.0)
    return w


def _blend(colours: np.ndarray, w: np.ndarray, colour) -> np.ndarray:
    w = w[:, None]
    return colours * (1.0 - w) + w * np.asarray(colour)


def face_colours(template: np.ndarray, outer_lip: np.ndarray, units_per_metre: float,
                 brows: list[np.ndarray] | None = None) -> np.ndarray:
    """(V, 3) float32 colour factors: grey (1) blended to :data:`LIPS` by :func:`lip_weights` and, given the
    brow lines, to :data:`BROWS` by :func:`brow_weights`."""
    colours = np.ones((len(template), 3))
    if brows:
        colours = _blend(colours, brow_weights(template, brows, units_per_metre), BROWS)
    colours = _blend(colours, lip_weights(template, outer_lip, units_per_metre), LIPS)
    return colours.astype(np.float32)


def eye_colours(eyeball: np.ndarray) -> np.ndarray:
    """(N, 3) colour factors of one eyeball's vertices (N, 3), looking along +z on the neutral face: a dark
    pupil and an iris as caps around the axis through the centre of its bounding box."""
    d = eyeball - (eyeball.min(0) + eyeball.max(0)) / 2
    angle = np.degrees(np.arccos(np.clip(d[:, 2] / np.maximum(np.linalg.norm(d, axis=1), 1e-12), -1.0, 1.0)))
    colours = np.ones((len(eyeball), 3))
    colours[angle < IRIS_DEG] = IRIS
    colours[angle < PUPIL_DEG] = PUPIL
    return colours.astype(np.float32)
