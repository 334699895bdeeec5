"""Lighting exactly as DECA/SPECTRE shade (``SRenderY``): 9-band spherical harmonics with DECA's
constant factors, directional and point lights, and the grey "shape" look of the official demo.

All functions are plain tensor maths (no rasterisation), so they work per vertex or per pixel.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..geometry import vertex_normals

__all__ = ["SH_CONSTANT_FACTOR", "sh_basis", "add_sh_light", "add_directional_light", "add_point_light",
           "default_shape_lights", "shape_shading", "face_vertices", "face_normals", "vertex_normals",
           "uv_attributes", "SHAPE_GREY"]

#: DECA's ``constant_factor`` for the SH basis [1, x, y, z, xy, xz, yz, x^2-y^2, 3z^2-1]
SH_CONSTANT_FACTOR = (
    1 / math.sqrt(4 * math.pi),
    (2 * math.pi / 3) * math.sqrt(3 / (4 * math.pi)),
    (2 * math.pi / 3) * math.sqrt(3 / (4 * math.pi)),
    (2 * math.pi / 3) * math.sqrt(3 / (4 * math.pi)),
    (math.pi / 4) * 3 * math.sqrt(5 / (12 * math.pi)),
    (math.pi / 4) * 3 * math.sqrt(5 / (12 * math.pi)),
    (math.pi / 4) * 3 * math.sqrt(5 / (12 * math.pi)),
    (math.pi / 4) * (3 / 2) * math.sqrt(5 / (12 * math.pi)),
    (math.pi / 4) * (1 / 2) * math.sqrt(5 / (4 * math.pi)),
)

#: albedo of the official grey shape render (``render_shape``: 180/255)
SHAPE_GREY = 180.0 / 255.0


def sh_basis(normals: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """The 9 scaled SH basis values of unit normals whose xyz lie along ``dim``; the 9 values replace it."""
    x, y, z = normals.unbind(dim)
    basis = torch.stack([torch.ones_like(x), x, y, z, x * y, x * z, y * z, x * x - y * y, 3 * z * z - 1], dim)
    shape = [1] * basis.dim()
    shape[dim] = 9
    return basis * basis.new_tensor(SH_CONSTANT_FACTOR).view(shape)


def add_sh_light(normal_images: torch.Tensor, sh_coeffs: torch.Tensor) -> torch.Tensor:
    """DECA ``add_SHlight``: normals (B, 3, H, W) and SH coefficients (B, 9, 3) -> shading (B, 3, H, W).
    Normals are used as given (DECA does not re-normalise interpolated normals)."""
    basis = sh_basis(normal_images, dim=1)  # (B, 9, H, W)
    return torch.einsum("bkhw,bkc->bchw", basis, sh_coeffs.to(basis.dtype))


def add_directional_light(normals: torch.Tensor, lights: torch.Tensor) -> torch.Tensor:
    """DECA ``add_directionlight``: normals (B, N, 3), lights (B, L, 6) = direction | RGB intensity.
    Lambertian ``clamp(n.l, 0, 1)`` averaged over the lights -> (B, N, 3)."""
    directions = F.normalize(lights[..., :3], dim=-1)
    ndotl = torch.einsum("bnc,blc->bln", normals, directions).clamp(0.0, 1.0)
    return torch.einsum("bln,blc->bnc", ndotl, lights[..., 3:]) / lights.shape[1]


def add_point_light(vertices: torch.Tensor, normals: torch.Tensor, lights: torch.Tensor) -> torch.Tensor:
    """DECA ``add_pointlight``: lights (B, L, 6) = position | RGB intensity; ``n.l`` towards each light
    (not clamped, as in DECA), averaged over the lights -> (B, N, 3)."""
    to_light = F.normalize(lights[:, :, None, :3] - vertices[:, None], dim=3)  # (B, L, N, 3)
    ndotl = (normals[:, None] * to_light).sum(-1)
    return torch.einsum("bln,blc->bnc", ndotl, lights[..., 3:]) / lights.shape[1]


def default_shape_lights(batch_size: int = 1, device=None, dtype=torch.float32,
                         intensity: float = 1.7) -> torch.Tensor:
    """The 5 directional lights of the official ``render_shape``: (B, 5, 6)."""
    pos = torch.tensor([[-1, 1, 1], [1, 1, 1], [-1, -1, 1], [1, -1, 1], [0, 0, 1]], dtype=dtype, device=device)
    lights = torch.cat([pos, torch.full_like(pos, intensity)], dim=1)
    return lights.unsqueeze(0).expand(batch_size, -1, -1)


def shape_shading(normals: torch.Tensor, lights: torch.Tensor | None = None,
                  albedo: float = SHAPE_GREY) -> torch.Tensor:
    """Colour of the grey shape render for normals (B, N, 3): ``albedo * directional shading``."""
    if lights is None:
        lights = default_shape_lights(normals.shape[0], normals.device, normals.dtype)
    return albedo * add_directional_light(normals, lights)


def face_vertices(values: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """DECA ``face_vertices``: per-vertex values (B, V, C) and faces (F, 3) -> (B, F, 3, C)."""
    return values[:, faces.long()]


def face_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Vertex normals laid out per face corner (B, F, 3, 3), as ``SRenderY`` feeds the rasteriser."""
    return face_vertices(vertex_normals(vertices, faces), faces)


def uv_attributes(uv_coords: torch.Tensor, uv_faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """DECA's UV buffers from texture coordinates in [0, 1] (T, 2) and UV faces (F, 3):
    ``uvcoords`` (1, T, 3) = ``[u, v, 1]*2-1`` with v negated (so ``grid_sample`` reads an image stored
    top row first), and ``face_uvcoords`` (1, F, 3, 3)."""
    uv = torch.cat([uv_coords, torch.ones_like(uv_coords[:, :1])], dim=1) * 2 - 1
    uv = uv * uv.new_tensor([1.0, -1.0, 1.0])
    uv = uv.unsqueeze(0)
    return uv, face_vertices(uv, uv_faces)
