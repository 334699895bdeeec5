"""Frozen copy of the renderer as it was before the speed work (commit 9ef2774), used by
``bench/bench_render.py`` as the baseline measured in the same run. Not used by the package.

Differences from the package today: float dense maps built eagerly, advanced indexing for gathers,
three cross products per face with ``index_add_`` along dim 1 for vertex normals, per-pixel shading
over the whole image.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

_INT64_MAX = torch.iinfo(torch.int64).max
_EPS = 1e-5  # pixels; spans are widened by this so shared edges never leave pin-holes


@dataclass
class Fragments:
    """Result of :func:`rasterize`. Dense maps are (B, H, W[, 3]); the packed fields list covered pixels."""

    face_index: torch.Tensor  # (B, H, W) int64, -1 on background; index into that image's faces
    bary: torch.Tensor  # (B, H, W, 3) barycentric coordinates, differentiable; 0 on background
    depth: torch.Tensor  # (B, H, W) interpolated z, differentiable; 0 on background
    mask: torch.Tensor  # (B, H, W) bool, hard coverage
    alpha: torch.Tensor  # (B, H, W) float: the mask, or soft silhouette coverage with soft_edges
    pix: torch.Tensor  # (N,) flat index b*H*W + y*W + x of covered pixels
    pix_face: torch.Tensor  # (N,) face index of each covered pixel
    pix_bary: torch.Tensor  # (N, 3) its barycentrics (differentiable)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.mask.shape)


def _ordered_int(z: torch.Tensor) -> torch.Tensor:
    """float32 -> int64 whose integer order equals the float order (for packing into sort keys)."""
    bits = z.to(torch.float32).contiguous().view(torch.int32).to(torch.int64)
    return torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)


def _edge_coefficients(x: torch.Tensor, y: torch.Tensor):
    """Per-triangle plane coefficients so that ``w_k(px, py) = a_k*px + b_k*py + c_k`` are the
    barycentric coordinates. x, y: (..., 3) pixel coordinates. Returns (a, b, c) each (..., 3) and
    the signed doubled area (...)."""
    x0, x1, x2 = x.unbind(-1)
    y0, y1, y2 = y.unbind(-1)
    area = (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)
    # w0 uses edge (v1, v2), w1 edge (v2, v0), w2 edge (v0, v1)
    xa = torch.stack([x1, x2, x0], -1)
    ya = torch.stack([y1, y2, y0], -1)
    xb = torch.stack([x2, x0, x1], -1)
    yb = torch.stack([y2, y0, y1], -1)
    inv = 1.0 / torch.where(area == 0, torch.ones_like(area), area)
    a = -(yb - ya) * inv[..., None]
    b = (xb - xa) * inv[..., None]
    c = ((yb - ya) * xa - (xb - xa) * ya) * inv[..., None]
    return a, b, c, area


def _to_pixels(vertices: torch.Tensor, height: int, width: int):
    return (vertices[..., 0] + 1.0) * (width / 2.0), (vertices[..., 1] + 1.0) * (height / 2.0)


def _gather_faces(values: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """values (B, V, ...) and faces (B, F, 3) -> (B, F, 3, ...)."""
    B, F = faces.shape[:2]
    idx = faces.reshape(B, F * 3)
    out = torch.gather(values, 1, idx.view(B, F * 3, *([1] * (values.dim() - 2))).expand(
        B, F * 3, *values.shape[2:]))
    return out.view(B, F, 3, *values.shape[2:])


@torch.no_grad()
def _zbuffer(vertices: torch.Tensor, faces: torch.Tensor, height: int, width: int,
             cull_backfaces: bool) -> torch.Tensor:
    """Visible face per pixel as a packed (depth, face) int64 key; INT64_MAX where nothing is drawn."""
    B, F = faces.shape[:2]
    px, py = _to_pixels(vertices, height, width)
    tx = _gather_faces(px, faces).reshape(B * F, 3)
    ty = _gather_faces(py, faces).reshape(B * F, 3)
    tz = _gather_faces(vertices[..., 2], faces).reshape(B * F, 3)
    a, b, c, area = _edge_coefficients(tx, ty)
    az, bz, cz = (a * tz).sum(-1), (b * tz).sum(-1), (c * tz).sum(-1)

    y0 = torch.ceil(ty.amin(-1) - 0.5).clamp(min=0)
    y1 = torch.floor(ty.amax(-1) - 0.5).clamp(max=height - 1)
    keep = (tx.amax(-1) >= 0.5 - _EPS) & (tx.amin(-1) <= width - 0.5 + _EPS) & (y1 >= y0)
    keep &= (area != 0) & torch.isfinite(area)
    if cull_backfaces:  # front faces are counter-clockwise on screen (y down => negative area)
        keep &= area < 0
    ids = keep.nonzero().squeeze(1)
    zbuf = torch.full((B * height * width,), _INT64_MAX, dtype=torch.int64, device=vertices.device)
    if ids.numel() == 0:
        return zbuf
    dev = zbuf.device
    # --- one entry per (face, pixel row) inside the face's bounding box
    rows_per_face = (y1[ids] - y0[ids]).long() + 1
    n_rows = int(rows_per_face.sum())
    row_face = torch.repeat_interleave(torch.arange(ids.numel(), device=dev), rows_per_face, output_size=n_rows)
    first_row = torch.cumsum(rows_per_face, 0) - rows_per_face
    ry = y0[ids].long()[row_face] + (torch.arange(n_rows, device=dev) - first_row[row_face])
    fid = ids[row_face]
    yc = ry.to(a.dtype) + 0.5
    ra, rb, rc = torch.cat([a, b, c], 1).index_select(0, fid).split(3, 1)
    # the triangle's span on this row: every edge function a*x + (b*y + c) >= 0 bounds x
    off = rb * yc[:, None] + rc
    safe_a = torch.where(ra == 0, torch.ones_like(ra), ra)
    bound = -off / safe_a
    inf = torch.full_like(bound, float("inf"))
    lo = torch.where(ra > 0, bound, -inf).amax(-1)
    hi = torch.where(ra < 0, bound, inf).amin(-1)
    blocked = ((ra == 0) & (off < 0)).any(-1)
    xs = torch.ceil(lo - 0.5 - _EPS).clamp(min=0)
    xe = torch.floor(hi - 0.5 + _EPS).clamp(max=width - 1)
    count = torch.where(blocked, 0, (xe - xs + 1).clamp(min=0).nan_to_num(0)).long()
    live = (count > 0).nonzero().squeeze(1)
    if live.numel() == 0:
        return zbuf
    count = count[live]
    fid = fid[live]
    batch = torch.div(fid, F, rounding_mode="floor")
    row_ints = torch.stack([xs[live].long(), batch * (height * width) + ry[live] * width,
                            fid - batch * F, torch.cumsum(count, 0) - count], 1)
    row_z = torch.stack([az[fid], bz[fid] * yc[live] + cz[fid]], 1)
    # --- one entry per covered (face, pixel)
    n_pix = int(count.sum())
    pix_row = torch.repeat_interleave(torch.arange(live.numel(), device=dev), count, output_size=n_pix)
    ri = row_ints[pix_row]
    x = ri[:, 0] + (torch.arange(n_pix, device=dev) - ri[:, 3])
    rz = row_z[pix_row]
    z = rz[:, 0] * (x.to(rz.dtype) + 0.5) + rz[:, 1]
    key = (_ordered_int(z) << 32) | ri[:, 2]
    zbuf.scatter_reduce_(0, ri[:, 1] + x, key, reduce="amin", include_self=True)
    return zbuf


def _pixel_centres(pix: torch.Tensor, height: int, width: int, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    rem = pix % (height * width)
    return (rem % width).to(dtype) + 0.5, torch.div(rem, width, rounding_mode="floor").to(dtype) + 0.5


def _soft_alpha(mask, face_of, tri_x_all, tri_y_all, height, width):
    """Coverage of silhouette pixels: for every covered/uncovered 4-neighbour pair, the signed
    distance of both pixel centres to the edge of the covered pixel's triangle that the pair crosses
    gives a box-filter coverage ``clamp(0.5 + d)``; a covered pixel keeps the minimum over its pairs,
    an uncovered one the maximum. Differentiable through the triangle's vertex positions."""
    B = mask.shape[0]
    alpha = mask.to(tri_x_all.dtype).reshape(-1)
    flat_mask = mask.reshape(-1)
    lo = torch.full_like(alpha, 2.0)
    hi = torch.full_like(alpha, -1.0)
    ar = torch.arange(B * height * width, device=mask.device)
    col = ar % width
    row = torch.div(ar % (height * width), width, rounding_mode="floor")
    for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        ok = ((col + dx >= 0) & (col + dx < width) & (row + dy >= 0) & (row + dy < height))
        nb = ar + dy * width + dx
        nbc = nb.clamp(0, ar.numel() - 1)
        pair = ok & flat_mask & ~flat_mask[nbc]
        p = pair.nonzero().squeeze(1)
        if p.numel() == 0:
            continue
        q = nb[p]
        f = face_of[p]
        tx, ty = tri_x_all[f], tri_y_all[f]  # (n, 3) pixel coords of the covered pixel's triangle
        a, b, c, _ = _edge_coefficients(tx, ty)
        pxc, pyc = _pixel_centres(p, height, width, tx.dtype)
        qxc, qyc = pxc + dx, pyc + dy
        wq = a * qxc[:, None] + b * qyc[:, None] + c
        k = wq.argmin(-1, keepdim=True)
        ak, bk, ck = a.gather(1, k)[:, 0], b.gather(1, k)[:, 0], c.gather(1, k)[:, 0]
        norm = torch.sqrt(ak * ak + bk * bk).clamp_min(1e-12)
        d_p = (ak * pxc + bk * pyc + ck) / norm  # >= 0: inside distance in pixels
        d_q = (ak * qxc + bk * qyc + ck) / norm  # < 0: outside distance
        lo = lo.scatter_reduce(0, p, (0.5 + d_p).clamp(0, 1), reduce="amin", include_self=True)
        hi = hi.scatter_reduce(0, q, (0.5 + d_q).clamp(0, 1), reduce="amax", include_self=True)
    alpha = torch.where(flat_mask & (lo <= 1.0), lo, alpha)
    alpha = torch.where(~flat_mask & (hi >= 0.0), hi, alpha)
    return alpha.view(mask.shape)


def rasterize(vertices: torch.Tensor, faces: torch.Tensor, image_size: int | tuple[int, int], *,
              soft_edges: bool = False, perspective_correct: bool = False,
              cull_backfaces: bool = False) -> Fragments:
    """Rasterise triangles ``faces`` ((F,3) or (B,F,3)) of ``vertices`` (B,V,3) in normalised image
    coordinates (x right, y down, z smaller = nearer) into ``image_size`` = H or (H, W).

    ``perspective_correct`` interpolates attributes perspective-correctly, treating z as the view
    depth (use with :func:`perspective_project`); the official SPECTRE render uses False.
    """
    if vertices.dim() != 3 or vertices.shape[-1] != 3:
        raise ValueError(f"vertices must be (B, V, 3), got {tuple(vertices.shape)}")
    H, W = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    B = vertices.shape[0]
    faces = faces.to(device=vertices.device, dtype=torch.int64)
    if faces.dim() == 2:
        faces = faces.unsqueeze(0).expand(B, -1, -1)
    # the z-buffer needs a depth that is affine in screen space: z itself, or -1/z under perspective
    zb_vertices = vertices.detach()
    if perspective_correct:
        zb_vertices = torch.cat([zb_vertices[..., :2], -1.0 / zb_vertices[..., 2:]], -1)
    zbuf = _zbuffer(zb_vertices, faces, H, W, cull_backfaces)
    covered = zbuf != _INT64_MAX
    pix = covered.nonzero().squeeze(1)
    pix_face = zbuf[pix] & 0xFFFFFFFF
    batch = torch.div(pix, H * W, rounding_mode="floor")

    px, py = _to_pixels(vertices, H, W)
    tri_x = _gather_faces(px, faces)  # (B, F, 3), differentiable
    tri_y = _gather_faces(py, faces)
    flat_face = batch * faces.shape[1] + pix_face
    fx, fy = tri_x.reshape(-1, 3)[flat_face], tri_y.reshape(-1, 3)[flat_face]
    a, b, c, _ = _edge_coefficients(fx, fy)
    cx, cy = _pixel_centres(pix, H, W, fx.dtype)
    bary = a * cx[:, None] + b * cy[:, None] + c
    fz = _gather_faces(vertices[..., 2], faces).reshape(-1, 3)[flat_face]
    depth = (bary * fz).sum(-1)
    if perspective_correct:  # 1/z is affine in screen space; attributes follow bary/z
        w = bary / fz
        depth = 1.0 / w.sum(-1)
        bary = w * depth[:, None]

    n = B * H * W
    dtype = vertices.dtype
    face_index = torch.full((n,), -1, dtype=torch.int64, device=vertices.device)
    face_index[pix] = pix_face
    bary_map = torch.zeros((n, 3), dtype=dtype, device=vertices.device).index_put((pix,), bary)
    depth_map = torch.zeros((n,), dtype=dtype, device=vertices.device).index_put((pix,), depth)
    mask = covered.view(B, H, W)
    if soft_edges:
        gface = face_index + torch.div(torch.arange(n, device=vertices.device), H * W,
                                       rounding_mode="floor") * faces.shape[1]
        alpha = _soft_alpha(mask, gface.clamp_min(0), tri_x.reshape(-1, 3), tri_y.reshape(-1, 3), H, W)
    else:
        alpha = mask.to(dtype)
    return Fragments(face_index.view(B, H, W), bary_map.view(B, H, W, 3), depth_map.view(B, H, W),
                     mask, alpha, pix, pix_face, bary)


def interpolate(fragments: Fragments, attributes: torch.Tensor, faces: torch.Tensor | None = None,
                background: float | torch.Tensor = 0.0) -> torch.Tensor:
    """Barycentric interpolation of an attribute over the covered pixels -> (B, H, W, C).

    ``attributes`` is per vertex (B, V, C) with ``faces`` ((F,3) or (B,F,3)) or per face corner
    (B, F, 3, C) / (F, 3, C) (e.g. UV coordinates indexed by separate UV faces)."""
    B, H, W = fragments.shape
    batch = torch.div(fragments.pix, H * W, rounding_mode="floor")
    if faces is not None:
        faces = faces.to(device=attributes.device, dtype=torch.int64)
        if attributes.dim() == 2:
            attributes = attributes.unsqueeze(0)
        if faces.dim() == 3:
            corner = faces.reshape(-1, 3).index_select(0, batch * faces.shape[1] + fragments.pix_face)
        else:
            corner = faces.index_select(0, fragments.pix_face)  # (N, 3)
        V, C = attributes.shape[1], attributes.shape[-1]
        rows = corner if attributes.shape[0] == 1 else corner + (batch * V)[:, None]
        vals = attributes.reshape(-1, C).index_select(0, rows.reshape(-1)).view(-1, 3, C)  # (N, 3, C)
    else:
        if attributes.dim() == 3:
            attributes = attributes.unsqueeze(0)
        Fn, C = attributes.shape[1], attributes.shape[-1]
        rows = fragments.pix_face if attributes.shape[0] == 1 else batch * Fn + fragments.pix_face
        vals = attributes.reshape(-1, 3, C).index_select(0, rows)
    out_vals = torch.bmm(fragments.pix_bary.to(vals.dtype).unsqueeze(1), vals).squeeze(1)
    C = out_vals.shape[-1]
    base = torch.zeros((B * H * W, C), dtype=out_vals.dtype, device=out_vals.device)
    if not (isinstance(background, (int, float)) and background == 0):
        base = base + torch.as_tensor(background, dtype=out_vals.dtype, device=out_vals.device)
    return base.index_put((fragments.pix,), out_vals).view(B, H, W, C)


def vertex_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted vertex normals (B,V,3) from faces (F,3), as DECA's ``util.vertex_normals``:
    un-normalised face normals summed per vertex, then ``F.normalize(eps=1e-6)``."""
    v0, v1, v2 = (vertices[:, faces[:, i]] for i in range(3))
    # DECA accumulates the cross product at each corner with the corner's own edge order
    n0 = torch.cross(v1 - v0, v2 - v0, dim=-1)
    n1 = torch.cross(v2 - v1, v0 - v1, dim=-1)
    n2 = torch.cross(v0 - v2, v1 - v2, dim=-1)
    normals = torch.zeros_like(vertices)
    idx = faces.long()
    normals.index_add_(1, idx[:, 1], n1)
    normals.index_add_(1, idx[:, 2], n2)
    normals.index_add_(1, idx[:, 0], n0)
    return F.normalize(normals, eps=1e-6, dim=2)


def reference_vertex_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    return vertex_normals(vertices, faces)


def reference_render_shape(vertices: torch.Tensor, crop_vertices: torch.Tensor, faces: torch.Tensor,
                           image_size: int = 224, z_offset: float = 10.0) -> torch.Tensor:
    """The old ``Renderer.render_shape`` (default lights, black background) -> (B, 3, H, W)."""
    from spectre.render import shading
    faces = faces.to(vertices.device).long()
    screen = crop_vertices + crop_vertices.new_tensor([0.0, 0.0, z_offset])
    facing = screen.detach()
    both = vertex_normals(torch.cat([vertices.detach(), facing.to(vertices.dtype)]), faces)
    normals, screen_normals = both[:vertices.shape[0]], both[vertices.shape[0]:]
    frags = rasterize(screen, faces, image_size)
    attrs = interpolate(frags, torch.cat([normals, screen_normals], -1), faces)
    normal_img, screen_normal_img = attrs[..., :3], attrs[..., 3:]
    B, H, W = frags.shape
    light = shading.add_directional_light(normal_img.reshape(B, H * W, 3),
                                          shading.default_shape_lights(B, vertices.device, vertices.dtype))
    shaded = shading.SHAPE_GREY * light.view(B, H, W, 3).permute(0, 3, 1, 2)
    pos_mask = (screen_normal_img[..., 2] < 0.15).to(shaded.dtype).unsqueeze(1)
    alpha = frags.alpha.detach().unsqueeze(1) * pos_mask
    return shaded * alpha + torch.zeros_like(shaded) * (1 - alpha)
