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

import torch
import torch.nn.functional as F

from ..faces.crop import FACE_CROP_SIZE
from ..geometry import crop_to_pixels, vertex_normals
from .shading import SHAPE_GREY, default_shape_lights

__all__ = ["visible_triangles", "render_shape_pixels", "render_shape_fast_in_frame", "crop_to_window_pixels"]

_EMPTY = torch.iinfo(torch.int64).max
_BOX_EPS = 1e-4  # pixels: bounding boxes are widened by this so centres on a corner are not lost
_EDGE_EPS = 1e-5  # doubled sub-triangle area (px^2): shared edges overlap a hair, never leave pin-holes
#: bounding-box sizes laid out as dense (triangles, candidates) blocks; larger boxes are enumerated
#: one candidate at a time. 1 and 2 are exact sizes, 4 and 8 take boxes of 3-4 and 5-8 pixels.
_BLOCKS = (1, 2, 4, 8)
#: float columns of the per-triangle table
_C0, _EX0, _EY0, _ZO, _DZX, _DZY, _BX, _BY, _BW, _BH = 0, 3, 6, 9, 10, 11, 12, 13, 14, 15


def _triangles(points: torch.Tensor, faces: torch.Tensor, size: tuple[int, int], cull_backfaces: bool):
    """Per-triangle table of the triangles that can cover a pixel centre.

    ``points`` (B, V, 3) pixels + positive depth, ``faces`` (F, 3). Returns (gid (n,) = b*F + f,
    base (n,) flat index of the bounding box's first pixel, table (16, n) float32 column-major: edge
    functions at the box's first pixel c0..c2, their x/y steps, depth there and its x/y steps, box x, y,
    width, height), or None when no triangle is left. Edge functions are oriented so that inside is
    ``w <= 0`` for all three, and are evaluated relative to the box (small magnitudes, exact enough
    that neighbours agree on a shared edge)."""
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
    bx0 = torch.ceil(torch.minimum(torch.minimum(x[0], x[1]), x[2]) - _BOX_EPS).clamp_(min=0)
    bx1 = torch.floor(torch.maximum(torch.maximum(x[0], x[1]), x[2]) + _BOX_EPS).clamp_(max=W - 1)
    by0 = torch.ceil(torch.minimum(torch.minimum(y[0], y[1]), y[2]) - _BOX_EPS).clamp_(min=0)
    by1 = torch.floor(torch.maximum(torch.maximum(y[0], y[1]), y[2]) + _BOX_EPS).clamp_(max=H - 1)
    keep = (bx1 >= bx0) & (by1 >= by0) & torch.isfinite(area) & (area < 0 if cull_backfaces else area != 0)
    gid = keep.nonzero().squeeze(1)
    if gid.numel() == 0:
        return None
    pick = lambda t: t.index_select(0, gid)  # noqa: E731
    x, y, area = [pick(t) for t in x], [pick(t) for t in y], pick(area)
    pz = flat[:, 2].contiguous()
    z = [pz.index_select(0, pick(i)) for i in corner]
    bx0, by0 = pick(bx0), pick(by0)
    bw, bh = pick(bx1) - bx0 + 1, pick(by1) - by0 + 1
    sign = torch.where(area < 0, 1.0, -1.0)  # back faces (kept without culling) flip their edges
    # w_k for the edge (a -> b) opposite corner k: (xb - xa)(py - ya) - (yb - ya)(px - xa)
    rows = []
    for ka, kb in ((1, 2), (2, 0), (0, 1)):
        ex, ey = (x[kb] - x[ka]) * sign, (y[kb] - y[ka]) * sign
        rows.append((ex * (by0 - y[ka]) - ey * (bx0 - x[ka]), ex, ey))
    e1x, e1y, e2x, e2y = x[1] - x[0], y[1] - y[0], x[2] - x[0], y[2] - y[0]
    dz1, dz2 = z[1] - z[0], z[2] - z[0]
    dzdx = (dz1 * e2y - e1y * dz2) / area
    dzdy = (e1x * dz2 - dz1 * e2x) / area
    zo = z[0] + dzdx * (bx0 - x[0]) + dzdy * (by0 - y[0])
    table = torch.stack([r[0] for r in rows] + [r[1] for r in rows] + [r[2] for r in rows]
                        + [zo, dzdx, dzdy, bx0, by0, bw, bh])
    base = torch.div(gid, n_faces, rounding_mode="floor") * (H * W) + (by0 * W + bx0).long()
    return gid, base, table


def _draw(zbuf: torch.Tensor, t: torch.Tensor, gid: torch.Tensor, base: torch.Tensor, u: torch.Tensor,
          v: torch.Tensor, offset: torch.Tensor, dense: bool, check_box: bool) -> None:
    """Draw candidates into the z-buffer: per triangle (columns of ``t``), pixel ``(u, v)`` of its box.
    ``u``, ``v``, ``offset`` are (k,) for a ``dense`` block (broadcast over triangles) or (n,) per candidate."""
    if dense:
        t, gid, base = t[:, :, None], gid[:, None], base[:, None]
    w = torch.addcmul(torch.addcmul(t[_C0], t[_EX0], v), t[_EY0], u, value=-1.0)
    w = torch.maximum(w, torch.addcmul(torch.addcmul(t[_C0 + 1], t[_EX0 + 1], v), t[_EY0 + 1], u, value=-1.0))
    w = torch.maximum(w, torch.addcmul(torch.addcmul(t[_C0 + 2], t[_EX0 + 2], v), t[_EY0 + 2], u, value=-1.0))
    inside = w <= _EDGE_EPS
    if check_box:  # blocks larger than the box: candidates past it may lie outside the frame
        inside &= (u < t[_BW]) & (v < t[_BH])
    depth = torch.addcmul(torch.addcmul(t[_ZO], t[_DZX], u), t[_DZY], v).clamp_(min=1e-30)
    key = (depth.view(torch.int32).to(torch.int64) << 32) | gid
    key = torch.where(inside, key, _EMPTY)
    zbuf.scatter_reduce_(0, (base + offset).reshape(-1), key.reshape(-1), reduce="amin", include_self=True)


@torch.inference_mode()
def visible_triangles(points: torch.Tensor, faces: torch.Tensor, size: tuple[int, int],
                      cull_backfaces: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Z-buffer of a batch of meshes: ``points`` (B, V, 3) pixel x, y (centres at integers) and depth z
    (smaller = nearer), ``faces`` (F, 3) int64 -> (pix (N,) flat ``b*H*W + y*W + x`` of covered pixels,
    face (N,) ``b*F + f``, bary (N, 3) barycentrics at the pixel centres). Ties go to the lower face."""
    H, W = size
    B = points.shape[0]
    dev = points.device
    empty = (torch.zeros(0, dtype=torch.int64, device=dev), torch.zeros(0, dtype=torch.int64, device=dev),
             torch.zeros(0, 3, device=dev))
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
    gid, base, table = tri
    pad = 8 * W + 8  # dense blocks may run past a box (masked) and past the last pixel
    zbuf = torch.full((B * H * W + pad,), _EMPTY, dtype=torch.int64, device=dev)
    cls_w = torch.bucketize(table[_BW], table.new_tensor(_BLOCKS), right=False)
    cls_h = torch.bucketize(table[_BH], table.new_tensor(_BLOCKS), right=False)
    n_blocks = len(_BLOCKS)
    cls = torch.where((cls_w < n_blocks) & (cls_h < n_blocks), cls_w * n_blocks + cls_h, n_blocks * n_blocks)
    cls, order = torch.sort(cls, stable=True)  # triangles grouped by block, each group a slice
    table, gid, base = table.index_select(1, order), gid.index_select(0, order), base.index_select(0, order)
    ends = torch.cumsum(torch.bincount(cls, minlength=n_blocks * n_blocks + 1), 0).tolist()
    for k, (s0, s1) in enumerate(zip([0] + ends[:-1], ends)):
        if s1 == s0:
            continue
        t, g, b0 = table[:, s0:s1], gid[s0:s1], base[s0:s1]
        if k < n_blocks * n_blocks:
            a, h = _BLOCKS[k // n_blocks], _BLOCKS[k % n_blocks]
            v, u = torch.meshgrid(torch.arange(h, device=dev, dtype=torch.float32),
                                  torch.arange(a, device=dev, dtype=torch.float32), indexing="ij")
            u, v = u.reshape(-1), v.reshape(-1)
            _draw(zbuf, t, g, b0, u, v, (v * W + u).long(), True, a > 2 or h > 2)
        else:  # large boxes: one candidate per box pixel
            count = (t[_BW] * t[_BH]).long()
            n = int(count.sum())
            of = torch.repeat_interleave(torch.arange(s1 - s0, device=dev), count, output_size=n)
            first = (torch.cumsum(count, 0) - count).index_select(0, of)
            tc = t.index_select(1, of)
            off = (torch.arange(n, device=dev) - first).to(torch.float32)
            v = torch.floor(off / tc[_BW])
            u = off - v * tc[_BW]
            _draw(zbuf, tc, g.index_select(0, of), b0.index_select(0, of), u, v, (v * W + u).long(), False, False)
    zbuf = zbuf[:B * H * W]
    pix = (zbuf != _EMPTY).nonzero().squeeze(1)
    face = zbuf.index_select(0, pix) & 0xFFFFFFFF
    # barycentrics of the winners at their pixel centres, from the corners
    V = points.shape[1]
    n_faces = faces.shape[0]
    b = torch.div(face, n_faces, rounding_mode="floor")
    corners = faces.index_select(0, face - b * n_faces) + (b * V)[:, None]
    flat = points.reshape(-1, 3)
    x = [flat[:, 0].index_select(0, corners[:, k]) for k in range(3)]
    y = [flat[:, 1].index_select(0, corners[:, k]) for k in range(3)]
    cx = (pix % W).to(torch.float32)
    cy = (torch.div(pix, W, rounding_mode="floor") % H).to(torch.float32)
    w = torch.stack([(x[kb] - x[ka]) * (cy - y[ka]) - (y[kb] - y[ka]) * (cx - x[ka])
                     for ka, kb in ((1, 2), (2, 0), (0, 1))], 1)
    return pix, face, w / w.sum(1, keepdim=True)


def _lit(normals: torch.Tensor, lights: torch.Tensor, albedo: float) -> torch.Tensor:
    """``albedo * shading.add_directional_light`` for (N, 3) normals and one set of lights (L, 6)."""
    directions = F.normalize(lights[:, :3], dim=-1)
    return (normals @ directions.T).clamp_(0.0, 1.0) @ (lights[:, 3:] * (albedo / lights.shape[0]))


@torch.inference_mode()
def render_shape_pixels(normals: torch.Tensor, points: torch.Tensor, faces: torch.Tensor, size: tuple[int, int], *,
                        lights: torch.Tensor | None = None, albedo: float = SHAPE_GREY,
                        cull_backfaces: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Grey shape of a batch: world vertex ``normals`` (B, V, 3), ``points`` (B, V, 3) pixel x, y (centres
    at integers) and depth, ``faces`` (F, 3) -> (rgb (B, H, W, 3) float32, black background; alpha
    (B, H, W) float32 hard coverage). ``lights`` (L, 6) or (B, L, 6), default the demo's 5 lights."""
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
    pix, face, bary = visible_triangles(points, faces, size, cull_backfaces)
    if pix.numel() == 0:
        return rgb.view(B, H, W, 3), alpha.view(B, H, W)
    V, n_faces = points.shape[1], faces.shape[0]
    b = torch.div(face, n_faces, rounding_mode="floor")
    corners = faces.index_select(0, face - b * n_faces) + (b * V)[:, None]
    nrm = normals.to(torch.float32).reshape(-1, 3).index_select(0, corners.reshape(-1)).view(-1, 3, 3)
    n = (nrm * bary[:, :, None]).sum(1)
    if lights.dim() == 3:  # per-image lights
        n_img = torch.div(pix, H * W, rounding_mode="floor")
        colour = torch.cat([_lit(n[n_img == i], lights[i], albedo) for i in range(B)])  # pix is sorted
    else:
        colour = _lit(n, lights, albedo)
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


@torch.inference_mode()
def render_shape_fast_in_frame(vertices: torch.Tensor, crop_vertices: torch.Tensor, faces: torch.Tensor,
                               crop_transforms: torch.Tensor, frame_size: tuple[int, int],
                               crop_size: int = FACE_CROP_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """The videos' grey render (what ``render_shape_in_frame(..., cull_backfaces=True)`` draws) without
    autograd: model-space ``vertices`` (B, V, 3) for the normals, ``crop_vertices`` =
    ``project_to_crop(vertices, cam)``, ``crop_transforms`` (B, 2, 3) frame px -> crop px, ``frame_size``
    (H, W) -> (rgb (B, H, W, 3) float32 in [0, 1] on black, alpha (B, H, W))."""
    faces = faces.to(device=vertices.device, dtype=torch.int64)
    normals = vertex_normals(vertices.to(torch.float32), faces)
    points = crop_to_window_pixels(crop_vertices.to(torch.float32), crop_transforms, crop_size)
    rgb, alpha = render_shape_pixels(normals, points, faces, frame_size)
    return rgb.clamp_(0.0, 1.0), alpha
