"""Small differentiable geometry ops shared by face models, renderer, losses and fitting."""
from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F


def axis_angle_to_matrix(rot_vecs: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Rodrigues' formula, (..., 3) axis-angle -> (..., 3, 3); matches FLAME's ``batch_rodrigues``
    (the eps is added to the vector before the norm, so zero rotations stay differentiable)."""
    shape = rot_vecs.shape[:-1]
    rv = rot_vecs.reshape(-1, 3)
    angle = torch.norm(rv + eps, dim=1, keepdim=True)
    axis = rv / angle
    cos = torch.cos(angle)[:, :, None]
    sin = torch.sin(angle)[:, :, None]
    rx, ry, rz = axis[:, 0], axis[:, 1], axis[:, 2]
    zeros = torch.zeros_like(rx)
    K = torch.stack([zeros, -rz, ry, rz, zeros, -rx, -ry, rx, zeros], dim=1).view(-1, 3, 3)
    ident = torch.eye(3, dtype=rv.dtype, device=rv.device)[None]
    R = ident + sin * K + (1 - cos) * torch.bmm(K, K)
    return R.reshape(*shape, 3, 3)


def rotate_points(points: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """``points @ R^T`` for (B, N, 3) points and (B, 3, 3) matrices, computed as ``(R @ points^T)^T``: the
    same products, but the batched matmul (forward and backward) runs along N instead of over 3x3 blocks,
    about twice as fast for the few hundred points a fit step rotates. The result is a transposed view."""
    return torch.bmm(R, points.transpose(1, 2)).transpose(1, 2)


def matrix_to_euler_y(rot_mats: torch.Tensor) -> torch.Tensor:
    """Yaw angle (rotation about y) of rotation matrices, as FLAME's ``rot_mat_to_euler``."""
    sy = torch.sqrt(rot_mats[..., 0, 0] ** 2 + rot_mats[..., 1, 0] ** 2)
    return torch.atan2(-rot_mats[..., 2, 0], sy)


def matrix_to_axis_angle(R: torch.Tensor) -> torch.Tensor:
    """(…, 3, 3) rotation matrices -> (…, 3) axis-angle (inverse of :func:`axis_angle_to_matrix`)."""
    cos = ((R[..., 0, 0] + R[..., 1, 1] + R[..., 2, 2] - 1) / 2).clamp(-1 + 1e-7, 1 - 1e-7)
    angle = torch.acos(cos)
    w = torch.stack([R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0], R[..., 1, 0] - R[..., 0, 1]], -1)
    sin = torch.sin(angle)
    factor = torch.where(sin.abs() > 1e-6, angle / (2 * sin), torch.full_like(sin, 0.5))
    return w * factor[..., None]


def orthographic_project(points: torch.Tensor, cam: torch.Tensor) -> torch.Tensor:
    """DECA's weak-perspective camera ``cam=[s, tx, ty]``: ``s*(x+tx), s*(y+ty), s*z`` (no flips)."""
    cam = cam.reshape(-1, 1, 3)
    xy = (points[..., :2] + cam[..., 1:]) * cam[..., :1]
    return torch.cat([xy, points[..., 2:] * cam[..., :1]], dim=-1)


def project_to_crop(points: torch.Tensor, cam: torch.Tensor) -> torch.Tensor:
    """Model space -> normalised crop coordinates (x right, y down, z away), as ``SPECTRE.decode``:
    orthographic projection, then y and z negated. Returns (..., 3); take [..., :2] for 2D."""
    p = orthographic_project(points, cam)
    return p * p.new_tensor([1.0, -1.0, -1.0])


def project_to_crop_xy(points: torch.Tensor, cam: torch.Tensor) -> torch.Tensor:
    """``project_to_crop(points, cam)[..., :2]``, the same numbers in half the ops (no z to drop): (B, N, 3)
    points, (B, 3) cameras -> (B, N, 2). The fit projects every point set with it in every step."""
    cam = cam.reshape(-1, 1, 3)
    return (points[..., :2] + cam[..., 1:]) * cam[..., :1] * points.new_tensor([1.0, -1.0])


def crop_to_pixels(xy, size: int):
    """Normalised crop coordinates [-1, 1] -> pixel coordinates of a ``size`` crop (``(x+1)*size/2``).
    The one place this convention is written; works on tensors and numpy arrays alike."""
    return (xy + 1.0) * (size / 2.0)


def pixels_to_crop(uv, size: int):
    """Inverse of :func:`crop_to_pixels`: pixels of a ``size`` crop -> normalised [-1, 1]."""
    return uv / (size / 2.0) - 1.0


_INCIDENCE_CACHE: dict = {}  # (device, dtype, V, F, data_ptr) -> (faces copy, sparse (V, F) incidence)


def _incidence(faces: torch.Tensor, num_vertices: int, dtype: torch.dtype):
    """Sparse CSR (V, F) vertex-face incidence matrix, cached per faces tensor (checked by content, so
    a freed and reused pointer can never return a stale matrix). None where CSR matmul is unsupported."""
    if faces.device.type not in ("cpu", "cuda") or dtype not in (torch.float32, torch.float64):
        return None
    key = (str(faces.device), dtype, num_vertices, faces.shape[0], faces.data_ptr())
    hit = _INCIDENCE_CACHE.get(key)
    if hit is not None and torch.equal(hit[0], faces):
        return hit[1]
    n = faces.shape[0]
    rows = faces.reshape(-1)
    cols = torch.arange(n, device=faces.device).repeat_interleave(3)
    with warnings.catch_warnings():  # torch's beta/invariant-check notices about sparse tensors: the indices are ours
        warnings.simplefilter("ignore", UserWarning)
        coo = torch.sparse_coo_tensor(torch.stack([rows, cols]), torch.ones(3 * n, dtype=dtype, device=faces.device),
                                      (num_vertices, n), check_invariants=False).coalesce()
        matrix = coo.to_sparse_csr()
    if len(_INCIDENCE_CACHE) >= 16:
        _INCIDENCE_CACHE.pop(next(iter(_INCIDENCE_CACHE)))
    _INCIDENCE_CACHE[key] = (faces.clone(), matrix)
    return matrix


class _SumIntoVertices(torch.autograd.Function):
    """(F, C) per-face values -> (V, C) sums over each vertex's faces with the sparse incidence matrix;
    the backward pass is a plain gather (each face collects its three corners' gradients), which is
    much cheaper than autograd's transposed sparse product."""

    @staticmethod
    def forward(ctx, face_values, incidence, faces):
        ctx.save_for_backward(faces)
        # sparse matmul has no reduced-precision kernels: keep autocast from casting to bf16/fp16
        with torch.autocast(device_type=face_values.device.type, enabled=False):
            return incidence @ face_values.to(incidence.dtype)

    @staticmethod
    def backward(ctx, grad):
        (faces,) = ctx.saved_tensors
        grad_faces = grad.index_select(0, faces.reshape(-1)).view(faces.shape[0], 3, -1).sum(1)
        return grad_faces, None, None


def vertex_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted vertex normals (B,V,3) from faces (F,3), as DECA's ``util.vertex_normals``:
    un-normalised face normals summed per vertex, then ``F.normalize(eps=1e-6)``.

    DECA computes the cross product at each corner with the corner's own edge order; all three are the
    same vector (up to rounding), so one cross product per face is summed into its corners with a
    cached sparse vertex-face incidence matrix (one sparse matmul for the whole batch)."""
    B, V = vertices.shape[:2]
    idx = faces.to(device=vertices.device, dtype=torch.int64)
    n_faces = idx.shape[0]
    tri = vertices.index_select(1, idx.reshape(-1)).view(B, n_faces, 3, 3)
    v0, v1, v2 = tri.unbind(2)
    face_n = torch.cross(v1 - v0, v2 - v0, dim=-1)  # (B, F, 3), twice the area times the unit normal
    incidence = _incidence(idx, V, vertices.dtype)
    if incidence is not None:
        summed = _SumIntoVertices.apply(face_n.permute(1, 0, 2).reshape(n_faces, B * 3), incidence, idx)
        normals = summed.view(V, B, 3).permute(1, 0, 2)
    else:  # flat index_add over the batch
        flat = (idx.reshape(1, -1) + (torch.arange(B, device=idx.device) * V)[:, None]).reshape(-1)
        src = face_n.unsqueeze(2).expand(B, n_faces, 3, 3).reshape(-1, 3)
        normals = torch.zeros(B * V, 3, dtype=vertices.dtype, device=vertices.device).index_add_(0, flat, src)
        normals = normals.view(B, V, 3)
    return F.normalize(normals, eps=1e-6, dim=2)
