"""The render video, chunk by chunk: each face's shape (grey, tinted by `render_colours`) is rasterised
straight into the output window (:mod:`.window`) at the window's resolution, composed with the window of
the input and encoded.

Nothing is rendered at the input's resolution and then resampled, and nothing the window does not show
is blended or encoded: on a 1080p input the default face window is 512x512, a fifteenth of the pixels of
the full-frame grid. Composition is done per chunk on uint8/float32 arrays, not per frame in float64.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..faces.crop import FACE_CROP_SIZE
from ..geometry import crop_to_pixels, project_to_crop
from ..io.video import open_video
from ..io.writer import EncoderThread
from ..raster_kernels import warm_up
from ..render.fast_shape import video_light_table
from ..render.visualize import render_shape_in_frame
from .compose import FaceRows, compose, compose_posed, open_video_writer, place_rows, render_posed
from .window import VideoWindow

__all__ = ["VideoStage", "posed_rows", "render_window", "video_tint", "window_affine", "write_video"]


def video_tint(model, colours: str) -> np.ndarray | None:
    """The kernels' per-vertex tint for ``colours`` (:data:`.config.RENDER_COLOURS`); None: plain grey (also
    for a model without colours)."""
    tint = model.render_colours() if colours == "tinted" else None
    return None if tint is None else tint.numpy()


def window_affine(cam: np.ndarray, crop_tform: np.ndarray, to_window: np.ndarray,
                  crop_size: int = FACE_CROP_SIZE) -> np.ndarray:
    """(n, 2, 3) float64 maps from posed model vertices' ``(x, -y)`` to window pixels: the crop camera
    ``cam`` (n, 3) ``s, tx, ty`` (``project_to_crop``), the crop (``crop_tform`` input px -> crop px) and the
    window (``to_window`` input px -> window px) composed, for :func:`.compose.render_posed`."""
    win_to_crop = np.asarray(crop_tform, np.float64) @ np.linalg.inv(np.asarray(to_window, np.float64))
    inv = np.linalg.inv(win_to_crop)[:, :2]  # crop px -> window px
    origin = crop_to_pixels(0.0, crop_size)  # crop px of the normalised 0, and per unit
    unit = crop_to_pixels(1.0, crop_size) - origin
    lin = inv[:, :, :2] * unit  # normalised crop -> window px
    off = inv[:, :, 2] + inv[:, :, :2].sum(-1) * origin
    cam = np.asarray(cam, np.float64)
    s = cam[:, 0]
    # normalised crop x = s * x + s * tx, y = s * (-y) - s * ty
    shift = np.stack([s * cam[:, 1], -s * cam[:, 2]], -1)
    return np.concatenate([lin * s[:, None, None], (np.einsum("nij,nj->ni", lin, shift) + off)[..., None]], -1)


def posed_rows(model, face: FaceRows, to_window: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What the video needs of a face's valid rows: their indices, posed vertices (k, V, 3) float32 and
    :func:`window_affine` maps (k, 2, 3); the face model is evaluated here, so the video needs none."""
    rows = np.flatnonzero(np.asarray(face.valid, bool))
    if len(rows) == 0:
        return rows, np.zeros((0, 0, 3), np.float32), np.zeros((0, 2, 3))
    params = {k: torch.as_tensor(np.asarray(v)[rows]) for k, v in face.params.items()}
    with torch.inference_mode():
        verts = model.vertices(model.complete(params)).to(torch.float32).numpy()
    affine = window_affine(np.asarray(face.cam)[rows], np.asarray(face.crop_tform)[rows], np.asarray(to_window)[rows])
    return rows, verts, affine


def render_window(model, faces_idx: torch.Tensor, face: FaceRows, to_window: np.ndarray,
                  size: tuple[int, int], fast: bool = True,
                  tint: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Grey render of one face in the output window -> (rgb (n, H, W, 3) float32 premultiplied, alpha (n, H, W)).

    ``to_window`` (n, 3, 3) maps input px -> window px; ``size`` is the window's (width, height). ``fast``:
    the non-differentiable video renderer (:func:`.compose.render_posed`, back faces culled; the
    video need not be differentiable, tests/test_fast_render.py bounds its difference to the differentiable
    renderer; ``tint``: :func:`video_tint`); else the differentiable renderer with culled back faces (grey)."""
    w, h = size
    n = len(face.valid)
    if fast:
        rows, verts, affine = posed_rows(model, face, to_window)
        return place_rows(n, rows, render_posed(verts, affine, faces_idx.numpy(), video_light_table(), (h, w), tint)
                          if len(rows) else None, (h, w))
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
        img, a = render_shape_in_frame(verts, crop, faces_idx, win_to_crop, (h, w), cull_backfaces=True)
    rgb[rows] = img.clamp(0, 1).permute(0, 2, 3, 1).numpy()
    alpha[rows] = a[:, 0].numpy()
    return rgb, alpha


class VideoStage:
    """Writes the render video one chunk at a time (``write``), then ``close`` (muxes the audio)."""

    def __init__(self, model, layout: str, window: VideoWindow, path: str | Path, fps: float,
                 pts: Sequence[float] | None = None, audio_from: str | Path | None = None, overwrite: bool = False,
                 opacity: float = 0.7, encoder: dict | None = None, colours: str = "tinted"):
        self.model, self.layout, self.window, self.opacity = model, layout, window, opacity
        self.faces_idx = model.render_faces()
        self.tint = video_tint(model, colours)
        self.light = video_light_table()
        warm_up()  # the compiled rasteriser's import and cache load, before the first frames arrive
        self.writer = open_video_writer(layout, window, path, fps, pts, audio_from, overwrite, encoder)
        self.encoder: EncoderThread | None = None  # started by the first frames
        self.frames_written = 0

    def compose(self, frames: np.ndarray, faces: list[FaceRows], to_window: np.ndarray) -> np.ndarray:
        """(n, H, W', 3) uint8 output frames for ``frames`` (n, H, W, 3) uint8, already in the window. One face
        (not over the input at a chosen opacity) is drawn as the video process draws it, straight into the
        frames (:func:`.compose.compose_posed`, the same bytes)."""
        if len(faces) == 1 and self.layout != "overlay":
            rows, verts, affine = posed_rows(self.model, faces[0], to_window)
            return compose_posed(frames, rows, verts, affine, self.faces_idx.numpy(), self.light, self.layout,
                                 self.tint)
        renders = [render_window(self.model, self.faces_idx, face, to_window, self.window.size, tint=self.tint)
                   for face in faces]
        return compose(frames, renders, self.layout, self.opacity)

    def write(self, frames: np.ndarray, faces: list[FaceRows], to_window: np.ndarray,
              times: Sequence[float] | None = None) -> None:
        """Render and compose frames, and queue them for the encoder's thread (``times``: their timestamps,
        when not given up front), which encodes them while the next ones are drawn."""
        composed = self.compose(frames, faces, to_window)
        if self.encoder is None:
            self.encoder = EncoderThread(self.writer)
        self.encoder.put(composed, times)
        self.frames_written += len(frames)

    def close(self) -> Path:
        try:
            if self.encoder is not None:
                self.encoder.finish()
        except BaseException as exc:  # an encoder error: no partial file is left
            self.abort(exc)
            raise
        return self.writer.close()

    def abort(self, exc: BaseException) -> None:
        if self.encoder is not None:
            self.encoder.stop()
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
                overwrite: bool = False, chunk: int | None = None, progress=None, colours: str = "tinted") -> Path:
    """``<name>.mp4`` of a finished reconstruction (decodes the input again): the render of every
    face beside the input (``grid``), over it (``overlay``) or alone (``render``), in the window chosen by
    ``video_frame`` (:mod:`.window`), in ``colours`` (:data:`.config.RENDER_COLOURS`); the input's frame count,
    timing and audio."""
    source = open_video(result.video, warn_fps=False)
    window = VideoWindow(result.width, result.height, video_frame, max_height, layout=layout)
    if chunk is None:  # frames rendered at once: fewer in a big window (the rasteriser's buffers)
        chunk = int(max(1, min(16, 2**20 // (window.size[0] * window.size[1]))))
    faces = result.faces
    pos_of = {int(fi): i for i, fi in enumerate(faces[0].frame_index)} if faces else {}
    audio = result.video if getattr(source, "has_audio", False) else None
    stage = VideoStage(model, layout, window, path, result.fps, pts=faces[0].timestamps if faces else None,
                       audio_from=audio, overwrite=overwrite, colours=colours)
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
