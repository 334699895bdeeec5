"""What ``spectre view OUT/STEM`` shows: the video, the animated head (.glb) and the ARKit curves of a
finished reconstruction, found from its sidecar ``<stem>.yaml``.

The head is the ``.glb`` written with ``--meshes glb``; without one it is built from the ``.npz``
results (the face model is loaded for that, so it takes a few seconds). The video is the render written
next to the results (``<stem>.mp4``, H.264, plays in every browser) or else the input video.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from ..errors import InputError
from ..io.results import ARKIT_NAMES, FaceResult, load_arkit_csv, load_face_npz

__all__ = ["ViewFiles", "find_view_files", "face_from_npz"]


@dataclass
class ViewFiles:
    stem: str
    video: Path
    glb: Path
    data: dict
    cleanup: list[Path] = field(default_factory=list)


def _sidecar(target: Path) -> tuple[Path, str]:
    """``OUT/STEM``, ``OUT/STEM.yaml`` or any ``OUT/STEM*.npz|.glb|.mp4`` -> (folder, stem)."""
    if target.is_dir() and not (target.parent / f"{target.name}.yaml").exists():
        yamls = sorted(target.glob("*.yaml"))
        if len(yamls) == 1:
            return target, yamls[0].stem
        raise InputError(f"{target} is a folder: give OUT/STEM (one of: "
                         f"{', '.join(p.stem for p in yamls) or 'no results there'})")
    folder, name = target.parent, target.name
    for suffix in (".yaml", ".npz", ".glb", ".mp4"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    for cut in ("_meshes", "_arkit", "_livelink"):
        if name.endswith(cut):
            name = name[: -len(cut)]
    if not (folder / f"{name}.yaml").exists():
        base = name.rsplit("_face", 1)[0]
        if (folder / f"{base}.yaml").exists():
            return folder, base
        raise InputError(f"no finished reconstruction {folder / name} (its {name}.yaml is missing)")
    return folder, name


def face_from_npz(path: Path) -> tuple[FaceResult, dict]:
    """A :class:`FaceResult` (without landmarks' extras) and the file's metadata from a result ``.npz``."""
    d = load_face_npz(path)
    face = FaceResult(track_id=int(d["track_id"]), model=str(d["model"]), backend=str(d["backend"]),
                      params=d["params"], cam=d["cam"], crop_tform=d["crop_tform"], landmarks2d=d["landmarks2d"],
                      landmarks3d=d["landmarks3d"], valid=d["valid"], frame_index=d["frame_index"],
                      timestamps=d["timestamps"], expression_names=tuple(str(n) for n in d["expression_names"]),
                      arkit=d.get("arkit"))
    return face, d


def find_view_files(target: str | Path, video: str | Path | None = None) -> ViewFiles:
    folder, stem = _sidecar(Path(target))
    side = yaml.safe_load((folder / f"{stem}.yaml").read_text()) or {}
    outputs = [folder / n for n in side.get("outputs", [])]
    npzs = [p for p in outputs if p.suffix == ".npz" and p.exists()]
    if not npzs:
        raise InputError(f"{folder / stem}: no .npz results listed in {stem}.yaml")
    faces, meta = [], {}
    for p in npzs:
        face, meta = face_from_npz(p)
        if face.arkit is None:
            csv = p.with_name(p.stem + "_arkit.csv")
            if csv.exists():
                _, _, face.arkit = load_arkit_csv(csv)
        faces.append(face)
    # the video: explicit, our render, or the input
    if video is not None:
        vid = Path(video)
    else:
        render = folder / f"{stem}.mp4"
        vid = render if render.exists() else Path(str(side.get("video", meta.get("video", ""))))
    if not vid.is_file():
        raise InputError(f"{folder / stem}: no video to play ({vid} not found; pass --video)")
    cleanup: list[Path] = []
    glbs = [p for p in outputs if p.suffix == ".glb" and p.exists()]
    if glbs:
        glb = glbs[0]
    else:
        from ..models import load_face_model
        from ..reconstruct.animation import write_head_glb

        model = load_face_model(faces[0].model, side.get("config", {}).get("assets")).eval()
        tmp = Path(tempfile.mkdtemp(prefix="spectre-view-"))
        glb = write_head_glb(tmp / f"{stem}.glb", model, faces, width=int(meta["width"]), height=int(meta["height"]),
                             fps=float(meta["fps"]), video=str(meta.get("video", "")))
        cleanup += [glb, tmp]
    ts = np.asarray(faces[0].timestamps, np.float64)
    data = {"stem": stem, "fps": float(meta.get("fps", 25.0)), "time_offset": float(ts[0]) if len(ts) else 0.0,
            "times": [round(float(t - ts[0]), 6) for t in ts], "names": list(ARKIT_NAMES),
            "faces": [{"track_id": int(f.track_id), "valid": [bool(v) for v in f.valid],
                       "arkit": None if f.arkit is None else np.round(np.asarray(f.arkit, np.float64), 4).tolist()}
                      for f in faces]}
    return ViewFiles(stem=stem, video=vid, glb=glb, data=data, cleanup=cleanup)
