"""The official SPECTRE crops, with their transforms kept so results map back to frame pixels.

* Face crop (SPEC §1.3, golden §6b): bbox of the 68 landmarks, ``size = int((w+h)/2 * scale)``
  (truncation as upstream), 3-point least-squares similarity onto the 224 square, bilinear warp with
  a constant-0 border, float64 in [0, 1]. ``warp_crop`` reproduces scikit-image's ``warp`` exactly in
  numpy (scikit-image is not a dependency); ``warp_crop_fast`` is the pipeline path (cv2 or torch).
* Mouth crop for the lipreader (SPEC §1.4, golden §6 Part A): ``cut_mouth`` (torch, differentiable
  with respect to the images, batched per clip) and ``mouth_transform``.

All transforms are 3×3 float64 matrices mapping frame pixels (x right, y down) to crop pixels; the
top two rows are the 2×3 affine matrix cv2 expects. ``np.linalg.inv`` maps crop results back.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import InputError

FACE_CROP_SIZE = 224
#: the official face-crop scale at test time (bbox of the 68 landmarks times this; SPEC §1.3)
FACE_CROP_SCALE = 1.6
MOUTH_CROP_SIZE = 96
MOUTH_INPUT_SIZE = 88
MOUTH_MEAN, MOUTH_STD = 0.421, 0.165
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # ITU-R 601 as torchvision's rgb_to_grayscale


# ---- similarity transform ------------------------------------------------------------------------
def estimate_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping ``src`` onto ``dst``
    (Umeyama 1991, as scikit-image's ``SimilarityTransform.estimate``); returns a 3×3 matrix."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    n, dim = src.shape
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    src_d, dst_d = src - src_mean, dst - dst_mean
    cov = dst_d.T @ src_d / n
    d = np.ones(dim)
    if np.linalg.det(cov) < 0:
        d[-1] = -1
    out = np.eye(dim + 1)
    u, s, vt = np.linalg.svd(cov)
    rank = np.linalg.matrix_rank(cov)
    if rank == 0:
        return np.full((dim + 1, dim + 1), np.nan)
    if rank == dim - 1:
        if np.linalg.det(u) * np.linalg.det(vt) > 0:
            out[:dim, :dim] = u @ vt
        else:
            keep = d[-1]
            d[-1] = -1
            out[:dim, :dim] = u @ np.diag(d) @ vt
            d[-1] = keep
    else:
        out[:dim, :dim] = u @ np.diag(d) @ vt
    scale = 1.0 / src_d.var(axis=0).sum() * (s @ d)
    out[:dim, dim] = dst_mean - scale * (out[:dim, :dim] @ src_mean)
    out[:dim, :dim] *= scale
    return out


def face_crop_transform(landmarks68: np.ndarray, scale: float = FACE_CROP_SCALE, size: int = FACE_CROP_SIZE) -> np.ndarray:
    """Official face-crop transform(s) (frame px -> crop px) for landmarks (..., 68, 2): centre of the
    landmark bbox (no vertical shift), side ``int(mean(w, h) * scale)``. Returns (..., 3, 3) float64."""
    lmk = np.asarray(landmarks68, np.float64)[..., :2]
    flat = lmk.reshape(-1, lmk.shape[-2], 2)
    out = np.empty((flat.shape[0], 3, 3))
    dst = np.array([[0, 0], [0, size - 1], [size - 1, 0]], np.float64)
    for i, k in enumerate(flat):
        if not np.isfinite(k).all():
            raise InputError("face_crop_transform: landmarks contain NaN (interpolate gaps first)")
        left, right = k[:, 0].min(), k[:, 0].max()
        top, bottom = k[:, 1].min(), k[:, 1].max()
        old_size = (right - left + bottom - top) / 2
        center = np.array([right - (right - left) / 2.0, bottom - (bottom - top) / 2.0])
        side = int(old_size * scale)
        h = side / 2
        src = np.array([[center[0] - h, center[1] - h], [center[0] - h, center[1] + h], [center[0] + h, center[1] - h]])
        out[i] = estimate_similarity(src, dst)
    return out.reshape(*lmk.shape[:-2], 3, 3)


def transform_points(transforms: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply (..., 3, 3) transforms to (..., P, 2) points."""
    t = np.asarray(transforms, np.float64)
    p = np.asarray(points, np.float64)[..., :2]
    return np.einsum("...ij,...pj->...pi", t[..., :2, :2], p) + t[..., None, :2, 2]


# ---- warps ---------------------------------------------------------------------------------------
def warp_crop(frames: np.ndarray, transforms: np.ndarray, size: int = FACE_CROP_SIZE) -> np.ndarray:
    """Exact reference warp: for each crop pixel, bilinear sample of the frame at the inverse-mapped
    position, neighbours outside the frame count as 0 (scikit-image ``warp`` order=1, mode='constant').
    frames (N,H,W,C) uint8 (scaled by 1/255) or float; transforms (N,3,3). Returns float64 (N,size,size,C)."""
    frames = np.asarray(frames)
    img = frames.astype(np.float64) / 255.0 if frames.dtype == np.uint8 else frames.astype(np.float64)
    n, h, w, c = img.shape
    inv = np.linalg.inv(np.asarray(transforms, np.float64).reshape(n, 3, 3))
    rr, cc = np.meshgrid(np.arange(size, dtype=np.float64), np.arange(size, dtype=np.float64), indexing="ij")
    out = np.empty((n, size, size, c))
    for i in range(n):
        m = inv[i]
        den = m[2, 0] * cc + m[2, 1] * rr + m[2, 2]
        x = (m[0, 0] * cc + m[0, 1] * rr + m[0, 2]) / den
        y = (m[1, 0] * cc + m[1, 1] * rr + m[1, 2]) / den
        x0 = np.floor(x)
        y0 = np.floor(y)
        dx, dy = x - x0, y - y0
        x0 = x0.astype(np.int64)
        y0 = y0.astype(np.int64)

        def pix(yy, xx, i=i):
            ok = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
            v = img[i, np.clip(yy, 0, h - 1), np.clip(xx, 0, w - 1)]
            return np.where(ok[..., None], v, 0.0)

        top = (1 - dx)[..., None] * pix(y0, x0) + dx[..., None] * pix(y0, x0 + 1)
        bottom = (1 - dx)[..., None] * pix(y0 + 1, x0) + dx[..., None] * pix(y0 + 1, x0 + 1)
        out[i] = (1 - dy)[..., None] * top + dy[..., None] * bottom
    lo, hi = min(img.min(), 0.0), max(img.max(), 0.0)  # skimage clips to the input range (+cval)
    return np.clip(out, lo, hi)


def warp_crop_fast(frames: np.ndarray, transforms: np.ndarray, size: int = FACE_CROP_SIZE,
                   backend: str = "cv2") -> np.ndarray:
    """Pipeline warp, float32 (N,size,size,3) in [0,1].

    ``backend='cv2'``: ``cv2.warpAffine`` on uint8 (fastest; cv2 quantises sub-pixel positions to 1/32
    px and rounds to uint8, so values differ from ``warp_crop`` by a few 1/255 at edges).
    ``backend='torch'``: ``grid_sample`` bilinear/zeros, align_corners=True = the exact semantics in
    float32 (differences ~1e-6), slower on 1080p frames because the whole frame is converted to float.
    """
    t = np.asarray(transforms, np.float64).reshape(-1, 3, 3)
    if backend == "cv2":
        import cv2

        out = np.empty((len(frames), size, size, frames.shape[-1]), np.uint8 if frames.dtype == np.uint8 else np.float32)
        for i, f in enumerate(frames):
            out[i] = cv2.warpAffine(f, t[i, :2], (size, size), flags=cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        return out.astype(np.float32) / 255.0 if out.dtype == np.uint8 else out
    if backend == "torch":
        import torch
        import torch.nn.functional as F

        n, h, w, _ = frames.shape
        img = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
        if frames.dtype == np.uint8:
            img = img / 255.0
        inv = np.linalg.inv(t)
        rr, cc = np.meshgrid(np.arange(size, dtype=np.float64), np.arange(size, dtype=np.float64), indexing="ij")
        x = inv[:, 0, 0, None, None] * cc + inv[:, 0, 1, None, None] * rr + inv[:, 0, 2, None, None]
        y = inv[:, 1, 0, None, None] * cc + inv[:, 1, 1, None, None] * rr + inv[:, 1, 2, None, None]
        grid = np.stack([2 * x / (w - 1) - 1, 2 * y / (h - 1) - 1], axis=-1)
        out = F.grid_sample(img, torch.from_numpy(grid).float(), mode="bilinear", padding_mode="zeros",
                            align_corners=True)
        return out.permute(0, 2, 3, 1).numpy()
    raise ValueError(f"unknown warp backend {backend!r} (cv2 | torch)")


# ---- missing-frame interpolation -----------------------------------------------------------------
def interpolate_landmarks(landmarks: Sequence[np.ndarray | None] | np.ndarray,
                          valid: np.ndarray | None = None) -> np.ndarray | None:
    """Fill frames without landmarks as the official ``landmarks_interpolate``: linear between the
    nearest valid frames, leading/trailing frames copy the first/last valid one. Input: a list with
    None for missing frames, or an array (T, P, 2) with NaN rows / a ``valid`` mask. Returns float64
    (T, P, 2), or None when no frame is valid (the caller reports ``NoFaceError``)."""
    if isinstance(landmarks, np.ndarray):
        arr = landmarks.astype(np.float64)
        ok = np.isfinite(arr).all(axis=tuple(range(1, arr.ndim))) if valid is None else np.asarray(valid, bool)
    else:
        ok = np.array([x is not None for x in landmarks], bool)
        if not ok.any():
            return None
        shape = np.asarray(next(x for x in landmarks if x is not None)).shape
        arr = np.stack([np.asarray(x, np.float64) if x is not None else np.full(shape, np.nan) for x in landmarks])
    if valid is not None:
        ok = ok & np.isfinite(arr).all(axis=tuple(range(1, arr.ndim)))
    idx = np.flatnonzero(ok)
    if idx.size == 0:
        return None
    out = arr.copy()
    for a, b in zip(idx[:-1], idx[1:]):
        if b - a > 1:
            delta = arr[b] - arr[a]
            for k in range(1, b - a):
                out[a + k] = arr[a] + k / float(b - a) * delta
    out[: idx[0]] = arr[idx[0]]
    out[idx[-1] + 1:] = arr[idx[-1]]
    return out


# ---- mouth crop (torch) --------------------------------------------------------------------------
def cut_mouth(images, landmarks, convert_grayscale: bool = True, crop_size: int = MOUTH_CROP_SIZE,
              window_margin: int = 12, start: int = 48, stop: int = 68):
    """Crop the lipreader's mouth region from each frame, per clip (clips are never mixed).

    images (B,T,3,H,W) or (T,3,H,W) float; landmarks (B,T,68,2) or (T,68,2) in normalised crop
    coordinates ([-1,1], mapped with ``x*H/2 + H/2`` = ·112+112 for 224 crops). The mouth centre is
    the rounded mean of points 48–67 after a ±window_margin/2-frame temporal smoothing re-centred on
    the frame's own mean; a 96×96 window is clamped inside the image (however far the centre
    would have to move.) Upstream's "too much bias" exception sits after the clamp and can never fire,
    so the window is simply clamped here too. Differentiable w.r.t. ``images``.
    Returns (B,T,96,96) grayscale or (B,T,3,96,96); no batch dim in -> none out.
    """
    import torch

    squeeze = images.dim() == 4
    if squeeze:
        images, landmarks = images.unsqueeze(0), landmarks.unsqueeze(0)
    if images.shape[:2] != landmarks.shape[:2]:
        raise InputError(f"cut_mouth: images {tuple(images.shape)} and landmarks {tuple(landmarks.shape)} disagree on (B,T)")
    B, T = images.shape[:2]
    H, W = images.shape[-2], images.shape[-1]
    half = crop_size // 2
    lmk_all = landmarks[..., :2].detach() * (H / 2) + (H / 2)
    clips = []
    for b in range(B):
        lmk = lmk_all[b]
        frames = []
        for t in range(T):
            m = min(window_margin // 2, t, T - 1 - t)
            smoothed = lmk[t - m: t + m + 1].mean(dim=0)
            smoothed = smoothed + (lmk[t].mean(dim=0) - smoothed.mean(dim=0))
            cx, cy = smoothed[start:stop].mean(dim=0)
            cx, cy = float(cx.round()), float(cy.round())
            cy = min(max(cy, half), H - half)
            cx = min(max(cx, half), W - half)
            frame = images[b, t]
            if convert_grayscale:
                r, g, bl = frame.unbind(-3)
                frame = GRAY_WEIGHTS[0] * r + GRAY_WEIGHTS[1] * g + GRAY_WEIGHTS[2] * bl
            y0, x0 = int(cy - half), int(cx - half)
            frames.append(frame[..., y0: y0 + crop_size, x0: x0 + crop_size])
        clips.append(torch.stack(frames))
    out = torch.stack(clips)
    return out[0] if squeeze else out


def mouth_transform(mouths):
    """Lipreader input: centre crop 88×88 of the 96×96 mouths, then ``(x - 0.421) / 0.165``."""
    h, w = mouths.shape[-2], mouths.shape[-1]
    top = int(round((h - MOUTH_INPUT_SIZE) / 2.0))
    left = int(round((w - MOUTH_INPUT_SIZE) / 2.0))
    crop = mouths[..., top: top + MOUTH_INPUT_SIZE, left: left + MOUTH_INPUT_SIZE]
    return (crop - MOUTH_MEAN) / MOUTH_STD
