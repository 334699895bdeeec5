"""Render videos and mesh exports of a reconstruction; streamed in chunks so memory stays flat."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..geometry import project_to_crop
from ..io.results import FaceResult

__all__ = ["face_vertices", "write_render_video", "write_meshes"]

#: the render window around each face is the official crop zoomed out by this factor
ZOOM = 0.5


def face_vertices(model, face: FaceResult, frames: slice | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(vertices (B, V, 3) model space, crop_vertices (B, V, 3) normalised crop coords) for some frames."""
    params = {k: torch.as_tensor(np.asarray(v)[frames]) for k, v in face.params.items()}
    with torch.no_grad():
        verts = model.vertices(model.complete(params))
        crop = project_to_crop(verts, torch.as_tensor(np.asarray(face.cam)[frames]).to(verts))
    return verts, crop


def write_render_video(model, result, path: str | Path, layout: str, overwrite: bool = False,
                       chunk: int = 16, progress: Callable[[int], None] | None = None,
                       max_render: int = 768) -> Path:
    """``<name>.mp4``: the grey shape render of every face in the original frame (``render``), blended over
    the input (``overlay``) or beside it (``grid``, as the official demo); the input's frame count, timing and
    audio. Frames without a valid face show no mesh."""
    import cv2

    from ..io.video import open_video
    from ..io.writer import VideoWriter
    from ..render.renderer import Renderer
    from ..render.visualize import compose, to_uint8

    source = open_video(result.video, warn_fps=False)
    W, H = result.width, result.height
    out_w = 2 * W if layout == "grid" else W
    faces_idx = model.render_faces()
    pos_of = {int(fi): i for i, fi in enumerate(result.faces[0].frame_index)} if result.faces else {}
    audio = result.video if getattr(source, "has_audio", False) else None
    renderers: dict[int, Renderer] = {}
    with VideoWriter(path, result.fps, (out_w, H), audio_from=audio,
                     pts=result.faces[0].timestamps if result.faces else None, overwrite=overwrite) as writer:
        for ch in source.iter_chunks(chunk):
            frames = ch.frames
            rows = np.array([pos_of.get(int(i), -1) for i in ch.indices])
            render = np.zeros(frames.shape, np.float32)
            alpha = np.zeros(frames.shape[:3], np.float32)
            for face in result.faces:
                ok = rows >= 0
                ok[ok] = np.asarray(face.valid)[rows[ok]]
                if not ok.any():
                    continue
                sel = rows[ok]
                tf = np.asarray(face.crop_tform, np.float64)[sel]
                inv = np.linalg.inv(tf)  # crop px -> frame px
                # render in the crop at about the face's size in the frame (capped), then warp into the
                # frame: far fewer pixels to rasterise than the whole frame, same geometry
                # the render window is the crop zoomed out 2x, so the whole head fits (the crop is tight)
                crop_px = float(np.sqrt(np.abs(np.linalg.det(inv[:, :2, :2]))).max()) * 224.0 / ZOOM
                R = int(min(max(224, round(crop_px / 32) * 32), max_render))
                if R not in renderers:
                    renderers[R] = Renderer(R)
                verts, crop = face_vertices(model, face, sel)
                with torch.no_grad():
                    out = renderers[R].render_shape(verts, crop * ZOOM, faces_idx)
                rgb = out.images.clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
                a = out.alpha[:, 0].cpu().numpy()
                for j, fi in enumerate(np.flatnonzero(ok)):
                    # render px -> crop px -> frame px
                    k = 224.0 / (R * ZOOM)
                    A = np.array([[k, 0.0, 112.0 * (1 - 1 / ZOOM)], [0.0, k, 112.0 * (1 - 1 / ZOOM)], [0, 0, 1]])
                    M = (inv[j] @ A)[:2]
                    img = cv2.warpAffine(rgb[j], M, (W, H), flags=cv2.INTER_LINEAR, borderValue=0)
                    aj = cv2.warpAffine(a[j], M, (W, H), flags=cv2.INTER_LINEAR, borderValue=0)
                    m = aj[..., None]
                    render[fi] = img + render[fi] * (1 - m)  # the render is premultiplied by its alpha
                    alpha[fi] = np.maximum(alpha[fi], aj)
            for k in range(len(frames)):
                writer.write(compose(layout, to_uint8(render[k]), alpha[k], frames[k]))
            if progress is not None:
                progress(len(frames))
    return Path(path)


def write_meshes(model, face: FaceResult, base: str | Path, fmt: str, overwrite: bool = False,
                 chunk: int = 32) -> Path:
    """Per-frame meshes: ``obj``/``ply`` -> folder ``<base>/%06d.<fmt>`` (frame index); ``glb`` -> one
    animated ``<base>.glb`` (models with ``blendshape_names``, e.g. ICT: identity mesh + named morph targets
    with the per-frame weights and no head rotation; other models: vertex animation with rotation)."""
    from ..io import export

    base = Path(base)
    faces = model.render_faces().cpu().numpy()
    if fmt == "glb":
        path = base.with_suffix(".glb")
        T = face.num_frames
        names = model.blendshape_names
        if names is not None and "expression" in face.params:
            ident = {"identity": torch.as_tensor(face.params["identity"][:1])}
            with torch.no_grad():
                neutral = model.vertices(model.complete(ident))[0].numpy()
                K = model.spec["expression"].size
                unit = model.complete({"identity": ident["identity"].repeat(K, 1), "expression": torch.eye(K)})
                deltas = model.vertices(unit).numpy() - neutral[None]
            return export.write_glb_morph(path, neutral, deltas, list(names),
                                          face.params["expression"], fps=_fps(face), faces=faces, overwrite=overwrite)
        verts = np.concatenate([face_vertices(model, face, slice(a, min(a + chunk, T)))[0].numpy()
                                for a in range(0, T, chunk)])
        return export.write_glb_vertex_animation(path, verts, faces, fps=_fps(face), overwrite=overwrite)
    base.mkdir(parents=True, exist_ok=True)
    writer = export.write_obj if fmt == "obj" else export.write_ply
    T = face.num_frames
    for a in range(0, T, chunk):
        verts, _ = face_vertices(model, face, slice(a, min(a + chunk, T)))
        for j in range(verts.shape[0]):
            writer(base / f"{int(face.frame_index[a + j]):06d}.{fmt}", verts[j].numpy(), faces, overwrite=overwrite)
    return base


def _fps(face: FaceResult) -> float:
    ts = np.asarray(face.timestamps, np.float64)
    if len(ts) > 1 and ts[-1] > ts[0]:
        return float((len(ts) - 1) / (ts[-1] - ts[0]))
    return 25.0
