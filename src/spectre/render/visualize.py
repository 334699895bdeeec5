"""Frames for the output videos: the render alone, overlaid on the input, or beside it (``grid``).

Renders can be made in the 224 crop (as the official demo) or directly in the ORIGINAL frame: the
crop vertices are mapped with the inverse of the per-frame 2x3 crop transform (original-frame pixels
-> crop pixels, integer pixel centres) and rasterised at frame resolution, so overlays stay sharp.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from ..faces.crop import FACE_CROP_SIZE
from ..geometry import crop_to_pixels
from .renderer import Renderer

__all__ = ["LAYOUTS", "crop_to_frame_vertices", "render_shape_in_frame", "compose", "to_uint8", "shape_frames"]

LAYOUTS = ("grid", "overlay", "render")


def crop_to_frame_vertices(crop_vertices: torch.Tensor, crop_transforms: torch.Tensor,
                           frame_size: tuple[int, int], crop_size: int = FACE_CROP_SIZE) -> torch.Tensor:
    """Crop coordinates (B, V, 3) -> normalised coordinates of the original frame (H, W), using the
    (B, 2, 3) transforms frame pixels -> crop pixels. z is scaled like x so depth order is kept."""
    H, W = frame_size
    m = crop_transforms.to(crop_vertices.dtype)
    full = torch.cat([m, m.new_tensor([0.0, 0.0, 1.0]).expand(m.shape[0], 1, 3)], 1)
    inv = torch.linalg.inv(full)[:, :2]  # crop px -> frame px
    uv = crop_to_pixels(crop_vertices[..., :2], crop_size)
    frame_px = uv @ inv[:, :, :2].transpose(1, 2) + inv[:, None, :, 2]
    scale = torch.sqrt(torch.det(inv[:, :, :2]).abs())  # frame px per crop px
    x = (frame_px[..., 0] + 0.5) / W * 2 - 1
    y = (frame_px[..., 1] + 0.5) / H * 2 - 1
    z = crop_vertices[..., 2] * (scale[:, None] * crop_size / W)
    return torch.stack([x, y, z], -1)


def render_shape_in_frame(vertices: torch.Tensor, crop_vertices: torch.Tensor, faces: torch.Tensor,
                          crop_transforms: torch.Tensor, frame_size: tuple[int, int],
                          crop_size: int = FACE_CROP_SIZE,
                          cull_backfaces: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Grey shape render at the original frame resolution -> (images (B,3,H,W), alpha (B,1,H,W)).

    Only the window of the frame that the batch's meshes can cover is rasterised (same pixel centres,
    so the same pixels as a full-frame render); on a 1080p frame the face is a small part of it."""
    H, W = frame_size
    frame_vertices = crop_to_frame_vertices(crop_vertices, crop_transforms, frame_size, crop_size)
    with torch.no_grad():
        px = (frame_vertices[..., 0] + 1.0) * (W / 2.0)
        py = (frame_vertices[..., 1] + 1.0) * (H / 2.0)
        finite = torch.isfinite(px) & torch.isfinite(py)
        if not bool(finite.any()):
            x0, x1, y0, y1 = 0, W, 0, H
        else:
            x0 = max(0, int(math.floor(float(px[finite].min()))) - 1)
            x1 = min(W, int(math.ceil(float(px[finite].max()))) + 1)
            y0 = max(0, int(math.floor(float(py[finite].min()))) - 1)
            y1 = min(H, int(math.ceil(float(py[finite].max()))) + 1)
    B = vertices.shape[0]
    images = torch.zeros((B, 3, H, W), dtype=vertices.dtype, device=vertices.device)
    alpha = torch.zeros((B, 1, H, W), dtype=vertices.dtype, device=vertices.device)
    if x1 <= x0 or y1 <= y0:  # entirely off the frame
        return images, alpha
    h, w = y1 - y0, x1 - x0
    # frame pixel (x0 + j) is window pixel j: same centres, window-normalised coordinates
    scale = frame_vertices.new_tensor([W / w, H / h, 1.0])
    shift = frame_vertices.new_tensor([(W - w - 2 * x0) / w, (H - h - 2 * y0) / h, 0.0])
    window_vertices = frame_vertices * scale + shift
    out = Renderer((h, w)).render_shape(vertices, window_vertices, faces, facing_vertices=crop_vertices,
                                        cull_backfaces=cull_backfaces)
    images[:, :, y0:y1, x0:x1] = out.images
    alpha[:, :, y0:y1, x0:x1] = out.alpha
    return images, alpha


def to_uint8(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """(3, H, W) / (H, W, 3) float in [0, 1] or uint8 -> (H, W, 3) uint8 (``clip(x*255)`` as the demo)."""
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu()
        if image.dim() == 3 and image.shape[0] in (1, 3) and image.shape[-1] not in (1, 3):
            image = image.permute(1, 2, 0)
        image = image.numpy()
    if image.dtype != np.uint8:
        image = np.clip(image * 255.0, 0, 255).round().astype(np.uint8)
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    return np.ascontiguousarray(image)


def compose(layout: str, render: np.ndarray, alpha: np.ndarray, image: np.ndarray | None,
            opacity: float = 0.7) -> np.ndarray:
    """One output frame. ``render`` (H, W, 3) uint8 already on black, ``alpha`` (H, W) in [0, 1],
    ``image`` the input at the same size. ``grid`` = render | input (the official side-by-side),
    ``overlay`` = render blended over the input, ``render`` = the render alone."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    if layout == "render" or image is None:
        return render
    if image.shape[:2] != render.shape[:2]:
        raise ValueError(f"render {render.shape[:2]} and image {image.shape[:2]} sizes differ")
    if layout == "grid":
        return np.concatenate([render, image], axis=1)
    a = (np.asarray(alpha, np.float32) * opacity)[..., None]
    blended = render.astype(np.float32) * a + image.astype(np.float32) * (1 - a)
    return np.clip(blended + 0.5, 0, 255).astype(np.uint8)


def shape_frames(vertices: torch.Tensor, crop_vertices: torch.Tensor, faces: torch.Tensor,
                 images: Sequence[np.ndarray] | None, layout: str = "grid", *,
                 crop_transforms: torch.Tensor | None = None, crop_size: int = FACE_CROP_SIZE,
                 batch_size: int = 16, opacity: float = 0.7) -> Iterator[np.ndarray]:
    """Yield composed uint8 frames for a sequence (T, V, 3). ``images``: the T input crops (224) or,
    with ``crop_transforms`` (T, 2, 3), the T original frames (rendered at their resolution)."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    T = vertices.shape[0]
    renderer = Renderer(crop_size)
    with torch.no_grad():
        for s in range(0, T, batch_size):
            sl = slice(s, min(T, s + batch_size))
            if crop_transforms is not None:
                if images is None:
                    raise ValueError("rendering into the original frame needs the frames")
                size = tuple(images[s].shape[:2])
                rgb, alpha = render_shape_in_frame(vertices[sl], crop_vertices[sl], faces,
                                                   crop_transforms[sl], size, crop_size)
            else:
                out = renderer.render_shape(vertices[sl], crop_vertices[sl], faces)
                rgb, alpha = out.images, out.alpha
            for i in range(rgb.shape[0]):
                img = None if images is None else to_uint8(images[s + i])
                yield compose(layout, to_uint8(rgb[i]), alpha[i, 0].cpu().numpy(), img, opacity)
