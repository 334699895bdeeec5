"""Which part of the input the render video shows: the whole frame, or a face-centred window.

A 1080p grid video used to render, blend and encode 3840x1080 pixels per frame for a face that covers a
tenth of them. :class:`VideoWindow` maps every input frame into an output window of fixed size: the
identity for ``full``; for ``face`` a square of fixed side (about twice the face, chosen on the first
frame with a face) whose centre follows the face through a causal exponential smoother (time constant
``tau`` seconds, so the view glides instead of shaking), resized to at most ``max_height`` pixels.
It is causal so the video can be made while the video is still being tracked.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["LINEAR_UP_TO", "VIDEO_FRAMES", "VideoWindow", "resolve_video_frame"]

#: ``auto`` = ``face`` for the grid of an input taller than the window's maximum height, else ``full``
VIDEO_FRAMES = ("auto", "face", "full")
#: the largest shrink of the input that the window resamples bilinearly: every input pixel still weighs in,
#: within 52 dB PSNR of area averaging on the 1080p MEAD sample, at an eighth of its cost (0.5 vs 4 ms a
#: 1080p frame; docs/performance.md)
LINEAR_UP_TO = 2.0


def resolve_video_frame(mode: str, height: int, max_height: int, layout: str = "grid") -> str:
    """``auto`` -> ``face`` for a ``grid`` of an input taller than ``max_height``, ``full`` otherwise: the
    ``render`` and ``overlay`` layouts stay in the input's pixel frame (evaluation re-detects on them)."""
    if mode == "auto":
        return "face" if layout == "grid" and height > max_height else "full"
    return mode


class VideoWindow:
    """Per-frame affine maps input pixels -> output-window pixels (3x3), for a fixed output size."""

    def __init__(self, width: int, height: int, mode: str = "auto", max_height: int = 512,
                 face_scale: float = 2.2, tau: float = 0.4, layout: str = "grid"):
        self.width, self.height = int(width), int(height)
        self.mode = resolve_video_frame(mode, self.height, max_height, layout)
        if self.mode not in ("face", "full"):
            raise ValueError(f"unknown video frame {mode!r} (choose from {', '.join(VIDEO_FRAMES)})")
        self.face_scale, self.tau = float(face_scale), float(tau)
        if self.mode == "full":
            self.out_w, self.out_h = self.width, self.height
        else:
            side = min(self.width, self.height, int(max_height))
            self.out_w = self.out_h = side - side % 2
        self.side: float | None = None  # input pixels covered by the window (face mode), fixed once set
        self._centre: np.ndarray | None = None
        self._last_t: float | None = None

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the output window."""
        return self.out_w, self.out_h

    def transforms(self, boxes: np.ndarray, times: np.ndarray) -> np.ndarray:
        """(N, 3, 3) input px -> window px for the next N frames, given each frame's face box (N, 4)
        ``x0, y0, x1, y1`` (NaN where no face) and presentation times (N,) in seconds. Call in frame order."""
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        out = np.tile(np.eye(3), (len(boxes), 1, 1))
        if self.mode == "full":
            return out
        for i, (box, t) in enumerate(zip(boxes, np.asarray(times, np.float64))):
            ok = bool(np.isfinite(box).all())
            if ok and self.side is None:
                face = ((box[2] - box[0]) + (box[3] - box[1])) / 2.0
                self.side = float(min(self.width, self.height, max(self.out_h / 2.0, self.face_scale * face)))
            if ok:
                c = np.array([(box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0])
                if self._centre is None:
                    self._centre = c
                else:
                    dt = max(float(t) - self._last_t, 0.0) if self._last_t is not None else 0.0
                    a = 1.0 - math.exp(-dt / self.tau) if self.tau > 0 else 1.0
                    self._centre = self._centre + a * (c - self._centre)
                self._last_t = float(t)
            side = int(round(self.side if self.side is not None else min(self.width, self.height)))
            centre = self._centre if self._centre is not None else np.array([self.width / 2.0, self.height / 2.0])
            # an integer-aligned square inside the frame, so the window is a slice plus one resize
            x0 = int(np.clip(round(centre[0] - side / 2.0), 0, self.width - side))
            y0 = int(np.clip(round(centre[1] - side / 2.0), 0, self.height - side))
            k = self.out_h / side
            # window pixel centre j <-> input position x0 + (j + 0.5) / k - 0.5 (as cv2.resize)
            out[i] = [[k, 0.0, k * (0.5 - x0) - 0.5], [0.0, k, k * (0.5 - y0) - 0.5], [0.0, 0.0, 1.0]]
        return out

    def apply(self, frames: np.ndarray, transforms: np.ndarray) -> np.ndarray:
        """The window of each frame (N, out_h, out_w, 3) uint8: bilinear when it shrinks the input by at
        most :data:`LINEAR_UP_TO`, area-averaged beyond (where bilinear would skip input pixels)."""
        if self.mode == "full":
            return frames
        import cv2

        out = np.empty((len(frames), self.out_h, self.out_w, 3), np.uint8)
        for i, (f, m) in enumerate(zip(frames, transforms)):
            k = float(m[0, 0])
            side = int(round(self.out_h / k))
            x0 = int(round(0.5 - (m[0, 2] + 0.5) / k))
            y0 = int(round(0.5 - (m[1, 2] + 0.5) / k))
            how = cv2.INTER_LINEAR if side <= LINEAR_UP_TO * self.out_h else cv2.INTER_AREA
            cv2.resize(f[y0:y0 + side, x0:x0 + side], (self.out_w, self.out_h), dst=out[i], interpolation=how)
        return out
