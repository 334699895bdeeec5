"""Fast, non-differentiable grey shape render for the output videos.

Why a second rasteriser: the video only shows the grey shape (``Renderer.render_shape`` with culled back
faces) and needs no gradient, while the differentiable rasteriser (:mod:`.rasterize`) pays for
autograd-ready tensors, row spans and generic interpolation on every frame. At the video's window size
(224-512 px) ICT's 45k render triangles are mostly sub-pixel or a few pixels wide, so here each
front-facing triangle simply enumerates the pixel centres of its (small) bounding box, tests them with
three edge functions and keeps the nearest with one ``scatter_reduce(amin)`` over keys that pack the depth
above the triangle index. The winning triangle's barycentrics then interpolate world vertex normals, lit
per pixel with the same 5 directional lights and grey albedo as :meth:`Renderer.render_shape`.

Coordinates are pixels with centres at integers (the convention of the pipeline's 2x3 crop transforms),
z smaller = nearer. ``tests/test_fast_render.py`` bounds the difference to the differentiable renderer.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .. import raster_kernels
from ..faces.crop import FACE_CROP_SIZE
from ..geometry import crop_to_pixels, vertex_normals
from ..raster_kernels import raster_backend
from .rasterize import with_render_threads
from .shading import SHAPE_GREY, default_shape_lights

__all__ = ["visible_triangles", "render_shape_pixels", "render_shape_fast_in_frame", "crop_to_window_pixels",
           "raster_backend", "render_posed_torch", "video_light_table"]

_EMPTY = torch.iinfo(torch.int64).max
_SPAN_EPS = raster_kernels.SPAN_EPS
#: bounding-box sizes laid out as dense (triangles, candidates) blocks; larger boxes are enumerated
#: one candidate at a time. 1 and 2 are exact sizes, 4 and 8 take boxes of 3-4 and 5-8 pixels.
_BLOCKS = (1, 2, 4, 8)
_FAR = 1e30  # a bound that never binds
_FLAT = raster_kernels.FLAT  # pixels: an edge that rises less than this bounds no row (the top or bottom of its box)
#: float columns of the per-triangle table: depth at the box's first pixel and its x/y steps, box width and
#: height, and per edge the row span bounds ``u >= qlo + plo*v`` and ``u <= qhi + phi*v`` (box-relative)
_ZO, _DZX, _DZY, _BW, _BH, _QLO, _PLO, _QHI, _PHI = 0, 1, 2, 3, 4, 5, 8, 11, 14
#: triangle groups: dense blocks (width, height) of _BLOCKS, then None for large boxes (row by row)
_GROUPS = [(a, h) for a in _BLOCKS for h in _BLOCKS] + [None]


def _triangles(points: torch.Tensor, faces: torch.Tensor, size: tuple[int, int], cull_backfaces: bool):
    """Per-triangle table of the triangles that can cover a pixel centre, grouped by box size.

    ``points`` (B, V, 3) pixels + positive depth, ``faces`` (F, 3). Returns (gid (n,) = b*F + f,
    base (n,) flat index of the box's first pixel, table (17, n) float32 column-major (see the column
    names), ends: the end of each box-size group in :func:`_groups` order), or None when nothing is left."""
    B, V = points.shape[:2]
    H, W = size
    n_faces = faces.shape[0]
    shift = (torch.arange(B, device=faces.device) * V)[:, None]
    corner = [(faces[:, k][None] + shift).reshape(-1) for k in range(3)]  # (B*F,) rows per corner
    flat = points.reshape(-1, 3)
    px, py = flat[:, 0].contiguous(), flat[:, 1].contiguous()
    x = [px.index_select(0, i) for i in corner]
    y = [py.index_select(0, i) for i in corner]
    area = (x[1] - x[0]) * (y[2] - y[0]) - (y[1] - y[0]) * (x[2] - x[0])
    # facing first (cheap, drops half the triangles), then boxes that hold a pixel centre
    a_np = area.numpy()
    gid = _nonzero(a_np < 0 if cull_backfaces else (a_np != 0) & np.isfinite(a_np))
    pick = lambda t: t.index_select(0, gid)  # noqa: E731  (gid ascending: sequential reads)
    x, y = [pick(t) for t in x], [pick(t) for t in y]
    bx0 = torch.ceil(torch.minimum(torch.minimum(x[0], x[1]), x[2]) - _SPAN_EPS).clamp_(min=0)
    bx1 = torch.floor(torch.maximum(torch.maximum(x[0], x[1]), x[2]) + _SPAN_EPS).clamp_(max=W - 1)
    by0 = torch.ceil(torch.minimum(torch.minimum(y[0], y[1]), y[2])).clamp_(min=0)
    by1 = torch.floor(torch.maximum(torch.maximum(y[0], y[1]), y[2])).clamp_(max=H - 1)
    bw, bh = bx1 - bx0 + 1, by1 - by0 + 1
    # boxes holding a pixel centre, grouped by size (a stable sort keeps face order within a group)
    group = _group_of(bw, bh)
    order = np.argsort(group, kind="stable")[:group.size - np.count_nonzero(group == _NONE)]
    if order.size == 0:
        return None
    ends = np.cumsum(np.bincount(group, minlength=len(_GROUPS))[:len(_GROUPS)]).tolist()
    # computed in face order (sequential reads), permuted into groups once at the end
    kept = np.zeros(group.size, bool)
    kept[order] = True
    keep = np.flatnonzero(kept)
    rank = np.empty(group.size, np.int64)
    rank[keep] = np.arange(keep.size)
    keep, order = torch.from_numpy(keep), torch.from_numpy(rank[order])
    pick = lambda t: t.index_select(0, keep)  # noqa: E731
    gid, x, y, bx0, by0, bw, bh = pick(gid), [pick(t) for t in x], [pick(t) for t in y], pick(bx0), pick(by0), \
        pick(bw), pick(bh)
    area = area.index_select(0, gid)
    pz = flat[:, 2].contiguous()
    z = [pz.index_select(0, c.index_select(0, gid)) for c in corner]
    orient = torch.sign(area).neg_()  # +1 front (clockwise on screen, y down), -1 back
    # edge a -> b bounds row v (box-relative) at u = xa - bx0 + (v + by0 - ya) * dx/dy: from below where
    # it runs downwards on a front face (upwards on a back face), from above where it runs the other way;
    # an edge that rises less than _FLAT bounds nothing. Masks as 0/1 floats (cheaper than bool tensors).
    qlo, plo, qhi, phi = [], [], [], []
    for ka, kb in ((1, 2), (2, 0), (0, 1)):
        dx, dy = x[kb] - x[ka], y[kb] - y[ka]
        down = dy * orient * (1.0 / _FLAT)
        lower = torch.floor(down).clamp_(0.0, 1.0)
        upper = torch.floor(down.neg_()).clamp_(0.0, 1.0)
        p = dx / (dy + (1.0 - lower - upper))  # flat edges divide by ~1: finite, then masked out
        q = torch.addcmul(x[ka] - bx0, p, by0 - y[ka])
        qlo.append(torch.addcmul(q * lower, lower - 1.0, lower.new_tensor(_FAR)))  # -FAR where not a lower bound
        plo.append(p * lower)
        qhi.append(torch.addcmul(q * upper, upper - 1.0, upper.new_tensor(-_FAR)))
        phi.append(p * upper)
    e1x, e1y, e2x, e2y = x[1] - x[0], y[1] - y[0], x[2] - x[0], y[2] - y[0]
    dz1, dz2 = z[1] - z[0], z[2] - z[0]
    dzdx = (dz1 * e2y - e1y * dz2) / area
    dzdy = (e1x * dz2 - dz1 * e2x) / area
    zo = z[0] + dzdx * (bx0 - x[0]) + dzdy * (by0 - y[0])
    base = torch.div(gid, n_faces, rounding_mode="floor") * (H * W) + (by0 * W + bx0).long()
    table = torch.stack([zo, dzdx, dzdy, bw, bh] + qlo + plo + qhi + phi).index_select(1, order)
    return gid.index_select(0, order), base.index_select(0, order), table, ends


def _nonzero(mask: np.ndarray) -> torch.Tensor:
    """Flat indices of a boolean numpy mask as an int64 tensor (numpy's is several times faster here)."""
    return torch.from_numpy(np.flatnonzero(mask))


#: box width/height (clamped to 9) -> block index of _BLOCKS (4: none fits)
_SIDE = np.array([4, 0, 1, 2, 2, 3, 3, 3, 3, 4])
_NONE = 255


def _group_of(bw: torch.Tensor, bh: torch.Tensor) -> np.ndarray:
    """Index into :data:`_GROUPS` of boxes ``bw`` x ``bh`` (uint8; _NONE for empty boxes)."""
    w = np.clip(bw.numpy(), -1, 9).astype(np.int64)
    h = np.clip(bh.numpy(), -1, 9).astype(np.int64)
    gw, gh = _SIDE[np.maximum(w, 0)], _SIDE[np.maximum(h, 0)]
    n = len(_BLOCKS)
    group = np.where((gw < n) & (gh < n), gw * n + gh, n * n).astype(np.uint8)
    group[(w <= 0) | (h <= 0)] = _NONE
    return group


def _row_bounds(t: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """First and last pixel (box-relative, float) of row ``v`` inside all three edges; ``t`` columns broadcast
    against ``v``. An empty row has last < first."""
    lo = torch.addcmul(t[_QLO], t[_PLO], v)
    hi = torch.addcmul(t[_QHI], t[_PHI], v)
    for k in (1, 2):
        lo = torch.maximum(lo, torch.addcmul(t[_QLO + k], t[_PLO + k], v))
        hi = torch.minimum(hi, torch.addcmul(t[_QHI + k], t[_PHI + k], v))
    lo = torch.ceil(lo.sub_(_SPAN_EPS)).clamp_(min=0)
    hi = torch.minimum(torch.floor(hi.add_(_SPAN_EPS)), t[_BW] - 1)
    return lo, hi


def _draw_rows(zbuf: torch.Tensor, t: torch.Tensor, gid: torch.Tensor, base: torch.Tensor, width: int) -> None:
    """Draw triangles with large boxes row by row: each row's span, then one candidate per covered pixel."""
    dev = t.device
    rows = t[_BH].long()
    n_rows = int(rows.sum())
    tri = torch.repeat_interleave(torch.arange(t.shape[1], device=dev), rows, output_size=n_rows)
    v = (torch.arange(n_rows, device=dev) - (torch.cumsum(rows, 0) - rows).index_select(0, tri)).to(torch.float32)
    tr = t.index_select(1, tri)
    lo, hi = _row_bounds(tr, v)
    count = (hi - lo + 1).clamp_(min=0).nan_to_num_(0.0).long()
    n_px = int(count.sum())
    if n_px == 0:
        return
    row = torch.repeat_interleave(torch.arange(n_rows, device=dev), count, output_size=n_px)
    first = torch.cumsum(count, 0) - count
    u = (torch.arange(n_px, device=dev) - first.index_select(0, row)).to(torch.float32) + lo.index_select(0, row)
    zrow = torch.addcmul(tr[_ZO], tr[_DZY], v)
    depth = torch.addcmul(zrow.index_select(0, row), tr[_DZX].index_select(0, row), u).clamp_(min=1e-30)
    key = (depth.view(torch.int32).to(torch.int64) << 32) | gid.index_select(0, tri.index_select(0, row))
    row_base = base.index_select(0, tri) + v.long() * width
    zbuf.scatter_reduce_(0, row_base.index_select(0, row) + u.long(), key, reduce="amin", include_self=True)


def _draw_block(zbuf: torch.Tensor, t: torch.Tensor, gid: torch.Tensor, base: torch.Tensor, a: int, h: int,
                width: int) -> None:
    """Draw triangles whose boxes fit ``a`` x ``h`` pixels (powers of two) as a dense (n, h, a) block:
    per row the span of pixel centres inside all three edges, then only the covered candidates are
    given a depth key and scattered."""
    dev = t.device
    v = torch.arange(h, device=dev, dtype=torch.float32)
    lo, hi = _row_bounds(t[:, :, None], v)
    lo, hi = lo.numpy()[..., None], hi.numpy()[..., None]
    u = np.arange(a, dtype=np.float32)
    inside = (u >= lo) & (u <= hi)  # (n, h, a)
    if h > 2:  # rows past the box (blocks of 4 and 8 hold boxes of 3 and 5-7 rows too)
        inside &= (v.numpy()[:, None] < t[_BH].numpy()[:, None, None])
    hit = _nonzero(inside)
    if hit.numel() == 0:
        return
    ua = hit & (a - 1)
    row = hit >> (a.bit_length() - 1)
    va = row & (h - 1)
    tri = row >> (h.bit_length() - 1)
    uf, vf = ua.to(torch.float32), va.to(torch.float32)
    depth = torch.addcmul(torch.addcmul(t[_ZO].index_select(0, tri), t[_DZX].index_select(0, tri), uf),
                          t[_DZY].index_select(0, tri), vf).clamp_(min=1e-30)
    key = (depth.view(torch.int32).to(torch.int64) << 32) | gid.index_select(0, tri)
    zbuf.scatter_reduce_(0, base.index_select(0, tri) + va * width + ua, key, reduce="amin", include_self=True)


@with_render_threads
@torch.inference_mode()
def visible_triangles(points: torch.Tensor, faces: torch.Tensor, size: tuple[int, int],
                      cull_backfaces: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Z-buffer of a batch of meshes: ``points`` (B, V, 3) pixel x, y (centres at integers) and depth z
    (smaller = nearer), ``faces`` (F, 3) int64 -> (pix (N,) flat ``b*H*W + y*W + x`` of covered pixels,
    face (N,) ``b*F + f``, bary (N, 3) barycentrics at the pixel centres). Ties go to the lower face."""
    pix, face, _, bary = _zbuffer(points, faces, size, cull_backfaces)
    return pix, face, torch.stack(bary, 1)


def _zbuffer(points: torch.Tensor, faces: torch.Tensor, size: tuple[int, int], cull_backfaces: bool):
    H, W = size
    B = points.shape[0]
    dev = points.device
    none = torch.zeros(0, dtype=torch.int64, device=dev)
    empty = (none, none, [none] * 3, [torch.zeros(0, device=dev)] * 3)
    if B == 0 or points.shape[1] == 0 or faces.shape[0] == 0:
        return empty
    points = points.to(torch.float32)
    finite = torch.isfinite(points).all(-1, keepdim=True)
    z = torch.where(finite[..., 0], points[..., 2], float("inf"))
    zmin = z.amin(1, keepdim=True).nan_to_num_(0.0, posinf=0.0)
    # positive depths compare like their float32 bit patterns; a non-finite vertex drops its triangles
    points = torch.where(finite, torch.cat([points[..., :2], points[..., 2:] - zmin[..., None] + 1.0], -1),
                         float("nan"))
    tri = _triangles(points, faces, (H, W), cull_backfaces)
    if tri is None:
        return empty
    gid, base, table, ends = tri
    zbuf = torch.full((B * H * W,), _EMPTY, dtype=torch.int64, device=dev)
    for block, s0, s1 in zip(_GROUPS, [0] + ends[:-1], ends):
        if s1 == s0:
            continue
        t, g, b0 = table[:, s0:s1], gid[s0:s1], base[s0:s1]
        if block is not None:
            _draw_block(zbuf, t, g, b0, *block, W)
        else:
            _draw_rows(zbuf, t, g, b0, W)
    return _winners(zbuf, points, faces, size)


def _winners(zbuf: torch.Tensor, points: torch.Tensor, faces: torch.Tensor, size: tuple[int, int]):
    """Covered pixels of the z-buffer -> (pix, face ``b*F + f``, the winner's three corner rows into the
    batch-flattened vertices, its three barycentrics at the pixel centre)."""
    H, W = size
    pix = _nonzero(zbuf.numpy() != _EMPTY)
    face = zbuf.index_select(0, pix) & 0xFFFFFFFF
    V, n_faces = points.shape[1], faces.shape[0]
    b = torch.div(face, n_faces, rounding_mode="floor")
    local, shift = face - b * n_faces, b * V
    corners = [faces[:, k].index_select(0, local) + shift for k in range(3)]
    flat = points.reshape(-1, 3)
    px, py = flat[:, 0].contiguous(), flat[:, 1].contiguous()
    x = [px.index_select(0, c) for c in corners]
    y = [py.index_select(0, c) for c in corners]
    cx = (pix % W).to(torch.float32)
    cy = (torch.div(pix, W, rounding_mode="floor") % H).to(torch.float32)
    w = [(x[kb] - x[ka]) * (cy - y[ka]) - (y[kb] - y[ka]) * (cx - x[ka]) for ka, kb in ((1, 2), (2, 0), (0, 1))]
    inv = 1.0 / (w[0] + w[1] + w[2])
    return pix, face, corners, [wk * inv for wk in w]


def _render_compiled(normals: torch.Tensor | None, vertices: torch.Tensor | None, src: torch.Tensor,
                     affine: torch.Tensor | None, faces: torch.Tensor, size: tuple[int, int], lights: torch.Tensor,
                     albedo: float, cull_backfaces: bool, clamp: bool,
                     tint: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`render_shape_pixels` by the numba kernels. ``src`` (B, V, 3) x, y go to pixels through ``affine``
    (B, 2, 3; None: they are pixels); with ``normals`` None the kernels compute them from ``vertices``."""
    H, W = size
    B = src.shape[0]
    lights = lights.to(torch.float64).expand(B, -1, -1)  # (L, 6) or (B, L, 6) -> (B, L, 6)
    light = _light_table(lights, albedo)
    if affine is None:
        affine = torch.eye(2, 3, dtype=torch.float64).expand(B, 2, 3)
    as_np = lambda t, dtype=np.float32: np.ascontiguousarray(t.detach().numpy(), dtype)  # noqa: E731
    none = np.empty((0, 0, 3), np.float32)
    rgb = np.zeros((B, H, W, 3), np.float32)
    alpha = np.zeros((B, H, W), np.float32)
    raster_kernels.load().shade_frames(as_np(src), as_np(affine, np.float64), none if normals is None else as_np(normals),
                             none if vertices is None else as_np(vertices), as_np(faces, np.int64),
                             as_np(light, np.float64), bool(cull_backfaces), _SPAN_EPS, _FLAT, bool(clamp),
                             raster_kernels.tint_array(None if tint is None else as_np(tint), src.shape[1]), rgb, alpha,
                             raster_kernels.NO_BYTES)
    return torch.from_numpy(rgb), torch.from_numpy(alpha)


def _light_table(lights: torch.Tensor, albedo: float) -> torch.Tensor:
    """(..., L, 6) lights -> the kernels' table: unit direction, then colour times ``albedo / L``."""
    return torch.cat([F.normalize(lights[..., :3], dim=-1), lights[..., 3:] * (albedo / lights.shape[-2])], -1)


def video_light_table() -> np.ndarray:
    """(L, 6) float64: the video render's lights (the demo's 5, grey albedo) as the kernels take them, for
    the posed render of a process without torch (:func:`spectre.reconstruct.compose.render_posed`)."""
    return np.ascontiguousarray(_light_table(default_shape_lights(1, dtype=torch.float64)[0], SHAPE_GREY).numpy())


@torch.inference_mode()
def render_posed_torch(vertices: np.ndarray, affine: np.ndarray, faces: np.ndarray, light: np.ndarray,
                       size: tuple[int, int], tint: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`spectre.raster_kernels.posed_frames` by the torch path (numba missing or ``SPECTRE_RASTER=torch``)."""
    vertices = np.ascontiguousarray(vertices, np.float32)
    src_t, aff = torch.from_numpy(vertices * raster_kernels.POSED_AXES), torch.from_numpy(np.asarray(affine, np.float64))
    xy = src_t[..., :2].to(torch.float64) @ aff[:, :, :2].transpose(1, 2) + aff[:, None, :, 2]
    points = torch.cat([xy.to(torch.float32), src_t[..., 2:]], -1)
    faces_t = torch.from_numpy(np.asarray(faces, np.int64))
    normals = vertex_normals(torch.from_numpy(vertices), faces_t)
    lights = torch.from_numpy(light).to(torch.float32)
    # the table's colours already hold albedo / L: undo the 1 / L, with albedo 1
    lights = torch.cat([lights[:, :3], lights[:, 3:] * lights.shape[0]], -1)
    tint_t = None if tint is None else torch.from_numpy(raster_kernels.tint_array(tint, vertices.shape[1]))
    rgb, alpha = render_shape_pixels(normals, points, faces_t, size, lights=lights, albedo=1.0, tint=tint_t)
    return rgb.clamp_(0.0, 1.0).numpy(), alpha.numpy()


def _lit(normals: torch.Tensor, lights: torch.Tensor, albedo: float) -> torch.Tensor:
    """``albedo * shading.add_directional_light`` for (N, 3) normals and one set of lights (L, 6)."""
    directions = F.normalize(lights[:, :3], dim=-1)
    return (normals @ directions.T).clamp_(0.0, 1.0) @ (lights[:, 3:] * (albedo / lights.shape[0]))


@with_render_threads  # the same load check as the differentiable renderer: idle OpenMP threads spin
@torch.inference_mode()
def render_shape_pixels(normals: torch.Tensor, points: torch.Tensor, faces: torch.Tensor, size: tuple[int, int], *,
                        lights: torch.Tensor | None = None, albedo: float = SHAPE_GREY,
                        cull_backfaces: bool = True,
                        tint: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Grey shape of a batch: world vertex ``normals`` (B, V, 3), ``points`` (B, V, 3) pixel x, y (centres
    at integers) and depth, ``faces`` (F, 3) -> (rgb (B, H, W, 3) float32, black background; alpha
    (B, H, W) float32 hard coverage). ``lights`` (L, 6) or (B, L, 6), default the demo's 5 lights; ``tint``
    (V, 3): per-vertex factors of the albedo, interpolated like the normals (``FaceModel.render_colours``)."""
    H, W = size
    B = points.shape[0]
    faces = faces.to(device=points.device, dtype=torch.int64)
    rgb = torch.zeros((B, H * W, 3), dtype=torch.float32, device=points.device)
    alpha = torch.zeros((B, H * W), dtype=torch.float32, device=points.device)
    if lights is None:
        lights = default_shape_lights(1, points.device, torch.float32)
    lights = lights.to(device=points.device, dtype=torch.float32)
    if lights.dim() == 3 and lights.shape[0] == 1:
        lights = lights[0]
    if points.device.type == "cpu" and raster_backend() == "numba":
        return _render_compiled(normals, None, points, None, faces, size, lights, albedo, cull_backfaces, False, tint)
    pix, face, corners, bary = _zbuffer(points, faces, size, cull_backfaces)
    if pix.numel() == 0:
        return rgb.view(B, H, W, 3), alpha.view(B, H, W)
    cols = normals.to(torch.float32).reshape(-1, 3).T.contiguous()  # (3, B*V): x, y, z of every normal
    n = torch.stack([torch.addcmul(torch.addcmul(col.index_select(0, corners[0]) * bary[0], col.index_select(
        0, corners[1]), bary[1]), col.index_select(0, corners[2]), bary[2]) for col in cols], 1)
    if lights.dim() == 3:  # per-image lights
        n_img = torch.div(pix, H * W, rounding_mode="floor")
        colour = torch.cat([_lit(n[n_img == i], lights[i], albedo) for i in range(B)])  # pix is sorted
    else:
        colour = _lit(n, lights, albedo)
    if tint is not None:  # the same for every image: corners index the batch-flattened vertices
        V = points.shape[1]
        cols = tint.to(device=points.device, dtype=torch.float32).T.contiguous()
        colour = colour * torch.stack([sum(col.index_select(0, c % V) * w for c, w in zip(corners, bary))
                                       for col in cols], 1)
    rgb.view(-1, 3).index_copy_(0, pix, colour)
    alpha.view(-1).index_fill_(0, pix, 1.0)
    return rgb.view(B, H, W, 3), alpha.view(B, H, W)


def crop_to_window_pixels(crop_vertices: torch.Tensor, crop_transforms: torch.Tensor,
                          crop_size: int = FACE_CROP_SIZE) -> torch.Tensor:
    """Crop coordinates (B, V, 3) -> pixels of the frame (or window) whose pixels the (B, 2, 3) transforms
    map to crop pixels (centres at integers); z is kept (depth order within a frame is all that matters)."""
    m = crop_transforms.to(torch.float64)
    full = torch.cat([m, m.new_tensor([0.0, 0.0, 1.0]).expand(m.shape[0], 1, 3)], 1)
    inv = torch.linalg.inv(full)[:, :2].to(crop_vertices.dtype)  # crop px -> frame px
    uv = crop_to_pixels(crop_vertices[..., :2], crop_size)
    xy = uv @ inv[:, :, :2].transpose(1, 2) + inv[:, None, :, 2]
    return torch.cat([xy, crop_vertices[..., 2:]], -1)


def _crop_to_window_affine(crop_transforms: torch.Tensor, crop_size: int) -> torch.Tensor:
    """(B, 2, 3) float64 map from normalised crop coordinates to window pixels: what
    :func:`crop_to_window_pixels` applies to x, y, as one matrix."""
    m = crop_transforms.to(torch.float64)
    full = torch.cat([m, m.new_tensor([0.0, 0.0, 1.0]).expand(m.shape[0], 1, 3)], 1)
    inv = torch.linalg.inv(full)[:, :2]  # crop px -> window px
    origin = crop_to_pixels(0.0, crop_size)  # crop px of the normalised 0, and per unit
    scale = crop_to_pixels(1.0, crop_size) - origin
    return torch.cat([inv[:, :, :2] * scale, (inv[:, :, 2] + inv[:, :, :2].sum(-1) * origin)[..., None]], -1)


@torch.inference_mode()
def render_shape_fast_in_frame(vertices: torch.Tensor, crop_vertices: torch.Tensor, faces: torch.Tensor,
                               crop_transforms: torch.Tensor, frame_size: tuple[int, int],
                               crop_size: int = FACE_CROP_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """The videos' grey render (what ``render_shape_in_frame(..., cull_backfaces=True)`` draws) without
    autograd: model-space ``vertices`` (B, V, 3) for the normals, ``crop_vertices`` =
    ``project_to_crop(vertices, cam)``, ``crop_transforms`` (B, 2, 3) frame px -> crop px, ``frame_size``
    (H, W) -> (rgb (B, H, W, 3) float32 in [0, 1] on black, alpha (B, H, W))."""
    faces = faces.to(device=vertices.device, dtype=torch.int64)
    if vertices.device.type == "cpu" and raster_backend() == "numba":  # pixels, normals, raster, shading compiled
        return _render_compiled(None, vertices, crop_vertices, _crop_to_window_affine(crop_transforms, crop_size),
                                faces, frame_size, default_shape_lights(1), SHAPE_GREY, True, True)
    points = crop_to_window_pixels(crop_vertices.to(torch.float32), crop_transforms, crop_size)
    normals = vertex_normals(vertices.to(torch.float32), faces)
    rgb, alpha = render_shape_pixels(normals, points, faces, frame_size)
    return rgb.clamp_(0.0, 1.0), alpha
