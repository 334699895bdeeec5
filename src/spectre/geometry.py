"""Small differentiable geometry ops shared by face models, renderer, losses and fitting."""
from __future__ import annotations

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


def matrix_to_euler_y(rot_mats: torch.Tensor) -> torch.Tensor:
    """Yaw angle (rotation about y) of rotation matrices, as FLAME's ``rot_mat_to_euler``."""
    sy = torch.sqrt(rot_mats[..., 0, 0] ** 2 + rot_mats[..., 1, 0] ** 2)
    return torch.atan2(-rot_mats[..., 2, 0], sy)


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


def crop_to_pixels(xy: torch.Tensor, size: int = 224) -> torch.Tensor:
    """Normalised crop coordinates [-1, 1] -> pixel coordinates of a ``size`` crop (``(x+1)*size/2``)."""
    return (xy + 1.0) * (size / 2.0)


def pixels_to_crop(uv: torch.Tensor, size: int = 224) -> torch.Tensor:
    return uv / (size / 2.0) - 1.0


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
