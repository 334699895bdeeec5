"""Render videos and mesh exports of a reconstruction; streamed in chunks so memory stays flat."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..geometry import project_to_crop
from ..io import export
from ..io.results import FaceResult
from .videostage import write_video

__all__ = ["face_vertices", "write_render_video", "write_meshes"]


def face_vertices(model, face: FaceResult, frames: slice | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(vertices (B, V, 3) model space, crop_vertices (B, V, 3) normalised crop coords) for some frames."""
    params = {k: torch.as_tensor(np.asarray(v)[frames]) for k, v in face.params.items()}
    with torch.no_grad():
        verts = model.vertices(model.complete(params))
        crop = project_to_crop(verts, torch.as_tensor(np.asarray(face.cam)[frames]).to(verts))
    return verts, crop


def write_render_video(model, result, path: str | Path, layout: str, overwrite: bool = False,
                       chunk: int | None = None, progress: Callable[[int], None] | None = None,
                       video_frame: str = "auto", max_height: int = 512, colours: str = "tinted") -> Path:
    """``<name>.mp4`` of a finished reconstruction: see :func:`.videostage.write_video` (the render of every
    face beside the input, over it or alone, in a face-centred window for tall inputs)."""
    return write_video(model, result, path, layout, video_frame, max_height, overwrite=overwrite, chunk=chunk,
                       progress=progress, colours=colours)


def write_meshes(model, face: FaceResult, base: str | Path, fmt: str, overwrite: bool = False,
                 chunk: int = 32) -> Path:
    """Per-frame meshes: ``obj``/``ply`` -> folder ``<base>/%06d.<fmt>`` (frame index); ``glb`` -> one
    animated ``<base>.glb`` (models with ``blendshape_names``, e.g. ICT: identity mesh + named morph targets
    with the per-frame weights and no head rotation; other models: vertex animation with rotation)."""
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
