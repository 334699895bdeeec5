"""The render video, chunk by chunk: each face's grey shape is rasterised straight into the output window
(:mod:`.window`) at the window's resolution, composed with the window of the input and encoded.

Nothing is rendered at the input's resolution and then resampled, and nothing the window does not show
is blended or encoded: on a 1080p input the default face window is 512x512, a fifteenth of the pixels of
the full-frame grid. Composition is done per chunk on uint8/float32 arrays, not per frame in float64.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..geometry import project_to_crop
from ..io.video import open_video
from ..io.writer import VideoWriter
from ..render.fast_shape import render_shape_fast_in_frame, warm_up
from ..render.visualize import render_shape_in_frame
from .window import VideoWindow

__all__ = ["FaceRows", "VideoStage", "ENCODER"]

#: H.264 settings of the render video: chosen for speed and size (docs/performance.md has the measurement)
ENCODER = {"preset": "veryfast", "crf": 23}


@dataclass
class FaceRows:
    """One face over a run of consecutive frames: its parameters, crop camera and crop transforms."""

    params: dict[str, np.ndarray]  # name -> (n, k)
    cam: np.ndarray                # (n, 3) camera in the official 224 crop
    crop_tform: np.ndarray         # (n, 3, 3) input px -> crop px
    valid: np.ndarray              # (n,) frames with a face to draw


def render_window(model, faces_idx: torch.Tensor, face: FaceRows, to_window: np.ndarray,
                  size: tuple[int, int], fast: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Grey render of one face in the output window -> (rgb (n, H, W, 3) float32 premultiplied, alpha (n, H, W)).

    ``to_window`` (n, 3, 3) maps input px -> window px; ``size`` is the window's (width, height). ``fast``:
    the non-differentiable video renderer (:mod:`spectre.render.fast_shape`, back faces culled; the video
    need not be differentiable, tests/test_fast_render.py bounds its difference to the differentiable
    renderer); else the differentiable renderer with culled back faces."""
    w, h = size
    n = len(face.valid)
    rgb = np.zeros((n, h, w, 3), np.float32)
    alpha = np.zeros((n, h, w), np.float32)
    rows = np.flatnonzero(np.asarray(face.valid, bool))
    if len(rows) == 0:
        return rgb, alpha
    params = {k: torch.as_tensor(np.asarray(v)[rows]) for k, v in face.params.items()}
    with torch.inference_mode():
        verts = model.vertices(model.complete(params))
        crop = project_to_crop(verts, torch.as_tensor(np.asarray(face.cam)[rows]).to(verts))
        # window px -> crop px: the renderer maps the crop into the window with its inverse
        win_to_crop = np.asarray(face.crop_tform, np.float64)[rows] @ np.linalg.inv(np.asarray(to_window)[rows])
        win_to_crop = torch.as_tensor(win_to_crop[:, :2]).to(verts)
        if fast:
            img, a = (x.numpy() for x in render_shape_fast_in_frame(verts, crop, faces_idx, win_to_crop, (h, w)))
            if len(rows) == n:  # every frame has the face: no copy into the zero canvas
                return img, a
            rgb[rows], alpha[rows] = img, a
            return rgb, alpha
        img, a = render_shape_in_frame(verts, crop, faces_idx, win_to_crop, (h, w), cull_backfaces=True)
    rgb[rows] = img.clamp(0, 1).permute(0, 2, 3, 1).numpy()
    alpha[rows] = a[:, 0].numpy()
    return rgb, alpha


class VideoStage:
    """Writes the render video one chunk at a time (``write``), then ``close`` (muxes the audio)."""

    def __init__(self, model, layout: str, window: VideoWindow, path: str | Path, fps: float,
                 pts: Sequence[float] | None = None, audio_from: str | Path | None = None, overwrite: bool = False,
                 opacity: float = 0.7, encoder: dict | None = None):
        self.model, self.layout, self.window, self.opacity = model, layout, window, opacity
        self.faces_idx = model.render_faces()
        warm_up()  # the compiled rasteriser's import and cache load, before the first frames arrive
        w, h = window.size
        enc = dict(ENCODER, **(encoder or {}))
        self.writer = VideoWriter(path, fps, (2 * w if layout == "grid" else w, h), audio_from=audio_from, pts=pts,
                                  overwrite=overwrite, crf=int(enc["crf"]), preset=str(enc["preset"]))
        self.frames_written = 0

    def compose(self, frames: np.ndarray, faces: list[FaceRows], to_window: np.ndarray) -> np.ndarray:
        """(n, H, W', 3) uint8 output frames for ``frames`` (n, H, W, 3) uint8, already in the window."""
        size = self.window.size
        acc, cover = np.zeros(frames.shape, np.float32), np.zeros(frames.shape[:3], np.float32)
        for i, face in enumerate(faces):
            rgb, a = render_window(self.model, self.faces_idx, face, to_window, size)
            if i == 0:  # over black: the first face's render as it is
                acc, cover = rgb, a
                continue
            acc = rgb + acc * (1.0 - a[..., None])  # premultiplied "over"
            np.maximum(cover, a, out=cover)
        acc *= 255.0
        acc += 0.5
        render = np.clip(acc, 0, 255, out=acc).astype(np.uint8)  # as to_uint8 (round half up)
        if self.layout == "render":
            return render
        if self.layout == "grid":
            return np.concatenate([render, frames], axis=2)
        a = (cover * self.opacity)[..., None]
        return np.clip(render * a + frames * (1.0 - a) + 0.5, 0, 255).astype(np.uint8)

    def write(self, frames: np.ndarray, faces: list[FaceRows], to_window: np.ndarray,
              times: Sequence[float] | None = None) -> None:
        """Render, compose and encode frames (``times``: their timestamps, when not given up front)."""
        for i, f in enumerate(self.compose(frames, faces, to_window)):
            self.writer.write(f, None if times is None else float(times[i]))
        self.frames_written += len(frames)

    def close(self) -> Path:
        return self.writer.close()

    def abort(self, exc: BaseException) -> None:
        self.writer.__exit__(type(exc), exc, exc.__traceback__)


def face_boxes(points478: Sequence[np.ndarray], valid: Sequence[np.ndarray]) -> np.ndarray:
    """(n, 4) box ``x0, y0, x1, y1`` around every given face per frame (NaN where none is valid)."""
    n = len(valid[0]) if len(valid) else 0
    box = np.full((n, 4), np.nan)
    for pts, ok in zip(points478, valid):
        ok = np.asarray(ok, bool)
        if not ok.any():
            continue
        p = np.asarray(pts, np.float64)[ok, :, :2]
        b = np.concatenate([np.nanmin(p, 1), np.nanmax(p, 1)], -1)
        cur = box[ok]
        box[ok] = np.where(np.isnan(cur), b, np.concatenate([np.minimum(cur[:, :2], b[:, :2]),
                                                             np.maximum(cur[:, 2:], b[:, 2:])], -1))
    return box


def write_video(model, result, path: str | Path, layout: str, video_frame: str = "auto", max_height: int = 512,
                overwrite: bool = False, chunk: int | None = None, progress=None) -> Path:
    """``<name>.mp4`` of a finished reconstruction (decodes the input again): the grey render of every
    face beside the input (``grid``), over it (``overlay``) or alone (``render``), in the window chosen by
    ``video_frame`` (:mod:`.window`); the input's frame count, timing and audio."""
    source = open_video(result.video, warn_fps=False)
    window = VideoWindow(result.width, result.height, video_frame, max_height, layout=layout)
    if chunk is None:  # frames rendered at once: fewer in a big window (the rasteriser's buffers)
        chunk = int(max(1, min(16, 2**20 // (window.size[0] * window.size[1]))))
    faces = result.faces
    pos_of = {int(fi): i for i, fi in enumerate(faces[0].frame_index)} if faces else {}
    audio = result.video if getattr(source, "has_audio", False) else None
    stage = VideoStage(model, layout, window, path, result.fps, pts=faces[0].timestamps if faces else None,
                       audio_from=audio, overwrite=overwrite)
    try:
        for ch in source.iter_chunks(chunk):
            rows = np.array([pos_of.get(int(i), -1) for i in ch.indices])
            have = rows >= 0
            take = np.where(have, rows, 0)
            parts = [FaceRows({k: np.asarray(v)[take] for k, v in f.params.items()}, np.asarray(f.cam)[take],
                              np.asarray(f.crop_tform)[take], np.asarray(f.valid, bool)[take] & have) for f in faces]
            boxes = face_boxes([np.asarray(f.points478)[take] for f in faces], [p.valid for p in parts])
            tw = window.transforms(boxes, ch.pts_seconds)
            stage.write(window.apply(ch.frames, tw), parts, tw)
            if progress is not None:
                progress(len(ch))
    except BaseException as exc:
        stage.abort(exc)
        raise
    return stage.close()
