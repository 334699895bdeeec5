"""The video's grey render from posed vertices and one affine map per frame, without torch when it can.

The video stage process gets, per frame, the face model's posed vertices (model space) and the affine map
that takes their ``(x, -y)`` to the window's pixels (the crop camera, the crop and the window composed by
the job, :func:`spectre.reconstruct.videostage.posed_rows`); depth is ``-z``, nearer is smaller, as in the
crop. It draws with the compiled kernels (:mod:`.compiled`) and imports torch only for the fallback
(numba missing, or ``SPECTRE_RASTER=torch``): with the ``fast`` extra the video process never loads torch.
"""
from __future__ import annotations

import numpy as np

from . import compiled
from .compiled import raster_backend

__all__ = ["raster_backend", "render_posed", "warm_up"]

_FLIP = np.array([1.0, -1.0, -1.0], np.float32)  # model space -> the crop's axes (x right, y down, z away)


def render_posed(vertices: np.ndarray, affine: np.ndarray, faces: np.ndarray, light: np.ndarray,
                 size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Grey shape of posed ``vertices`` (B, V, 3) float32 through ``affine`` (B, 2, 3) float64, back faces
    culled; ``faces`` (F, 3); ``light`` (L, 6), the kernels' light table
    (:func:`.fast_shape.video_light_table`); ``size`` (H, W) -> (rgb (B, H, W, 3) float32 in [0, 1] on
    black, alpha (B, H, W) float32)."""
    vertices = np.ascontiguousarray(vertices, np.float32)
    src = vertices * _FLIP
    affine = np.ascontiguousarray(affine, np.float64)
    if raster_backend() != "numba":
        from .fast_shape import render_posed_torch  # torch only here: the path without the compiled kernels

        return render_posed_torch(src, vertices, affine, faces, light, size)
    H, W = size
    B = len(vertices)
    rgb = np.zeros((B, H, W, 3), np.float32)
    alpha = np.zeros((B, H, W), np.float32)
    lights = np.ascontiguousarray(np.broadcast_to(np.asarray(light, np.float64), (B, *np.shape(light))))
    compiled.load().shade_frames(src, affine, np.empty((0, 0, 3), np.float32), vertices,
                                 np.ascontiguousarray(faces, np.int64), lights, True, compiled.SPAN_EPS,
                                 compiled.FLAT, True, rgb, alpha)
    return rgb, alpha


def warm_up() -> None:
    """Import numba and load (or, on a machine's first run, compile) the kernels now, with a one-triangle
    render: about 0.5 s from the on-disk cache, several seconds to compile. A video stage calls this when it
    starts, while it waits for its first fitted frames, so its first chunk does not pay it."""
    if raster_backend() != "numba":
        return
    tri = np.array([[[1.0, 1.0, -1.0], [3.0, 1.0, -1.0], [1.0, 3.0, -1.0]]], np.float32)
    light = np.array([[0.0, 0.0, 1.0, 1.0, 1.0, 1.0]])
    flip_y = np.array([[[1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]])  # its pixels: (1, 1), (3, 1), (1, 3)
    render_posed(tri, flip_y, np.array([[0, 2, 1]]), light, (4, 4))
