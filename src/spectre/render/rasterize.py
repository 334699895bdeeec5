"""Differentiable triangle rasteriser in pure PyTorch (CPU and CUDA), no compiled extension.

Why this design: faces are small (a few pixels each at 224x224), so instead of testing every pixel
against every triangle we enumerate, per triangle and pixel row of its bounding box, the exact span of
pixel centres inside it (solving the three edge inequalities), and lay rows and pixels out as flat
tensors with ``repeat_interleave`` - no Python loop over pixels or triangles. The visible triangle of
each pixel is found with one ``scatter_reduce(amin)`` over a 64-bit key that packs the depth (as an
order-preserving integer) above the face index. That search runs without autograd.
Barycentric coordinates of the winning face are then recomputed from the (differentiable) vertex
positions, so interpolated attributes carry gradients to the vertices, as pytorch3d's hard rasteriser
does. Optionally (``soft_edges=True``) the alpha of silhouette pixels becomes the pixel's estimated
coverage by the nearest silhouette edge, which also gives silhouettes a gradient.

Coordinates: vertices are in normalised image coordinates, x right and y down in [-1, 1] over the
image width/height (the crop convention of ``spectre.geometry.project_to_crop``), z is depth with
**smaller = nearer** (the official renderer's z+10 convention). Pixel (i, j) has its centre at
normalised ``((j+0.5)/W*2-1, (i+0.5)/H*2-1)``, which matches pytorch3d after its x/y flip.
"""
from __future__ import annotations

import contextlib
import functools
import os

import torch

__all__ = ["Fragments", "rasterize", "interpolate", "interpolate_packed", "scatter_pixels",
           "perspective_project", "cpu_render_threads", "RENDER_THREADS"]

_INT64_MAX = torch.iinfo(torch.int64).max
_EPS = 1e-5  # pixels; spans are widened by this so shared edges never leave pin-holes


def _render_threads_setting() -> int | None:
    value = os.environ.get("SPECTRE_RENDER_THREADS", "auto").strip().lower()
    if value in ("", "auto"):
        return None
    try:
        return max(0, int(value))
    except ValueError:
        return None


#: intra-op CPU threads while rasterising: None = automatic, 0 = torch's setting, N = N threads.
#: The rasteriser runs hundreds of small tensor ops per frame. On free cores a second thread helps
#: (~1.5x at batch 16), but on a machine whose cores are busy (other processes, parallel workers)
#: OpenMP threads spin-wait on each other and renders became tens of times slower. Automatic mode
#: therefore uses torch's thread count only while no other work is runnable on the cores, else 1.
#: Set with ``SPECTRE_RENDER_THREADS`` (auto | 0 | N) or by assigning this attribute.
RENDER_THREADS = _render_threads_setting()


def _cores_busy() -> bool:
    """Whether other work is competing for the CPUs right now: the instantaneous count of runnable
    threads (Linux ``/proc/loadavg``, which reacts within a scheduler tick) or else the 1-minute load
    average exceeds the core count (this thread counts as one)."""
    cores = os.cpu_count() or 1
    try:
        with open("/proc/loadavg") as f:
            running = int(f.read().split()[3].split("/")[0])
        return running > cores
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.getloadavg()[0] > cores - 0.5
    except (OSError, AttributeError):  # no load information (Windows): assume free cores
        return False


def _wanted_threads(current: int) -> int:
    if RENDER_THREADS is not None:
        return current if RENDER_THREADS == 0 else RENDER_THREADS
    return 1 if current > 1 and _cores_busy() else current


@contextlib.contextmanager
def cpu_render_threads(device: torch.device | str | None = None):
    """Run the enclosed CPU rendering with the intra-op thread count that :data:`RENDER_THREADS`
    asks for (restored afterwards); nothing changes on other devices."""
    before = torch.get_num_threads()
    dev = torch.device(device) if device is not None else torch.device("cpu")
    wanted = _wanted_threads(before) if dev.type == "cpu" else before
    if wanted == before:
        yield
        return
    torch.set_num_threads(wanted)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def with_render_threads(fn):
    """Decorator: run ``fn(..., vertices-like first tensor argument ...)`` under :func:`cpu_render_threads`."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        dev = next((a.device for a in args if isinstance(a, torch.Tensor)), None)
        with cpu_render_threads(dev):
            return fn(*args, **kwargs)
    return wrapper


class Fragments:
    """Result of :func:`rasterize`: the packed list of covered pixels, and dense (B, H, W[, 3]) maps
    that are built from it on first access (a visualisation render that never reads them pays nothing)."""

    def __init__(self, shape: tuple[int, int, int], mask: torch.Tensor, alpha: torch.Tensor, pix: torch.Tensor,
                 pix_face: torch.Tensor, pix_bary: torch.Tensor, pix_depth: torch.Tensor):
        self._shape = tuple(shape)
        self.mask = mask  # (B, H, W) bool, hard coverage
        self.alpha = alpha  # (B, H, W) float: the mask, or soft silhouette coverage with soft_edges
        self.pix = pix  # (N,) flat index b*H*W + y*W + x of covered pixels
        self.pix_face = pix_face  # (N,) face index of each covered pixel
        self.pix_bary = pix_bary  # (N, 3) its barycentrics (differentiable)
        self.pix_depth = pix_depth  # (N,) its interpolated z (differentiable)
        self._dense: dict[str, torch.Tensor] = {}

    @property
    def shape(self) -> tuple[int, int, int]:
        return self._shape

    def _scatter(self, values: torch.Tensor, fill) -> torch.Tensor:
        B, H, W = self._shape
        base = torch.full((B * H * W, *values.shape[1:]), fill, dtype=values.dtype, device=values.device)
        return base.index_put((self.pix,), values).view(B, H, W, *values.shape[1:])

    @property
    def face_index(self) -> torch.Tensor:
        """(B, H, W) int64, -1 on background; index into that image's faces."""
        if "face_index" not in self._dense:
            self._dense["face_index"] = self._scatter(self.pix_face, -1)
        return self._dense["face_index"]

    @property
    def bary(self) -> torch.Tensor:
        """(B, H, W, 3) barycentric coordinates, differentiable; 0 on background."""
        if "bary" not in self._dense:
            self._dense["bary"] = self._scatter(self.pix_bary, 0.0)
        return self._dense["bary"]

    @property
    def depth(self) -> torch.Tensor:
        """(B, H, W) interpolated z, differentiable; 0 on background."""
        if "depth" not in self._dense:
            self._dense["depth"] = self._scatter(self.pix_depth, 0.0)
        return self._dense["depth"]


def _depth_bits(z: torch.Tensor, positive: bool = False) -> torch.Tensor:
    """float -> int64 (< 2**31) whose integer order equals the float32 order, for packing into keys.
    Positive floats already compare like their bit patterns (the renderer's z+10 keeps depths > 0),
    so the sign fix-up is skipped when the caller knows every depth is positive."""
    bits = z.to(torch.float32).contiguous().view(torch.int32)
    if not positive:
        bits = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
    return bits.to(torch.int64)


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


def _flat_corners(faces: torch.Tensor, num_vertices: int) -> torch.Tensor:
    """faces (B, F, 3) -> (B*F, 3) rows into the batch-flattened (B*V, ...) vertex table."""
    B = faces.shape[0]
    offset = (torch.arange(B, device=faces.device) * num_vertices).view(B, 1, 1)
    return (faces + offset).reshape(-1, 3)


def _gather_faces(values: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """values (B, V, ...) and faces (B, F, 3) -> (B, F, 3, ...)."""
    B, F = faces.shape[:2]
    rows = _flat_corners(faces, values.shape[1]).reshape(-1)
    return values.reshape(B * values.shape[1], *values.shape[2:]).index_select(0, rows).view(
        B, F, 3, *values.shape[2:])


#: faces handled per pass of the z-buffer: keeps the per-row tables cache-sized on CPU
_CHUNK_FACES = 32768


@torch.no_grad()
def _zbuffer(vertices: torch.Tensor, faces: torch.Tensor, height: int, width: int,
             cull_backfaces: bool) -> torch.Tensor:
    """Visible face per pixel as a packed (depth, face) int64 key; INT64_MAX where nothing is drawn.

    Triangles that cannot cover a pixel centre (off screen, empty bounding box, degenerate, culled)
    are dropped before any per-row work. The faces of the whole batch are processed in chunks (a
    minimum over keys does not depend on the order), so the working set stays in cache on CPU."""
    B, F = faces.shape[:2]
    dev = vertices.device
    px, py = _to_pixels(vertices, height, width)
    table = torch.stack([px, py, vertices[..., 2]], -1).reshape(-1, 3)
    corners = _flat_corners(faces, vertices.shape[1])
    zbuf = torch.full((B * height * width,), _INT64_MAX, dtype=torch.int64, device=dev)
    chunk = _CHUNK_FACES if dev.type == "cpu" else max(_CHUNK_FACES, corners.shape[0])
    for s in range(0, corners.shape[0], chunk):
        _zbuffer_chunk(zbuf, table, corners[s:s + chunk], s, F, height, width, cull_backfaces)
    return zbuf


def _zbuffer_chunk(zbuf: torch.Tensor, table: torch.Tensor, corners: torch.Tensor, first_face: int,
                   faces_per_image: int, height: int, width: int, cull_backfaces: bool) -> None:
    """Draw faces ``first_face + i`` (rows ``corners`` (n, 3) into the (B*V, 3) pixel/depth ``table``)
    into ``zbuf``."""
    F = faces_per_image
    dev = zbuf.device
    tri = table.index_select(0, corners.reshape(-1)).view(-1, 3, 3)
    c0, c1, c2 = tri.unbind(1)  # (B*F, 3) corners: x, y, z
    lo_xy = torch.minimum(torch.minimum(c0[:, :2], c1[:, :2]), c2[:, :2])  # bounding boxes
    hi_xy = torch.maximum(torch.maximum(c0[:, :2], c1[:, :2]), c2[:, :2])
    y0 = torch.ceil(lo_xy[:, 1] - 0.5).clamp(min=0)
    y1 = torch.floor(hi_xy[:, 1] - 0.5).clamp(max=height - 1)
    x0 = torch.ceil(lo_xy[:, 0] - 0.5 - _EPS).clamp(min=0)
    x1 = torch.floor(hi_xy[:, 0] - 0.5 + _EPS).clamp(max=width - 1)
    e1, e2 = c1 - c0, c2 - c0
    area = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    keep = (y1 >= y0) & (x1 >= x0) & (area != 0) & torch.isfinite(area)
    if cull_backfaces:  # front faces are counter-clockwise on screen (y down => negative area)
        keep &= area < 0
    ids = keep.nonzero().squeeze(1)
    if ids.numel() == 0:
        return
    tri = tri.index_select(0, ids)
    a, b, c, _ = _edge_coefficients(tri[..., 0], tri[..., 1])
    tz = tri[..., 2]
    y0 = y0.index_select(0, ids)
    yc0 = y0 + 0.5  # centre of the first row
    # On row k (centre yc0 + k) edge j bounds x at -(b_j*y + c_j)/a_j = p_j*k + q_j: a lower bound where
    # a_j > 0, an upper one where a_j < 0. A horizontal edge (a_j = 0) lies on the top or bottom of
    # the bounding box, so rows inside the box are never cut by it. The -inf penalties drop the edges
    # that do not bound a side; the +-(0.5 + eps) turn bounds into first/last pixel-centre positions.
    flat_a = a == 0
    safe_a = torch.where(flat_a, torch.ones_like(a), a)
    p = torch.where(flat_a, 0.0, -b / safe_a)
    q = torch.where(flat_a, 0.0, -(b * yc0[:, None] + c) / safe_a)
    inf = float("inf")
    q_lo = q + torch.where(a > 0, -0.5 - _EPS, -inf)
    q_hi = q + torch.where(a < 0, -0.5 + _EPS, inf)
    az, bz, cz = (a * tz).sum(-1), (b * tz).sum(-1), (c * tz).sum(-1)
    face_f = torch.cat([p, q_lo, q_hi, az[:, None], (bz * yc0 + cz)[:, None], bz[:, None], y0[:, None]], 1)
    rows_per_face = (y1.index_select(0, ids) - y0).long() + 1
    n_rows = int(rows_per_face.sum())
    first_row = torch.cumsum(rows_per_face, 0) - rows_per_face
    face_i = torch.stack([ids + first_face, first_row], 1)
    row_f = torch.repeat_interleave(face_f, rows_per_face, dim=0, output_size=n_rows)
    row_i = torch.repeat_interleave(face_i, rows_per_face, dim=0, output_size=n_rows)
    k = (torch.arange(n_rows, device=dev) - row_i[:, 1]).to(row_f.dtype)  # row within its face (exact)
    pk = row_f[:, 0:3] * k[:, None]
    xs = (pk + row_f[:, 3:6]).amax(-1).ceil_().clamp_(min=0)
    xe = (pk + row_f[:, 6:9]).amin(-1).floor_().clamp_(max=width - 1)
    count = (xe - xs + 1).clamp_(min=0).nan_to_num_(0).long()
    live = (count > 0).nonzero().squeeze(1)
    if live.numel() == 0:
        return
    count = count.index_select(0, live)
    fid = row_i[:, 0].index_select(0, live)
    batch = torch.div(fid, F, rounding_mode="floor")
    zrow = row_f.index_select(0, live)
    k = k.index_select(0, live)
    xs = xs.index_select(0, live)
    start = batch * (height * width) + (zrow[:, 12] + k).long() * width + xs.long()  # first pixel, flat
    face = fid - batch * F
    slope = zrow[:, 9]  # depth step per pixel
    z0 = torch.addcmul(zrow[:, 10] + zrow[:, 11] * k, slope, xs + 0.5)  # depth at the first pixel
    positive = bool(z0.min() > 0) and bool((z0 + slope * (count - 1).to(z0.dtype)).min() > 0)
    # spans are short (most cover 1-4 pixels): lay rows out densely in buckets of similar length
    # (n_rows, width) instead of expanding them pixel by pixel; padding is masked with the empty key
    width_c = 1
    max_count = int(count.max())
    while True:
        sel = ((count <= width_c) & (count > width_c // 2)).nonzero().squeeze(1) if max_count > 1 else None
        if sel is None or sel.numel():
            st = start if sel is None else start.index_select(0, sel)
            zz = z0 if sel is None else z0.index_select(0, sel)
            fc = face if sel is None else face.index_select(0, sel)
            if width_c == 1:
                key = (_depth_bits(zz, positive) << 32) | fc
                idx = st
            else:
                cnt = count.index_select(0, sel)
                j = torch.arange(width_c, device=dev)
                zz = torch.addcmul(zz[:, None], slope.index_select(0, sel)[:, None], j.to(zz.dtype))
                key = (_depth_bits(zz, positive) << 32) | fc[:, None]
                pad = j >= cnt[:, None]
                key = key.masked_fill_(pad, _INT64_MAX).reshape(-1)
                idx = torch.minimum(st[:, None] + j, (st + cnt - 1)[:, None]).reshape(-1)
            zbuf.scatter_reduce_(0, idx, key, reduce="amin", include_self=True)
        if width_c >= max_count:
            break
        width_c *= 2


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


@with_render_threads
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
    pix_face = zbuf.index_select(0, pix) & 0xFFFFFFFF
    batch = torch.div(pix, H * W, rounding_mode="floor")
    flat_face = batch * faces.shape[1] + pix_face

    # barycentrics of the winning faces only, recomputed from the differentiable vertices
    px, py = _to_pixels(vertices, H, W)
    table = torch.stack([px, py, vertices[..., 2]], -1).reshape(-1, 3)
    corners = _flat_corners(faces, vertices.shape[1]).index_select(0, flat_face)  # (N, 3)
    tri = table.index_select(0, corners.reshape(-1)).view(-1, 3, 3)
    fx, fy, fz = tri.unbind(-1)
    a, b, c, _ = _edge_coefficients(fx, fy)
    cx, cy = _pixel_centres(pix, H, W, fx.dtype)
    bary = torch.addcmul(torch.addcmul(c, a, cx[:, None]), b, cy[:, None])
    depth = (bary * fz).sum(-1)
    if perspective_correct:  # 1/z is affine in screen space; attributes follow bary/z
        w = bary / fz
        depth = 1.0 / w.sum(-1)
        bary = w * depth[:, None]

    dtype = vertices.dtype
    mask = covered.view(B, H, W)
    if soft_edges:
        n = B * H * W
        face_index = torch.full((n,), -1, dtype=torch.int64, device=vertices.device)
        face_index[pix] = pix_face
        gface = face_index + torch.div(torch.arange(n, device=vertices.device), H * W,
                                       rounding_mode="floor") * faces.shape[1]
        tri_x = _gather_faces(px, faces)  # (B, F, 3), differentiable
        tri_y = _gather_faces(py, faces)
        alpha = _soft_alpha(mask, gface.clamp_min(0), tri_x.reshape(-1, 3), tri_y.reshape(-1, 3), H, W)
    else:
        alpha = mask.to(dtype)
    return Fragments((B, H, W), mask, alpha, pix, pix_face, bary, depth)


def interpolate_packed(fragments: Fragments, attributes: torch.Tensor,
                       faces: torch.Tensor | None = None) -> torch.Tensor:
    """Barycentric interpolation at the covered pixels only -> (N, C), in the order of ``fragments.pix``.
    Same arguments as :func:`interpolate`; use it when only the covered pixels matter (shading)."""
    B, H, W = fragments.shape
    batch = None if B == 1 else torch.div(fragments.pix, H * W, rounding_mode="floor")
    if faces is not None:
        faces = faces.to(device=attributes.device, dtype=torch.int64)
        if attributes.dim() == 2:
            attributes = attributes.unsqueeze(0)
        if faces.dim() == 3 and batch is not None:
            corner = faces.reshape(-1, 3).index_select(0, batch * faces.shape[1] + fragments.pix_face)
        else:
            corner = faces.reshape(-1, 3).index_select(0, fragments.pix_face)  # (N, 3)
        V, C = attributes.shape[1], attributes.shape[-1]
        rows = corner if attributes.shape[0] == 1 else corner + (batch * V)[:, None]
        vals = attributes.reshape(-1, C).index_select(0, rows.reshape(-1)).view(-1, 3, C)  # (N, 3, C)
    else:
        if attributes.dim() == 3:
            attributes = attributes.unsqueeze(0)
        Fn, C = attributes.shape[1], attributes.shape[-1]
        rows = fragments.pix_face if attributes.shape[0] == 1 else batch * Fn + fragments.pix_face
        vals = attributes.reshape(-1, 3, C).index_select(0, rows)
    bary = fragments.pix_bary.to(vals.dtype)
    # three fused multiply-adds beat a batched (1x3)@(3xC) matmul for small C
    return bary[:, 0:1] * vals[:, 0] + bary[:, 1:2] * vals[:, 1] + bary[:, 2:3] * vals[:, 2]


def scatter_pixels(fragments: Fragments, values: torch.Tensor,
                   background: float | torch.Tensor = 0.0) -> torch.Tensor:
    """Packed per-pixel values (N, C) -> image (B, H, W, C), ``background`` elsewhere."""
    B, H, W = fragments.shape
    C = values.shape[-1]
    if isinstance(background, (int, float)):
        base = torch.full((B * H * W, C), float(background), dtype=values.dtype, device=values.device)
    else:
        base = torch.zeros((B * H * W, C), dtype=values.dtype, device=values.device) + \
            torch.as_tensor(background, dtype=values.dtype, device=values.device)
    return base.index_put((fragments.pix,), values).view(B, H, W, C)


def interpolate(fragments: Fragments, attributes: torch.Tensor, faces: torch.Tensor | None = None,
                background: float | torch.Tensor = 0.0) -> torch.Tensor:
    """Barycentric interpolation of an attribute over the covered pixels -> (B, H, W, C).

    ``attributes`` is per vertex (B, V, C) with ``faces`` ((F,3) or (B,F,3)) or per face corner
    (B, F, 3, C) / (F, 3, C) (e.g. UV coordinates indexed by separate UV faces)."""
    return scatter_pixels(fragments, interpolate_packed(fragments, attributes, faces), background)


def perspective_project(points: torch.Tensor, focal: float | torch.Tensor,
                        aspect: float = 1.0) -> torch.Tensor:
    """Pinhole camera looking down +z (x right, y down): camera-space points (B, V, 3) -> normalised
    image coordinates ``(f*x/z, f*y/z*aspect, z)``, with ``focal`` in units of half the image width.
    The returned z is the view depth, ready for ``rasterize(..., perspective_correct=True)``."""
    z = points[..., 2:3]
    f = torch.as_tensor(focal, dtype=points.dtype, device=points.device)
    if f.dim() > 0:
        f = f.view(-1, 1, 1)
    xy = points[..., :2] * f / z
    xy = xy * xy.new_tensor([1.0, aspect])
    return torch.cat([xy, z], dim=-1)
