"""``Renderer``: the official SPECTRE/DECA renders (``SRenderY``) on our own rasteriser.

Inputs are the mesh twice, as in the official code: ``vertices`` in model/world space (for lighting
normals) and ``crop_vertices`` = ``spectre.geometry.project_to_crop(vertices, cam)`` (normalised crop
coordinates, x right, y down, z away). The renderer adds the official ``z + 10`` itself. Any
``FaceModel`` works: pass ``model.render_faces()`` as ``faces``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..faces.crop import FACE_CROP_SIZE
from . import shading
from .rasterize import Fragments, interpolate, interpolate_packed, rasterize, scatter_pixels, with_render_threads

__all__ = ["Renderer", "RenderOutput", "warp_affine"]


@dataclass
class RenderOutput:
    images: torch.Tensor  # (B, 3, H, W) composited image
    alpha: torch.Tensor  # (B, 1, H, W) coverage used for compositing
    normal_images: torch.Tensor | None = None  # (B, 3, H, W) interpolated world normals
    uv_grid: torch.Tensor | None = None  # (B, H, W, 2) texture lookup grid (textured render)
    albedo_images: torch.Tensor | None = None
    fragments: Fragments | None = None


def _to_chw(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 3, 1, 2)


def _light_packed(normals: torch.Tensor, lights: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
    """``shading.add_directional_light`` for packed pixels (N, 3) of images ``batch`` (N,) -> (N, 3)."""
    if lights.shape[0] == 1 or (not lights.requires_grad and bool((lights == lights[:1]).all())):
        directions = F.normalize(lights[0, :, :3], dim=-1)  # (L, 3)
        return (normals @ directions.T).clamp_(0.0, 1.0) @ (lights[0, :, 3:] / lights.shape[1])
    directions = F.normalize(lights[..., :3], dim=-1).index_select(0, batch)  # (N, L, 3)
    ndotl = (directions @ normals.unsqueeze(-1)).squeeze(-1).clamp(0.0, 1.0)  # (N, L)
    return (ndotl.unsqueeze(-1) * lights[..., 3:].index_select(0, batch)).sum(1) / lights.shape[1]


class Renderer:
    """Differentiable mesh renderer at ``image_size`` (int or (H, W)).

    ``soft_edges`` makes silhouette alpha differentiable (anti-aliased coverage); the official render
    uses hard edges (the default). ``z_offset`` is the official +10 that puts the mesh in front.
    """

    def __init__(self, image_size: int | tuple[int, int] = FACE_CROP_SIZE, *, z_offset: float = 10.0,
                 soft_edges: bool = False):
        self.image_size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        self.z_offset = z_offset
        self.soft_edges = soft_edges

    # ---- building blocks -------------------------------------------------------------------
    def screen_vertices(self, crop_vertices: torch.Tensor) -> torch.Tensor:
        """Crop coordinates -> the rasteriser's space (official ``transformed_vertices[..., 2] += 10``)."""
        return crop_vertices + crop_vertices.new_tensor([0.0, 0.0, self.z_offset])

    def rasterize(self, crop_vertices: torch.Tensor, faces: torch.Tensor) -> Fragments:
        return rasterize(self.screen_vertices(crop_vertices), faces, self.image_size, soft_edges=self.soft_edges)

    def _alpha(self, frags: Fragments) -> torch.Tensor:
        alpha = frags.alpha if self.soft_edges else frags.alpha.detach()
        return alpha.unsqueeze(1)

    @with_render_threads
    def render_attributes(self, crop_vertices: torch.Tensor, faces: torch.Tensor, attributes: torch.Tensor,
                          attribute_faces: torch.Tensor | None = None) -> RenderOutput:
        """Interpolate any attribute: per vertex (B, V, C) (``attribute_faces`` defaults to ``faces``)
        or per face corner (B, F, 3, C). Returns images (B, C, H, W) (0 on background) and alpha."""
        faces = faces.to(crop_vertices.device).long()
        frags = self.rasterize(crop_vertices, faces)
        if attributes.dim() == 3 or (attributes.dim() == 2 and attribute_faces is not None):
            img = interpolate(frags, attributes, attribute_faces if attribute_faces is not None else faces)
        else:
            img = interpolate(frags, attributes)
        return RenderOutput(_to_chw(img), self._alpha(frags), fragments=frags)

    # ---- official renders ------------------------------------------------------------------
    @with_render_threads
    def render_shape(self, vertices: torch.Tensor, crop_vertices: torch.Tensor, faces: torch.Tensor,
                     images: torch.Tensor | None = None, lights: torch.Tensor | None = None,
                     albedo: float = shading.SHAPE_GREY, detach_normals: bool = True,
                     facing_vertices: torch.Tensor | None = None, cull_backfaces: bool = False) -> RenderOutput:
        """The grey shape image of the official demo (``SRenderY.render_shape``): constant albedo
        180/255, 5 directional lights of intensity 1.7 on interpolated world normals, pixels whose
        screen-space normal points away (z >= 0.15) dropped, composited over ``images`` (B, 3, H, W)
        or black. ``facing_vertices`` (default: the screen vertices) decide which side faces the camera.
        ``cull_backfaces`` (the videos' fast path, not the official render): triangles facing away are dropped
        before rasterising and the per-pixel facing test is skipped (one normal set instead of two)."""
        faces = faces.to(vertices.device).long()
        screen = self.screen_vertices(crop_vertices)
        facing = (screen if facing_vertices is None else facing_vertices).detach()
        if cull_backfaces:
            normals = shading.vertex_normals(vertices.detach() if detach_normals else vertices, faces)
            screen_normals = torch.zeros_like(normals)  # z = 0 < 0.15: every covered pixel is kept
        elif detach_normals:  # one batched call for both normal sets (the official detaches both)
            both = shading.vertex_normals(torch.cat([vertices.detach(), facing.to(vertices.dtype)]), faces)
            normals, screen_normals = both[:vertices.shape[0]], both[vertices.shape[0]:]
        else:
            normals = shading.vertex_normals(vertices, faces)
            screen_normals = shading.vertex_normals(facing, faces)
        frags = rasterize(screen, faces, self.image_size, soft_edges=self.soft_edges, cull_backfaces=cull_backfaces)
        # shade the covered pixels only: on the background the interpolated normals are 0, so the
        # light is 0 there too and the dense result is the same
        attrs = interpolate_packed(frags, torch.cat([normals, screen_normals[..., 2:]], -1), faces)  # (N, 4)
        B, H, W = frags.shape
        if lights is None:
            lights = shading.default_shape_lights(B, vertices.device, vertices.dtype)
        batch = torch.div(frags.pix, H * W, rounding_mode="floor")
        light = _light_packed(attrs[:, :3], lights, batch)
        shaded_px = torch.cat([albedo * light, (attrs[:, 3:4] < 0.15).to(light.dtype)], 1)  # rgb | facing
        # background: black, facing (as the official mask, which is 1 where the normal image is 0)
        background = shaded_px.new_tensor([0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0])
        dense = scatter_pixels(frags, torch.cat([shaded_px, attrs[:, :3]], 1), background)  # (B, H, W, 7)
        shaded = _to_chw(dense[..., :3])
        normal_img = dense[..., 4:7]
        pos_mask = dense[..., 3].unsqueeze(1)
        alpha = self._alpha(frags) * pos_mask
        if images is None:  # black background
            out = shaded * alpha
        else:
            out = shaded * alpha + images * (1 - alpha)
        return RenderOutput(out, alpha, _to_chw(normal_img), fragments=frags)

    @with_render_threads
    def render_textured(self, vertices: torch.Tensor, crop_vertices: torch.Tensor, faces: torch.Tensor,
                        texture: torch.Tensor, uv_coords: torch.Tensor, uv_faces: torch.Tensor,
                        sh_coeffs: torch.Tensor | None = None, images: torch.Tensor | None = None) -> RenderOutput:
        """The official textured render (``SRenderY.forward``): albedo ``texture`` (B, 3, h, w) read
        with ``grid_sample`` at the interpolated UVs (``uv_coords`` (T, 2) in [0, 1], ``uv_faces`` (F, 3)),
        times SH shading (``sh_coeffs`` (B, 9, 3)) of the interpolated world normals (not
        re-normalised), times alpha; background black or ``images``. Gradients reach the vertices
        through the UVs and normals."""
        faces = faces.to(vertices.device).long()
        _, face_uv = shading.uv_attributes(uv_coords.to(vertices), uv_faces.to(vertices.device).long())
        frags = self.rasterize(crop_vertices, faces)
        normals = shading.vertex_normals(vertices, faces)
        uv_img = interpolate(frags, face_uv)  # (B, H, W, 3)
        normal_img = interpolate(frags, normals, faces)
        grid = uv_img[..., :2]
        B = vertices.shape[0]
        tex = texture.to(vertices.dtype)
        if tex.shape[0] != B:
            tex = tex.expand(B, -1, -1, -1)
        albedo = F.grid_sample(tex, grid, align_corners=False)
        normal_chw = _to_chw(normal_img)
        color = albedo * shading.add_sh_light(normal_chw, sh_coeffs) if sh_coeffs is not None else albedo
        alpha = self._alpha(frags)
        out = color * alpha
        if images is not None:
            out = out + images * (1 - alpha)
        return RenderOutput(out, alpha, normal_chw * alpha, grid, albedo * alpha, frags)


def warp_affine(images: torch.Tensor, matrix: torch.Tensor, size: int | tuple[int, int],
                mode: str = "bilinear") -> torch.Tensor:
    """Differentiable ``cv2.warpAffine``: ``matrix`` (B, 2, 3) or (2, 3) maps source pixel coordinates
    to output pixel coordinates, pixel centres at integers (the OpenCV/scikit-image convention of the
    pipeline's crop transforms); zeros outside. Returns (B, C, H_out, W_out)."""
    Ho, Wo = (size, size) if isinstance(size, int) else tuple(size)
    B, _, Hi, Wi = images.shape
    m = matrix.to(images.dtype)
    if m.dim() == 2:
        m = m.expand(B, 2, 3)
    full = torch.cat([m, m.new_tensor([0.0, 0.0, 1.0]).expand(m.shape[0], 1, 3)], 1)
    inv = torch.linalg.inv(full)[:, :2]  # output px -> source px
    ys, xs = torch.meshgrid(torch.arange(Ho, dtype=images.dtype, device=images.device),
                            torch.arange(Wo, dtype=images.dtype, device=images.device), indexing="ij")
    pts = torch.stack([xs, ys, torch.ones_like(xs)], -1).view(1, -1, 3)
    src = pts @ inv.transpose(1, 2)  # (B, Ho*Wo, 2)
    grid = torch.stack([(src[..., 0] + 0.5) / Wi * 2 - 1, (src[..., 1] + 0.5) / Hi * 2 - 1], -1).view(-1, Ho, Wo, 2)
    return F.grid_sample(images, grid, mode=mode, padding_mode="zeros", align_corners=False)
