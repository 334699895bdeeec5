"""Identity matching: which detection in this frame continues which live track.

Hungarian assignment (scipy; the cheapest pair when one side has one) on
``(1 - IoU) + w * mean iBUG-68 landmark distance / face diagonal``; a pair costing more than
``max_match_cost`` is no match (the detection starts a new track).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .boxes import box_iou, points_bbox
from .landmarks import OneEuroFilter, mp478_to_ibug68

_NO_MATCH = 1e6


@dataclass
class ActiveTrack:
    """A track that may still continue: its last points, box, landmarks, smoothing state and score."""

    track_id: int
    last_frame: int
    points: np.ndarray
    bbox: np.ndarray
    lmk68: np.ndarray
    filt: OneEuroFilter | None
    score: float = 0.0

    @classmethod
    def start(cls, track_id: int, frame: int, points: np.ndarray, filt: OneEuroFilter | None,
              score: float) -> ActiveTrack:
        return cls(track_id, frame, points, points_bbox(points), mp478_to_ibug68(points[:, :2]), filt, score)

    def smooth(self, pts: np.ndarray, t: float) -> np.ndarray:
        """The track's One-Euro filter applied to new points (unchanged when smoothing is off)."""
        if self.filt is None:
            return pts
        size = float(np.ptp(pts[:, 0]) + np.ptp(pts[:, 1])) / 2
        return self.filt(pts, t, scale=size).astype(np.float32)

    def move(self, frame: int, points: np.ndarray, score: float) -> None:
        self.last_frame, self.points, self.bbox, self.score = frame, points, points_bbox(points), score
        self.lmk68 = mp478_to_ibug68(points[:, :2])


def match_costs(active: list[ActiveTrack], faces: list[tuple[np.ndarray, float | None]], landmark_weight: float,
                max_match_cost: float) -> np.ndarray:
    """(tracks, faces) cost of continuing each track with each face; a pair over ``max_match_cost`` costs
    ``_NO_MATCH``."""
    cost = np.full((len(active), len(faces)), _NO_MATCH)
    for i, tr in enumerate(active):
        diag = float(np.hypot(tr.bbox[2] - tr.bbox[0], tr.bbox[3] - tr.bbox[1])) or 1.0
        for j, (pts, _) in enumerate(faces):
            iou = box_iou(tr.bbox, points_bbox(pts))
            dist = float(np.linalg.norm(mp478_to_ibug68(pts[:, :2]) - tr.lmk68, axis=-1).mean()) / diag
            v = (1.0 - iou) + landmark_weight * dist
            if v <= max_match_cost:
                cost[i, j] = v
    return cost


def assign(active: list[ActiveTrack], faces: list[tuple[np.ndarray, float | None]], landmark_weight: float,
           max_match_cost: float) -> list[tuple[int, int]]:
    """[(index into ``active``, index into ``faces``)] of the matched pairs."""
    if not active or not faces:
        return []
    cost = match_costs(active, faces, landmark_weight, max_match_cost)
    if min(cost.shape) == 1:  # one track or one face (most frames): the cheapest pair; no scipy import (0.2 s)
        r, k = np.unravel_index(int(np.argmin(cost)), cost.shape)
        pairs = [(int(r), int(k))]
    else:
        from scipy.optimize import linear_sum_assignment

        pairs = [(int(r), int(k)) for r, k in zip(*linear_sum_assignment(cost))]
    return [(r, k) for r, k in pairs if cost[r, k] < _NO_MATCH]
