"""Save/load ``FaceTracks`` as one npz (the ``spectre track`` output), written atomically.

Arrays (K tracks, T frames): ``track_ids`` (K,), ``indices`` (T,), ``pts_seconds`` (T,),
``points478`` (K,T,478,3), ``landmarks68`` (K,T,68,2), ``bbox`` (K,T,4), ``present``/``interpolated``
(K,T) bool, ``confidence`` (K,T), ``crop_transforms`` (K,T,3,3) official 224 face-crop transforms at
``crop_scale`` (frame px -> crop px; NaN where the track is invalid), and scalars ``width``, ``height``,
``fps``, ``crop_scale``, ``format_version``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from ..errors import InputError
from .crop import FACE_CROP_SCALE, face_crop_transform
from .tracks import TRACK_FIELDS, FaceTrack, FaceTracks

FORMAT_VERSION = 1


def save_tracks(tracks: FaceTracks, path: str | Path, overwrite: bool = False, crop_scale: float = FACE_CROP_SCALE) -> Path:
    ids = sorted(tracks.tracks)
    n = len(tracks)
    arrays = {f: np.stack([getattr(tracks.tracks[i], f) for i in ids]) if ids else np.zeros((0, n)) for f in TRACK_FIELDS}
    crops = np.full((len(ids), n, 3, 3), np.nan)
    for k, i in enumerate(ids):
        t = tracks.tracks[i]
        ok = t.valid
        if ok.any():
            crops[k, ok] = face_crop_transform(t.landmarks68[ok], crop_scale)
    path = Path(path)
    with atomic_path(path, overwrite=overwrite) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, track_ids=np.asarray(ids, np.int64), indices=tracks.indices,
                                pts_seconds=tracks.pts_seconds, width=tracks.width, height=tracks.height,
                                fps=tracks.fps, crop_scale=crop_scale, crop_transforms=crops,
                                format_version=FORMAT_VERSION, **arrays)
    return path


def load_tracks(path: str | Path) -> FaceTracks:
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            d = {k: z[k] for k in z.files}
    except Exception as exc:
        raise InputError(f"{path}: not a readable tracks npz ({' '.join(str(exc).split())})") from None
    missing = [k for k in ("track_ids", "indices", "pts_seconds", *TRACK_FIELDS) if k not in d]
    if missing:
        raise InputError(f"{path}: not a spectre tracks file (missing {', '.join(missing)})")
    tracks = {int(i): FaceTrack(int(i), *(d[f][k] for f in TRACK_FIELDS)) for k, i in enumerate(d["track_ids"])}
    return FaceTracks(d["indices"], d["pts_seconds"], int(d["width"]), int(d["height"]), float(d["fps"]), tracks)
