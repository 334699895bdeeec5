"""The render video's frames from posed faces and the input's window: the shape's render
(:func:`render_posed`), the layout (grid, overlay or render alone) and the writer. No torch here: the video
stage process (:mod:`.stageworker`) draws, composes and encodes without it."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..io.writer import VideoWriter, i420_beside, rgb_to_i420
from ..raster_kernels import posed_frames, posed_frames_into, raster_backend
from .window import VideoWindow

__all__ = ["ENCODER", "FaceRows", "compose", "compose_posed", "open_video_writer", "place_rows", "render_posed"]

#: H.264 settings of the render video, chosen for speed and size (docs/performance.md has the measurement):
#: ``veryfast`` with the cheapest sub-pixel motion search, which takes a third less CPU time; a half step
#: lower CRF keeps the quality of ``veryfast`` at CRF 23, for a file about a tenth larger. One encoder thread:
#: the video is encoded in a thread of its own beside the drawing anyway, and x264's frame threads cost 8 %
#: more CPU time for a file 10 % larger at 0.7 dB less PSNR (1024x512 grid)
ENCODER = {"preset": "veryfast", "crf": 22.5, "x264_params": "subme=1:threads=1"}


@dataclass
class FaceRows:
    """One face over a run of consecutive frames: its parameters, crop camera and crop transforms."""

    params: dict[str, np.ndarray]  # name -> (n, k)
    cam: np.ndarray                # (n, 3) camera in the official 224 crop
    crop_tform: np.ndarray         # (n, 3, 3) input px -> crop px
    valid: np.ndarray              # (n,) frames with a face to draw


def render_posed(vertices: np.ndarray, affine: np.ndarray, faces: np.ndarray, light: np.ndarray,
                 size: tuple[int, int], tint: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The grey shape of posed model-space ``vertices`` (B, V, 3) through ``affine`` (B, 2, 3), the map of their
    ``(x, -y)`` to the window's pixels (:func:`.videostage.window_affine`), back faces culled; ``light``: the
    kernels' table (:func:`spectre.render.fast_shape.video_light_table`); ``tint``: the model's
    ``render_colours()`` or None (grey); ``size`` (H, W) -> (rgb (B, H, W, 3) float32 in [0, 1], alpha
    (B, H, W)). With the compiled kernels (the ``fast`` extra) torch is never
    imported; otherwise, or with ``SPECTRE_RASTER=torch``, the torch rasteriser draws the same pixels."""
    if raster_backend() == "numba":
        return posed_frames(vertices, affine, faces, light, size, tint)
    from ..render.fast_shape import render_posed_torch  # torch only here: the path without the compiled kernels

    return render_posed_torch(vertices, affine, faces, light, size, tint)


def place_rows(n: int, rows: np.ndarray, rendered: tuple[np.ndarray, np.ndarray] | None,
               size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Renders of ``rows`` of ``n`` frames (``rendered``: rgb, alpha) in an (n, H, W) batch; black elsewhere."""
    if rendered is not None and len(rows) == n:  # every frame has the face: no copy into a zero canvas
        return rendered
    h, w = size
    rgb = np.zeros((n, h, w, 3), np.float32)
    alpha = np.zeros((n, h, w), np.float32)
    if rendered is not None:
        rgb[rows], alpha[rows] = rendered
    return rgb, alpha


def compose(frames: np.ndarray, renders: list[tuple[np.ndarray, np.ndarray]], layout: str,
            opacity: float = 0.7) -> np.ndarray:
    """(n, H, W', 3) uint8 output frames: ``frames`` (n, H, W, 3) uint8 (the input in the window) with the
    faces' ``renders`` (rgb premultiplied float32, alpha) drawn over black (``render``), beside the input
    (``grid``) or over it at ``opacity`` (``overlay``)."""
    acc, cover = np.zeros(frames.shape, np.float32), np.zeros(frames.shape[:3], np.float32)
    for i, (rgb, a) in enumerate(renders):
        if i == 0:  # over black: the first face's render as it is
            acc, cover = rgb, a
            continue
        acc = rgb + acc * (1.0 - a[..., None])  # premultiplied "over"
        np.maximum(cover, a, out=cover)
    acc *= 255.0
    acc += 0.5
    render = np.clip(acc, 0, 255, out=acc).astype(np.uint8)  # as to_uint8 (round half up)
    if layout == "render":
        return render
    if layout == "grid":
        return np.concatenate([render, frames], axis=2)
    a = (cover * opacity)[..., None]
    return np.clip(render * a + frames * (1.0 - a) + 0.5, 0, 255).astype(np.uint8)


def compose_posed(frames: np.ndarray, rows: np.ndarray, vertices: np.ndarray, affine: np.ndarray, faces: np.ndarray,
                  light: np.ndarray, layout: str, tint: np.ndarray | None = None) -> np.ndarray:
    """:func:`compose` of one face drawn by :func:`render_posed` on ``rows`` of ``frames`` (n, H, W, 3) uint8,
    the same bytes. With the compiled kernels the ``grid`` and ``render`` layouts are drawn straight into the
    output frames, without a float render and its conversion.

    ``frames`` already converted for the encoder (:func:`.io.writer.rgb_to_i420`, (n, 3H/2, W), the grid
    only) give the grid's frames converted too, the same bytes as converting the RGB grid: the windows of a
    1080p video cross between processes and wait for their faces at half the size."""
    if frames.ndim == 3:
        if layout != "grid":
            raise ValueError(f"converted (I420) windows are for the grid layout, not {layout!r}")
        n, h, w = frames.shape[0], frames.shape[1] * 2 // 3, frames.shape[2]
        blank = np.broadcast_to(np.uint8(0), (n, h, w, 3))  # the render layout reads only its shape
        render = compose_posed(blank, rows, vertices, affine, faces, light, "render", tint)
        return i420_beside(rgb_to_i420(render), frames)
    n, h, w = frames.shape[:3]
    if layout not in ("grid", "render") or raster_backend() != "numba":
        drawn = render_posed(vertices, affine, faces, light, (h, w), tint) if len(rows) else None
        return compose(frames, [place_rows(n, rows, drawn, (h, w))], layout)
    out = np.zeros((n, h, 2 * w if layout == "grid" else w, 3), np.uint8)
    if layout == "grid":
        out[:, :, w:] = frames
    if len(rows) == n:
        posed_frames_into(out, vertices, affine, faces, light, (h, w), tint)
    elif len(rows):
        some = out[rows]
        posed_frames_into(some, vertices, affine, faces, light, (h, w), tint)
        out[rows] = some
    return out


def open_video_writer(layout: str, window: VideoWindow, path: str | Path, fps: float,
                      pts: Sequence[float] | None = None, audio_from: str | Path | None = None,
                      overwrite: bool = False, encoder: dict | None = None) -> VideoWriter:
    """The render video's writer: the window's size (twice as wide for the grid) and :data:`ENCODER`."""
    w, h = window.size
    enc = dict(ENCODER, **(encoder or {}))
    return VideoWriter(path, fps, (2 * w if layout == "grid" else w, h), audio_from=audio_from, pts=pts,
                       overwrite=overwrite, crf=float(enc["crf"]), preset=str(enc["preset"]),
                       x264_params=enc.get("x264_params"))
