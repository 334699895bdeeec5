"""The output folder's bookkeeping for one video: which files it produces, whether an earlier run
finished it (its sidecar ``<stem>.yaml`` lists only outputs that exist) or left files behind, which
existing files spectre wrote (and may redo without ``--overwrite``), and the guards that refuse to write
over the input or past the file system's name limit."""
from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import yaml

from ..errors import OutputError
from .config import ReconstructConfig

__all__ = ["output_names", "guard_input", "is_finished", "same_config", "stale_outputs", "same_file",
           "writing_marker", "owned_outputs", "check_name_length", "source_identity", "other_source"]

#: bytes hashed at each end of an input to recognise it (with its size) wherever it is stored
_ENDS = 1 << 20


def source_identity(video: str | Path) -> dict:
    """What the sidecar records about its input: resolved path, size, mtime and a SHA-256 of the first
    and last MiB (an image folder: of its images' names and sizes). Size + hash decide sameness, so a
    dataset moved or copied elsewhere still resumes, and another file under the same name never does."""
    path = Path(video)
    digest = hashlib.sha256()
    if path.is_dir():
        files = sorted(q for q in path.iterdir() if q.is_file())
        size = sum(q.stat().st_size for q in files)
        mtime = max((q.stat().st_mtime for q in files), default=path.stat().st_mtime)
        for q in files:
            digest.update(f"{q.name}\0{q.stat().st_size}\0".encode("utf-8", "surrogateescape"))
    else:
        st = path.stat()
        size, mtime = st.st_size, st.st_mtime
        with open(path, "rb") as fh:
            digest.update(fh.read(_ENDS))
            if size > _ENDS:
                fh.seek(max(_ENDS, size - _ENDS))
                digest.update(fh.read(_ENDS))
    return {"path": os.fsdecode(path.resolve()), "size": int(size), "mtime": round(float(mtime), 3),
            "sha256_ends": digest.hexdigest()}


def other_source(output_dir: Path, stem: str, video: str | Path) -> str | None:
    """None when the finished result ``<stem>.yaml`` was made from ``video``; else the other source's
    path. A sidecar without a recorded identity (older spectre) counts as this video's only when the
    path it records still names this very file."""
    try:
        data = yaml.safe_load((output_dir / f"{stem}.yaml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None  # not finished after all: the job redoes it
    if not isinstance(data, dict):
        return None
    recorded = data.get("source")
    if isinstance(recorded, dict):
        now = source_identity(video)
        if (recorded.get("size"), recorded.get("sha256_ends")) == (now["size"], now["sha256_ends"]):
            return None
        return f"{recorded.get('path')} ({recorded.get('size')} bytes)"
    old = str(data.get("video") or "")
    if old and same_file(Path(old), Path(video)):
        return None
    return f"{old or 'an unknown video'} (recorded without a source identity by an older spectre)"


def output_names(video: Path, stem: str, track_ids: Sequence[int], cfg: ReconstructConfig) -> dict[str, list[str]]:
    """File names (relative to the output folder) a video produces. Several faces get ``_face<id>``."""
    multi = len(track_ids) > 1 or cfg.face not in ("largest",)
    names: dict[str, list[str]] = {"npz": [], "csv": [], "livelink": [], "video": [], "meshes": []}
    for tid in track_ids:
        base = f"{stem}_face{tid}" if multi else stem
        names["npz"].append(f"{base}.npz")
        if cfg.arkit and cfg.arkit_format in ("csv", "both"):
            names["csv"].append(f"{base}_arkit.csv")
        if cfg.arkit and cfg.arkit_format in ("livelink", "both"):
            names["livelink"].append(f"{base}_livelink.csv")
        if cfg.meshes and cfg.meshes != "glb":
            names["meshes"].append(f"{base}_meshes")
    if cfg.meshes == "glb":  # one scene, one node per face track
        names["meshes"].append(f"{stem}_meshes.glb")
    if cfg.layout != "none":
        names["video"].append(f"{stem}.mp4")
    return names


def is_finished(output_dir: Path, stem: str) -> bool:
    """A video is finished when its sidecar exists and lists only outputs that exist."""
    sidecar = output_dir / f"{stem}.yaml"
    try:
        if not sidecar.is_file():
            return False
        data = yaml.safe_load(sidecar.read_text(encoding="utf-8")) or {}
        outs = data.get("outputs") if isinstance(data, dict) else None
        return isinstance(outs, list) and all((output_dir / str(o)).exists() for o in outs)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):  # e.g. a name too long for the file system
        return False


def same_config(output_dir: Path, stem: str, cfg_dict: dict) -> bool:
    """Whether a finished video's sidecar records the config asked for now."""
    try:
        data = yaml.safe_load((output_dir / f"{stem}.yaml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    now = yaml.safe_load(yaml.safe_dump(cfg_dict, sort_keys=False))
    return isinstance(data, dict) and data.get("config") == now


def stale_outputs(output_dir: Path, stem: str) -> list[Path]:
    """Files under this video's output names (an unfinished earlier run's, or someone else's)."""
    pats = [f"{stem}.npz", f"{stem}_face*.npz", f"{stem}_arkit.csv", f"{stem}_face*_arkit.csv",
            f"{stem}_livelink.csv", f"{stem}_face*_livelink.csv", f"{stem}.mp4", f"{stem}.yaml"]
    found = []
    for pat in pats:
        found += [p for p in output_dir.glob(pat) if p.is_file()]
    return found


def same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def guard_input(video: Path, targets: Iterable[Path]) -> None:
    """Refuse (even with --overwrite) to write an output over the input itself, e.g. the render
    ``clip.mp4`` when the output folder is the input's folder."""
    for t in targets:
        if same_file(Path(video), t):
            raise OutputError(f"{t}: output would replace the input video; choose another output folder")


def writing_marker(output_dir: Path, stem: str) -> Path:
    """Present while a video's outputs are being written: the files under its names are ours."""
    return output_dir / f".{stem}.spectre-writing"


def _looks_like_ours(path: Path) -> bool:
    """A result file spectre wrote (npz with our schema, our ARKit CSV header, our sidecar)."""
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                return "schema" in z.files and str(z["schema"]).startswith("spectre.")
        with open(path, encoding="utf-8") as fh:
            head = fh.read(4096)
        if path.suffix == ".csv":
            return head.startswith(("frame,time,valid,", "Timecode,BlendShapeCount,"))
        if path.suffix == ".yaml":
            return head.startswith("spectre_version:")
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return False


def owned_outputs(output_dir: Path, stem: str) -> set[Path]:
    """Files an earlier spectre run of this video wrote: all of them if it was interrupted while
    writing (marker present), else those its sidecar lists and result files that carry our format."""
    found = stale_outputs(output_dir, stem)
    if writing_marker(output_dir, stem).exists():
        return set(found)
    ours = {p for p in found if _looks_like_ours(p)}
    sidecar = output_dir / f"{stem}.yaml"
    try:
        data = yaml.safe_load(sidecar.read_text(encoding="utf-8")) if sidecar in ours else None
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        data = None
    if isinstance(data, dict) and isinstance(data.get("outputs"), list):
        ours |= {output_dir / str(o) for o in data["outputs"]}
    return ours


def check_name_length(output_dir: Path, stem: str) -> None:
    """Fail before the work when this video's longest output name (a temporary multi-face Live Link CSV)
    would not fit the file system's limit on a file name."""
    try:
        name_max = os.pathconf(output_dir, "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    longest = f".{stem}_face00_livelink.XXXXXXXX.partial.csv"
    if len(os.fsencode(longest)) > name_max:
        spare = name_max - (len(os.fsencode(longest)) - len(os.fsencode(stem)))
        raise OutputError(f"the output names for {stem[:40]}... would be too long for {output_dir} (file names "
                          f"are limited to {name_max} bytes: rename the input to at most {spare} bytes)")
