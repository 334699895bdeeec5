"""Compiled (numba) kernels of the videos' grey render: the optional fast path of
:mod:`spectre.render.fast_shape`, and the posed render of the video process, which has no torch (so this
module sits outside :mod:`spectre.render`, whose package imports torch).

Why: the torch fast path spends most of a frame on tensor set-up for ICT's 45k mostly sub-pixel triangles
(gathers, per-group tables, masks), not on drawing. One compiled loop per frame over the triangles and
then over the covered pixels does the same work without the intermediate tensors.

What it draws is exactly :func:`.fast_shape.render_shape_pixels`'s rule: pixel centres at integers,
z smaller = nearer, back faces culled by the sign of the screen area, a triangle covers the pixel centres
of rows ``ceil(min y) .. floor(max y)`` between its edges widened by ``eps`` (so shared edges never leave
pin-holes; an edge rising less than ``flat`` bounds no row), ties to the lower face index, a non-finite
vertex drops its triangles, world vertex normals interpolated with the barycentrics at the pixel centre
and lit by directional lights (Lambert, clamped per light). Arithmetic is float64 inside (the torch path
is float32), so a pixel centre within float32 rounding of an edge can differ.

Importing this module does not import numba: the functions below are plain Python until :func:`load`
(called by :mod:`spectre.render.fast_shape` on its first render, when ``SPECTRE_RASTER`` allows it) imports numba and
compiles them in place. The compiled code is cached beside this file, or in numba's user-wide cache
(``~/.cache/numba``, ``NUMBA_CACHE_DIR``) when this folder is read-only, so only the first call on a machine
compiles (about 4 s); loading the cache costs about 0.5 s per process.
"""
from __future__ import annotations

import functools
import math
import os
import sys

import numpy as np

from .errors import ConfigError

__all__ = ["FLAT", "NO_BYTES", "POSED_AXES", "SPAN_EPS", "load", "posed_frames", "posed_frames_into", "raster_backend",
           "shade_frames", "tint_array", "vertex_normals", "warm_up"]

#: pixels, as the differentiable rasteriser: spans are widened by this, so shared edges overlap a hair and
#: never leave pin-holes (the torch path, :mod:`.fast_shape`, draws by the same rule)
SPAN_EPS = 1e-5
#: pixels: an edge that rises less than this bounds no row (it is the top or bottom of its box)
FLAT = 1e-4
#: ``out8`` of :func:`shade_frames` when it draws into float frames
NO_BYTES = np.zeros((1, 0, 0, 3), np.uint8)
#: posed model-space vertices -> the crop's axes (x right, y down, z away): what :func:`posed_frames` draws
POSED_AXES = np.array([1.0, -1.0, -1.0], np.float32)

#: the functions compiled by :func:`load`, callees first
_KERNELS = ("_add_face_normal", "_unit_row", "_normals_of", "_drawn_normals_of", "vertex_normals", "_to_pixels",
            "_hidden", "_edge", "_draw", "_to_u8", "_tinted_faces", "_shade", "shade_frames")


@functools.cache
def load():
    """This module with its kernels compiled (numba imported here, once), or None without numba."""
    try:
        from numba import njit  # optional third-party dependency (the ``fast`` extra)
    except ImportError:
        return None
    # no GIL, IEEE division (no zero checks), fused multiply-adds (the only fast-math flag: NaN and inf keep
    # their meaning; about 7 % faster) and an on-disk cache
    flags = {"nogil": True, "error_model": "numpy", "fastmath": {"contract"}}
    module = sys.modules[__name__]
    for name in _KERNELS:  # the kernels call each other through these module globals
        fn = getattr(module, name)
        try:
            setattr(module, name, njit(cache=True, **flags)(fn))
        except RuntimeError:  # no writable cache folder (this package's and the user's): compile each process
            setattr(module, name, njit(**flags)(fn))
    return module


def raster_backend() -> str:
    """``"numba"`` or ``"torch"``: which rasteriser draws the grey video render on CPU.

    ``SPECTRE_RASTER=auto`` (default) takes the compiled kernels when numba is installed (the ``fast``
    extra), ``torch`` forces the pure-torch path, ``numba`` requires the kernels."""
    value = os.environ.get("SPECTRE_RASTER", "auto").strip().lower() or "auto"
    if value not in ("auto", "torch", "numba"):
        raise ConfigError(f"SPECTRE_RASTER must be auto, torch or numba, not {value!r}")
    if value == "torch":
        return "torch"
    if load() is not None:
        return "numba"
    if value == "numba":
        raise ConfigError("SPECTRE_RASTER=numba but numba is not installed (pip install 'spectre-face[fast]')")
    return "torch"


def _add_face_normal(vertices, faces, f, acc):
    """Face ``f``'s normal, un-normalised (float64 cross product of two edges: its length is twice the
    area), added to its corners' rows of ``acc``."""
    i0, i1, i2 = faces[f, 0], faces[f, 1], faces[f, 2]
    ax = float(vertices[i1, 0]) - vertices[i0, 0]
    ay = float(vertices[i1, 1]) - vertices[i0, 1]
    az = float(vertices[i1, 2]) - vertices[i0, 2]
    bx = float(vertices[i2, 0]) - vertices[i0, 0]
    by = float(vertices[i2, 1]) - vertices[i0, 1]
    bz = float(vertices[i2, 2]) - vertices[i0, 2]
    nx, ny, nz = ay * bz - az * by, az * bx - ax * bz, ax * by - ay * bx
    for i in (i0, i1, i2):
        acc[i, 0] += nx
        acc[i, 1] += ny
        acc[i, 2] += nz


def _unit_row(acc, i, out):
    """Row ``i`` of ``acc`` divided by ``max(|row|, 1e-6)`` into ``out``."""
    norm = max(math.sqrt(acc[i, 0] ** 2 + acc[i, 1] ** 2 + acc[i, 2] ** 2), 1e-6)
    out[i, 0] = acc[i, 0] / norm
    out[i, 1] = acc[i, 1] / norm
    out[i, 2] = acc[i, 2] / norm


def _normals_of(vertices, faces, out):
    """Area-weighted unit vertex normals of one mesh (V, 3) into ``out`` (V, 3), as ``geometry.vertex_normals``:
    un-normalised face normals summed per vertex, divided by ``max(|n|, 1e-6)``."""
    acc = np.zeros((vertices.shape[0], 3), np.float64)
    for f in range(faces.shape[0]):
        _add_face_normal(vertices, faces, f, acc)
    for i in range(vertices.shape[0]):
        _unit_row(acc, i, out)


def _drawn_normals_of(vertices, faces, fbuf, box, need, out):
    """:func:`_normals_of` for the vertices of the faces drawn in ``fbuf`` inside ``box`` only (the others'
    rows of ``out`` are left as they are): the same sums in the same order, so the same normals, without the
    hidden parts (the mouth's inside, the eye sockets, the back faces). ``need`` (V,) bool scratch, all False on entry
    and on return."""
    for yi in range(box[0], box[1] + 1):
        for xi in range(box[2], box[3] + 1):
            f = fbuf[yi, xi]
            if f >= 0:
                need[faces[f, 0]] = need[faces[f, 1]] = need[faces[f, 2]] = True
    acc = np.zeros((vertices.shape[0], 3), np.float64)
    for f in range(faces.shape[0]):
        if need[faces[f, 0]] or need[faces[f, 1]] or need[faces[f, 2]]:
            _add_face_normal(vertices, faces, f, acc)
    for i in range(vertices.shape[0]):
        if need[i]:
            need[i] = False
            _unit_row(acc, i, out)


def vertex_normals(vertices, faces, out):
    """Unit vertex normals of a batch: ``vertices`` (B, V, 3), ``faces`` (F, 3) int64 -> ``out`` (B, V, 3)."""
    for b in range(vertices.shape[0]):
        _normals_of(vertices[b], faces, out[b])


_BIG = 1e30  # a row bound that never binds


def _to_pixels(src, affine, out):
    """Vertices ``src`` (V, 3) -> ``out`` (V, 3) float64: x, y through the 2x3 ``affine``, depth shifted so the
    nearest finite vertex is at 1; a vertex with any non-finite value becomes NaN. False when none is finite."""
    zmin = np.inf
    for i in range(src.shape[0]):
        sx, sy, sz = float(src[i, 0]), float(src[i, 1]), float(src[i, 2])
        if math.isfinite(sx) and math.isfinite(sy) and math.isfinite(sz):
            out[i, 0] = affine[0, 0] * sx + affine[0, 1] * sy + affine[0, 2]
            out[i, 1] = affine[1, 0] * sx + affine[1, 1] * sy + affine[1, 2]
            out[i, 2] = sz
            zmin = min(zmin, sz)
        else:
            out[i, 0] = out[i, 1] = out[i, 2] = np.nan
    if not math.isfinite(zmin):
        return False
    for i in range(src.shape[0]):
        out[i, 2] += 1.0 - zmin
    return True


def _draw(points, faces, cull, eps, flat, zbuf, fbuf, box):
    """Z-buffer one mesh: ``points`` (V, 3) float64 pixel x, y and positive depth; the nearest face per pixel
    into ``zbuf``/``fbuf`` (H, W; fbuf -1 = empty); ``box`` [y0, y1, x0, x1] grows to hold every drawn pixel."""
    H, W = zbuf.shape
    by0, by1, bx0, bx1 = box[0], box[1], box[2], box[3]
    for f in range(faces.shape[0]):
        i0, i1, i2 = faces[f, 0], faces[f, 1], faces[f, 2]
        x0, y0 = points[i0, 0], points[i0, 1]
        x1, y1 = points[i1, 0], points[i1, 1]
        x2, y2 = points[i2, 0], points[i2, 1]
        e1x, e1y, e2x, e2y = x1 - x0, y1 - y0, x2 - x0, y2 - y0
        area = e1x * e2y - e1y * e2x
        if cull:
            if not area < 0.0:  # back-facing, degenerate or NaN (a non-finite vertex)
                continue
        elif not (area != 0.0 and math.isfinite(area)):
            continue
        # rows of pixel centres inside the y-range; columns widened by eps
        ylo = max(np.ceil(min(y0, y1, y2)), 0.0)
        yhi = min(np.floor(max(y0, y1, y2)), H - 1.0)
        xlo = max(np.ceil(min(x0, x1, x2) - eps), 0.0)
        xhi = min(np.floor(max(x0, x1, x2) + eps), W - 1.0)
        if ylo > yhi or xlo > xhi:
            continue
        z0 = points[i0, 2]
        inv_area = 1.0 / area
        dzdx = ((points[i1, 2] - z0) * e2y - e1y * (points[i2, 2] - z0)) * inv_area
        dzdy = (e1x * (points[i2, 2] - z0) - (points[i1, 2] - z0) * e2x) * inv_area
        if _hidden(zbuf, int(ylo), int(yhi), int(xlo), int(xhi),
                   min(z0, points[i1, 2], points[i2, 2]) - abs(dzdx) * _REACH - _ZTOL):
            continue
        # per edge a -> b, relative to the box: u = q + p * v on row v. It bounds the row from below where it
        # runs down on a front face (y down), from above where it runs up, not at all when it is flat.
        orient = 1.0 if area < 0.0 else -1.0
        ql0, pl0, qh0, ph0 = _edge(x1, y1, x2, y2, xlo, ylo, orient, flat)
        ql1, pl1, qh1, ph1 = _edge(x2, y2, x0, y0, xlo, ylo, orient, flat)
        ql2, pl2, qh2, ph2 = _edge(x0, y0, x1, y1, xlo, ylo, orient, flat)
        zo = z0 + dzdx * (xlo - x0) + dzdy * (ylo - y0)
        ix0, ix1 = int(xlo), int(xhi)
        for v in range(int(yhi - ylo) + 1):
            fv = float(v)
            a = max(ql0 + pl0 * fv, ql1 + pl1 * fv, ql2 + pl2 * fv)
            b = min(qh0 + ph0 * fv, qh1 + ph1 * fv, qh2 + ph2 * fv)
            lo = max(ix0, ix0 + int(np.ceil(max(a - eps, -1.0))))
            hi = min(ix1, ix0 + int(np.floor(min(b + eps, W + 1.0))))
            if lo > hi:
                continue
            yi = int(ylo) + v
            zrow = zo + dzdy * fv
            for xi in range(lo, hi + 1):
                d = np.float32(zrow + dzdx * (xi - ix0))
                if d < zbuf[yi, xi]:  # strict: faces come in order, so ties keep the lower index
                    zbuf[yi, xi] = d
                    fbuf[yi, xi] = f
            by0 = min(by0, yi)
            by1 = max(by1, yi)
            bx0 = min(bx0, lo)
            bx1 = max(bx1, hi)
    box[0], box[1], box[2], box[3] = by0, by1, bx0, bx1


#: pixels: how far outside its triangle a drawn pixel centre can lie (the span's ``eps`` and rounding), and
#: the depth tolerance of a skipped triangle's nearest possible pixel (float32 rounding of depths near 1-10)
_REACH = 4 * SPAN_EPS
_ZTOL = 1e-5


def _hidden(zbuf, y0, y1, x0, x1, znear):
    """Whether every pixel of the box [y0, y1] x [x0, x1] already holds a depth no farther than ``znear``: a
    triangle no nearer than that anywhere would draw nothing there (``d < zbuf`` fails), so it is skipped
    before its edges are set up. Inside the head (mouth, teeth) most triangles are such, behind the face
    that is drawn first; elsewhere the first pixel is empty and the test costs one read."""
    for yi in range(y0, y1 + 1):
        for xi in range(x0, x1 + 1):
            if zbuf[yi, xi] > znear:
                return False
    return True


def _edge(xa, ya, xb, yb, xlo, ylo, orient, flat):
    """Row bounds of edge a -> b as lines ``u = q + p * v`` in box coordinates: (q, p) as a lower bound,
    then as an upper bound; a role the edge does not have is (-/+ _BIG, 0)."""
    rise = (yb - ya) * orient
    if rise >= flat or rise <= -flat:
        p = (xb - xa) / (yb - ya)
        q = (xa - xlo) + p * (ylo - ya)
        if rise > 0.0:
            return q, p, _BIG, 0.0
        return -_BIG, 0.0, q, p
    return -_BIG, 0.0, _BIG, 0.0


def _shade(points, normals, faces, light, clamp, tint, tinted_faces, zbuf, fbuf, box, rgb, alpha, out8):
    """Colour the covered pixels inside ``box`` (and reset the buffers there for the next frame).
    ``light`` (L, 6): unit direction, then colour times albedo / L; ``tint`` (V, 3) per-vertex factors of that
    albedo, interpolated as the normals (empty: none), on the faces ``tinted_faces`` (F,) marks (the others
    skip it). Into ``rgb`` and ``alpha``, or, when ``out8`` (H, W', 3) uint8 is not empty, straight into its
    first W columns (:func:`_to_u8`)."""
    to_u8 = out8.shape[0] > 0
    tinted = tint.shape[0] > 0
    n_lights = light.shape[0]
    for yi in range(box[0], box[1] + 1):
        cy = float(yi)
        for xi in range(box[2], box[3] + 1):
            f = fbuf[yi, xi]
            if f < 0:
                continue
            fbuf[yi, xi] = -1
            zbuf[yi, xi] = np.inf
            cx = float(xi)
            i0, i1, i2 = faces[f, 0], faces[f, 1], faces[f, 2]
            x0, y0 = points[i0, 0], points[i0, 1]
            x1, y1 = points[i1, 0], points[i1, 1]
            x2, y2 = points[i2, 0], points[i2, 1]
            w0 = (x2 - x1) * (cy - y1) - (y2 - y1) * (cx - x1)
            w1 = (x0 - x2) * (cy - y2) - (y0 - y2) * (cx - x2)
            w2 = (x1 - x0) * (cy - y0) - (y1 - y0) * (cx - x0)
            inv = 1.0 / (w0 + w1 + w2)
            w0, w1, w2 = w0 * inv, w1 * inv, w2 * inv
            nx = w0 * normals[i0, 0] + w1 * normals[i1, 0] + w2 * normals[i2, 0]
            ny = w0 * normals[i0, 1] + w1 * normals[i1, 1] + w2 * normals[i2, 1]
            nz = w0 * normals[i0, 2] + w1 * normals[i1, 2] + w2 * normals[i2, 2]
            r = 0.0
            g = 0.0
            bl = 0.0
            for k in range(n_lights):
                lam = min(max(nx * light[k, 0] + ny * light[k, 1] + nz * light[k, 2], 0.0), 1.0)
                r += lam * light[k, 3]
                g += lam * light[k, 4]
                bl += lam * light[k, 5]
            if tinted and tinted_faces[f]:
                r *= w0 * tint[i0, 0] + w1 * tint[i1, 0] + w2 * tint[i2, 0]
                g *= w0 * tint[i0, 1] + w1 * tint[i1, 1] + w2 * tint[i2, 1]
                bl *= w0 * tint[i0, 2] + w1 * tint[i1, 2] + w2 * tint[i2, 2]
            if clamp:
                r, g, bl = min(max(r, 0.0), 1.0), min(max(g, 0.0), 1.0), min(max(bl, 0.0), 1.0)
            if to_u8:
                out8[yi, xi, 0] = _to_u8(r)
                out8[yi, xi, 1] = _to_u8(g)
                out8[yi, xi, 2] = _to_u8(bl)
                continue
            rgb[yi, xi, 0] = r
            rgb[yi, xi, 1] = g
            rgb[yi, xi, 2] = bl
            alpha[yi, xi] = 1.0


def _to_u8(value):
    """A colour in [0, 1] as the composed frame's byte: as the float32 render is converted
    (``compose``: times 255, plus 0.5, clipped, truncated), so both paths give the same bytes."""
    v = np.float32(np.float32(np.float32(value) * np.float32(255.0)) + np.float32(0.5))
    return np.uint8(min(max(v, np.float32(0.0)), np.float32(255.0)))


def _tinted_faces(tint, faces):
    """(F,) bool: the faces with a corner whose ``tint`` (V, 3) is not 1; none when ``tint`` is empty. Most of
    a face is plain grey: its pixels skip the interpolation."""
    out = np.zeros(faces.shape[0], np.bool_)
    if tint.shape[0] == 0:
        return out
    for f in range(faces.shape[0]):
        for k in range(3):
            v = faces[f, k]
            if tint[v, 0] != 1.0 or tint[v, 1] != 1.0 or tint[v, 2] != 1.0:
                out[f] = True
                break
    return out


def shade_frames(src, affine, normals, vertices, faces, lights, cull, eps, flat, clamp, tint, rgb, alpha, out8):
    """Grey shape of a batch into ``rgb`` (B, H, W, 3) and ``alpha`` (B, H, W), both zero on entry; or, when
    ``out8`` (B, H, W', 3) uint8 is not :data:`NO_BYTES`, straight into its first W columns (black there on
    entry; ``alpha``'s shape still gives H, W).

    ``src`` (B, V, 3) x, y and depth mapped to pixels by ``affine`` (B, 2, 3) (x, y only); world ``normals``
    (B, V, 3), or an empty array to compute them here, one frame at a time, from ``vertices`` (B, V, 3);
    ``faces`` (F, 3) int64; ``lights`` (B, L, 6): unit direction, then colour times albedo / L; ``clamp``
    clips colours to [0, 1]; ``tint`` (V, 3) float32 per-vertex factors of the albedo, or (0, 3): grey."""
    B, V = src.shape[0], src.shape[1]
    H, W = alpha.shape[1], alpha.shape[2]
    to_u8 = out8.shape[1] > 0
    zbuf = np.full((H, W), np.inf, np.float32)  # 8 bytes a pixel in all: a 224² frame's buffers stay in cache
    fbuf = np.full((H, W), -1, np.int32)
    points = np.empty((V, 3))
    own = normals.shape[0] == 0
    scratch = np.empty((V, 3), normals.dtype)
    need = np.zeros(V, np.bool_)
    tinted_faces = _tinted_faces(tint, faces)
    for b in range(B):
        if not _to_pixels(src[b], affine[b], points):
            continue
        box = np.array([H, -1, W, -1])
        _draw(points, faces, cull, eps, flat, zbuf, fbuf, box)
        if own:
            _drawn_normals_of(vertices[b], faces, fbuf, box, need, scratch)
            nrm = scratch
        else:
            nrm = normals[b]
        if box[1] >= 0:
            if to_u8:
                _shade(points, nrm, faces, lights[b], clamp, tint, tinted_faces, zbuf, fbuf, box, rgb[0], alpha[0],
                       out8[b])
            else:
                _shade(points, nrm, faces, lights[b], clamp, tint, tinted_faces, zbuf, fbuf, box, rgb[b], alpha[b],
                       out8[0])


def posed_frames(vertices: np.ndarray, affine: np.ndarray, faces: np.ndarray, light: np.ndarray,
                 size: tuple[int, int], tint: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Grey shape of posed ``vertices`` (B, V, 3) float32 (model space) through ``affine`` (B, 2, 3) float64,
    the map of their ``(x, -y)`` to pixels (depth ``-z``), back faces culled; ``faces`` (F, 3); ``light``
    (L, 6), the kernels' light table; ``size`` (H, W); ``tint`` (V, 3): per-vertex factors of the grey albedo
    (``FaceModel.render_colours``), None for plain grey -> (rgb (B, H, W, 3) float32 in [0, 1] on black,
    alpha (B, H, W) float32). Needs the kernels (:func:`load`)."""
    H, W = size
    B = len(vertices)
    rgb = np.zeros((B, H, W, 3), np.float32)
    alpha = np.zeros((B, H, W), np.float32)
    _shade_posed(vertices, affine, faces, light, tint, rgb, alpha, NO_BYTES)
    return rgb, alpha


def posed_frames_into(out: np.ndarray, vertices: np.ndarray, affine: np.ndarray, faces: np.ndarray,
                      light: np.ndarray, size: tuple[int, int], tint: np.ndarray | None = None) -> None:
    """:func:`posed_frames`, drawn straight into the first W columns of composed uint8 frames ``out``
    (B, H, W', 3) (black there on entry), with the same bytes as converting its float render. For the video,
    this skips a float frame and its alpha per face and frame, and the conversion (2-3 ms of a 512² frame)."""
    H, W = size
    if out.dtype != np.uint8 or out.shape[0] != len(vertices) or out.shape[1] != H or out.shape[2] < W:
        raise ValueError(f"out {out.shape} {out.dtype} cannot hold {len(vertices)} uint8 frames of {W}x{H}")
    # the float frame is not drawn into; its alpha only gives the size
    _shade_posed(vertices, affine, faces, light, tint, np.empty((1, 0, 0, 3), np.float32),
                 np.empty((1, H, W), np.float32), out)


def tint_array(tint: np.ndarray | None, n_vertices: int) -> np.ndarray:
    """The kernels' ``tint``: (V, 3) float32, or (0, 3) for none; a tint for another mesh is a ``ValueError``."""
    if tint is None:
        return np.zeros((0, 3), np.float32)
    tint = np.ascontiguousarray(tint, np.float32)
    if tint.shape != (n_vertices, 3):
        raise ValueError(f"tint {tint.shape} does not fit a mesh of {n_vertices} vertices")
    return tint


def _shade_posed(vertices, affine, faces, light, tint, rgb, alpha, out8) -> None:
    vertices = np.ascontiguousarray(vertices, np.float32)
    lights = np.ascontiguousarray(np.broadcast_to(np.asarray(light, np.float64), (len(vertices), *np.shape(light))))
    load().shade_frames(vertices * POSED_AXES, np.ascontiguousarray(affine, np.float64),
                        np.empty((0, 0, 3), np.float32), vertices, np.ascontiguousarray(faces, np.int64), lights,
                        True, SPAN_EPS, FLAT, True, tint_array(tint, vertices.shape[1]), rgb, alpha, out8)


def warm_up() -> None:
    """Import numba and load (or, on a machine's first run, compile) the kernels now, with a one-triangle
    render: about 0.5 s from the on-disk cache, several seconds to compile. A video stage calls this when it
    starts, while it waits for its first fitted frames, so its first chunk does not pay it."""
    if raster_backend() != "numba":
        return
    tri = np.array([[[1.0, 1.0, -1.0], [3.0, 1.0, -1.0], [1.0, 3.0, -1.0]]], np.float32)
    light = np.array([[0.0, 0.0, 1.0, 1.0, 1.0, 1.0]])
    flip_y = np.array([[[1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]])  # its pixels: (1, 1), (3, 1), (1, 3)
    posed_frames(tri, flip_y, np.array([[0, 2, 1]]), light, (4, 4))
