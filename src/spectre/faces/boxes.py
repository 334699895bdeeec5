"""Axis-aligned face boxes: the box of a point set and the overlap of two boxes (numpy, x0,y0,x1,y1)."""
from __future__ import annotations

import numpy as np


def points_bbox(points: np.ndarray) -> np.ndarray:
    """(N,>=2) points -> (4,) x0, y0, x1, y1."""
    return np.concatenate([points[:, :2].min(0), points[:, :2].max(0)])


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boxes (0 when they do not overlap or are degenerate)."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0
