"""`spectre prepare`: track every video once and store what training needs.

Cache layout (``CACHE``)::

    manifest.json                 clip list: id, folder, frame counts, fps, source, what is stored
    splits/{train,val,test}.txt   clip ids, one per line
    clips/<clip id>/              one folder per clip ("shard"), written atomically (temp + rename)
        meta.json                 fps, frame size, crop scale/size/format, tracker statistics
        landmarks.npy             (T, 68, 2) float32 iBUG-68 in original-frame pixels, gaps interpolated
        valid.npy                 (T,) bool: the tracker found the face in that frame
        crop_tforms.npy           (T, 3, 3) float64 original pixels -> stored-crop pixels
        crops_jpg.npy + crops_offsets.npy   JPEG-encoded loose face crops (or crops.npy, raw uint8)
        fit.npz                   optional: per-frame fit-backend parameters (ICT training targets)

The stored crop is a *loose* crop: the official crop at the largest training scale (1.8), so every
training crop (scale 1.4-1.8, bbox of that frame's landmarks) lies inside it and the dataset only
resamples a small image. A clip whose folder exists is done: re-running resumes where it stopped.
"""
from __future__ import annotations

import io
import json
import os
import random
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_text
from ..errors import InputError, OutputError, SpectreError, UnsafeFileError
from ..faces.crop import FACE_CROP_SCALE, face_crop_transform, interpolate_landmarks
from ..faces.track import track_video
from ..io.inputs import InputItem, expand_inputs
from ..io.video import VIDEO_SUFFIXES, open_video
from ..models import load_face_model
from ..reconstruct.fit import fit_track
from ..safeload import RestrictedUnpickler
from .data import MANIFEST, SPLIT_NAMES, SPLITS_DIR, ClipInfo


@dataclass
class PrepareConfig:
    crop_scale: float = 1.8  # largest training scale: every training crop lies inside the stored one
    crop_size: int = 288  # stored crop side (224 * 1.8 / 1.4: no upsampling at the smallest scale)
    crop_format: str = "jpg"  # "jpg" (quality 95, ~10x smaller) or "raw"
    jpeg_quality: int = 95
    store_crops: bool = True
    fit: bool = False  # also run the fit backend (targets for ICT training)
    fit_model: str = "ict"
    fit_crop_scale: float = FACE_CROP_SCALE
    workers: int = 1
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    seed: int = 42


# ---------------------------------------------------------------------------------------------
# finding videos, clip ids
# ---------------------------------------------------------------------------------------------
def find_videos(root: Path, image_folders: bool = False, exclude: Sequence[Path] = ()) -> list[InputItem]:
    """Every input under ``root`` with its clip id (``item.name``: the path relative to ``root`` without
    its extension, LRS3 style), by the walk every command shares (:mod:`spectre.io.inputs`)."""
    if not root.exists():
        raise InputError(f"video folder not found: {root}")
    return expand_inputs([root], image_folders=image_folders, exclude=exclude)


def clip_id_for(root: Path, video: Path) -> str:
    """The clip id is the video's path relative to ``root`` without its extension (LRS3 style)."""
    rel = video.relative_to(root) if root.is_dir() else Path(video.name)
    return rel.with_suffix("").as_posix()


# ---------------------------------------------------------------------------------------------
# tracking and frames (the faces layer does the work; these adapters keep prepare testable)
# ---------------------------------------------------------------------------------------------
@dataclass
class Track:
    landmarks: np.ndarray  # (T, 68, 2) float, NaN where no face was found
    fps: float
    width: int
    height: int
    #: (T, 478, 3) MediaPipe points (NaN where no face), for the fit's dense lip term; None if not tracked
    points478: np.ndarray | None = None


Tracker = Callable[[Path], Track]
FrameReader = Callable[[Path], Iterable[np.ndarray]]


def default_tracker(video: Path) -> Track:
    """Track the main face of ``video`` with the faces layer (largest face per frame, official rule)."""
    tracks = track_video(video, face="largest")
    face = tracks.largest_per_frame() if len(tracks.tracks) != 1 else next(iter(tracks.tracks.values()))
    lmk = np.asarray(face.landmarks68, dtype=np.float64).copy()
    lmk[~np.asarray(face.valid, bool)] = np.nan
    pts = getattr(face, "points478", None)
    pts = None if pts is None else np.asarray(pts, dtype=np.float32)
    return Track(lmk, float(tracks.fps), int(tracks.width), int(tracks.height), pts)


def default_frames(video: Path) -> Iterator[np.ndarray]:
    """RGB uint8 frames of ``video`` (streaming, rotation applied, like the tracker saw them)."""
    for _, _, frame in open_video(video, warn_fps=False).iter_frames():
        yield frame


def interpolate(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(filled, valid): gaps filled as the official ``landmarks_interpolate`` (faces layer)."""
    lmk = np.asarray(landmarks, dtype=np.float64)
    valid = np.isfinite(lmk).all(axis=(1, 2))
    filled = interpolate_landmarks(lmk)
    return (lmk if filled is None else filled), valid


class IctFitter:
    """Runs the fit backend on a clip's landmarks: the geometric targets of ICT training."""

    def __init__(self, model_name: str = "ict"):
        self.model_name = model_name
        self._model = None

    def __call__(self, video: Path, landmarks: np.ndarray, valid: np.ndarray,
                 points478: np.ndarray | None = None) -> dict[str, np.ndarray]:
        if self._model is None:
            self._model = load_face_model(self.model_name)
        # the same fit as `reconstruct --backend fit` (dense lip term from the 478 points when tracked),
        # so a learned encoder distils exactly the backend it is compared with
        fit = fit_track(self._model, landmarks, valid, points478=points478)
        T = landmarks.shape[0]
        out = {f"param_{k}": np.asarray(v, np.float32).reshape(T, -1) for k, v in fit.params.items()}
        out["cam_raw"] = np.asarray(fit.cam, np.float32)
        out["center"] = np.repeat(np.asarray(fit.center, np.float64)[None], T, 0)
        out["scale"] = np.full((T, 1), fit.scale, np.float64)
        return out


# ---------------------------------------------------------------------------------------------
# one clip
# ---------------------------------------------------------------------------------------------
def _encode_jpeg(img: np.ndarray, quality: int) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(img[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise OutputError("JPEG encoding failed")
    return buf.tobytes()


def prepare_clip(video: Path, clip_id: str, cache: Path, cfg: PrepareConfig,
                 tracker: Tracker = default_tracker, frames: FrameReader = default_frames,
                 fitter: Callable | None = None) -> ClipInfo:
    """Track, crop and store one clip; the folder appears atomically when everything is written."""
    import cv2

    final = cache / "clips" / clip_id
    track = tracker(video)
    lmk, valid = interpolate(track.landmarks)
    n = len(lmk)
    tmp = final.parent / f".{final.name}.partial-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        meta = {"id": clip_id, "source": str(video), "fps": track.fps, "width": track.width,
                "height": track.height, "frames": n, "valid_frames": int(valid.sum()),
                "crop_scale": cfg.crop_scale, "crop_size": cfg.crop_size,
                "crop_format": cfg.crop_format if cfg.store_crops else "none",
                "landmark_space": "original frame pixels (x right, y down)"}
        np.save(tmp / "landmarks.npy", lmk.astype(np.float32))
        np.save(tmp / "valid.npy", valid)
        if cfg.store_crops and valid.any():
            tforms = face_crop_transform(lmk, cfg.crop_scale, cfg.crop_size)  # (T,3,3)
            np.save(tmp / "crop_tforms.npy", tforms)
            raw = [] if cfg.crop_format == "raw" else None
            blobs, offsets = [], [0]
            count = 0
            for t, frame in enumerate(frames(video)):
                if t >= n:
                    break
                crop = cv2.warpAffine(frame, tforms[t, :2], (cfg.crop_size, cfg.crop_size), flags=cv2.INTER_LINEAR,
                                      borderMode=cv2.BORDER_CONSTANT, borderValue=0)
                if raw is not None:
                    raw.append(crop)
                else:
                    blobs.append(_encode_jpeg(crop, cfg.jpeg_quality))
                    offsets.append(offsets[-1] + len(blobs[-1]))
                count += 1
            if count != n:
                raise InputError(f"{video}: decoded {count} frames but tracked {n}")
            if raw is not None:
                np.save(tmp / "crops.npy", np.stack(raw))
            else:
                np.save(tmp / "crops_jpg.npy", np.frombuffer(b"".join(blobs), dtype=np.uint8))
                np.save(tmp / "crops_offsets.npy", np.asarray(offsets, dtype=np.int64))
        if fitter is not None and valid.any():
            pts = getattr(track, "points478", None)
            params = fitter(video, lmk, valid) if pts is None else fitter(video, lmk, valid, points478=pts)
            np.savez(tmp / "fit.npz", **{k: np.asarray(v, dtype=np.float32) for k, v in params.items()})
            meta["fit_crop_scale"] = cfg.fit_crop_scale
            meta["fit_model"] = cfg.fit_model
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return clip_info_from_meta(cache, final)


def clip_info_from_meta(cache: Path, folder: Path) -> ClipInfo:
    meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    return ClipInfo(id=meta["id"], path=folder.relative_to(cache).as_posix(), frames=int(meta["frames"]),
                    valid_frames=int(meta["valid_frames"]), fps=float(meta["fps"]), source=meta["source"],
                    has_crops=meta["crop_format"] != "none", has_fit=(folder / "fit.npz").is_file())


# ---------------------------------------------------------------------------------------------
# splits
# ---------------------------------------------------------------------------------------------
def read_split_lists(path: Path) -> dict[str, list[str]]:
    """Read an official ``LRS3_lists.pkl`` ([train, val, test] of (clip, transcript)) or a folder /
    text file of split lists (``train.txt``, ``val.txt``, ``test.txt``: one clip per line, anything
    after the first whitespace, e.g. a transcript, is ignored)."""
    path = Path(path)
    if path.is_dir():
        out = {}
        for name in SPLIT_NAMES:
            f = path / f"{name}.txt"
            if f.is_file():
                out[name] = [ln.split()[0] for ln in f.read_text(encoding="utf-8").splitlines() if ln.strip()]
        if not out:
            raise InputError(f"{path}: no train.txt / val.txt / test.txt split files")
        return out
    if path.suffix == ".pkl":
        try:
            data = RestrictedUnpickler(io.BytesIO(path.read_bytes()), holds="split lists hold plain lists and strings")
            data = data.load()
        except UnsafeFileError as exc:
            raise UnsafeFileError(f"{path}: {exc}") from None
        except Exception as exc:
            raise InputError(f"{path} is not a readable split pickle ({type(exc).__name__})") from None
        if not (isinstance(data, (list, tuple)) and len(data) == 3):
            raise InputError(f"{path}: expected [train, val, test] lists (official LRS3_lists.pkl format)")
        out = {}
        for name, entries in zip(SPLIT_NAMES, data):
            ids = []
            for e in entries:
                ids.append(str(e[0] if isinstance(e, (list, tuple)) else e))
            out[name] = ids
        return out
    raise InputError(f"{path}: split lists must be LRS3_lists.pkl or a folder with train/val/test .txt files")


def _match(list_ids: Iterable[str], clip_ids: Sequence[str]) -> list[str]:
    """Map list entries onto clip ids: exact match, or one is a path suffix of the other."""
    by_id = set(clip_ids)
    out = []
    for e in list_ids:
        e = e.strip("/").rsplit(".", 1)[0] if e.endswith(VIDEO_SUFFIXES) else e.strip("/")
        if e in by_id:
            out.append(e)
            continue
        hit = [c for c in clip_ids if c.endswith("/" + e) or e.endswith("/" + c)]
        if len(hit) == 1:
            out.append(hit[0])
    return out


def make_splits(clip_ids: Sequence[str], cfg: PrepareConfig, lists: dict[str, list[str]] | None = None
                ) -> dict[str, list[str]]:
    """Given lists are matched onto the prepared clips; otherwise clips are split by their parent
    folder (speaker / video id, as the official train/val split) with a fixed seed."""
    if lists is not None:
        return {name: sorted(set(_match(lists.get(name, []), clip_ids))) for name in SPLIT_NAMES}
    groups: dict[str, list[str]] = {}
    for cid in clip_ids:
        parent = cid.rsplit("/", 1)[0] if "/" in cid else cid
        groups.setdefault(parent, []).append(cid)
    keys = sorted(groups)
    random.Random(cfg.seed).shuffle(keys)
    n = len(keys)
    # at least one folder for each requested split, as long as one is left for training
    n_test = max(1, int(round(n * cfg.test_fraction))) if cfg.test_fraction > 0 and n >= 3 else 0
    n_val = max(1, int(round(n * cfg.val_fraction))) if cfg.val_fraction > 0 and n >= 2 else 0
    if n - n_test - n_val < 1:
        n_test, n_val = 0, min(n_val, max(n - 1, 0))
    split = {"test": keys[:n_test], "val": keys[n_test:n_test + n_val], "train": keys[n_test + n_val:]}
    return {name: sorted(c for g in split[name] for c in groups[g]) for name in SPLIT_NAMES}


# ---------------------------------------------------------------------------------------------
# the whole folder
# ---------------------------------------------------------------------------------------------
@dataclass
class PrepareReport:
    prepared: int = 0
    skipped_existing: int = 0
    failed: list[tuple[str, str]] = None  # (clip id, one-line reason)
    clips: int = 0
    seconds: float = 0.0


def _worker(job):
    video, cid, cache, cfg, tracker, frames, fitter = job
    try:
        prepare_clip(Path(video), cid, Path(cache), cfg, tracker, frames, fitter)
        return cid, None
    except SpectreError as exc:
        return cid, str(exc)
    except Exception as exc:  # a broken video must not stop a 30k-clip run
        return cid, f"{type(exc).__name__}: {' '.join(str(exc).split())}"


def prepare_folder(video_dir: str | Path, cache: str | Path, cfg: PrepareConfig | None = None,
                   split_lists: str | Path | None = None, tracker: Tracker = default_tracker,
                   frames: FrameReader = default_frames, fitter: Callable | None = None,
                   progress: Callable[[str, str | None], None] | None = None,
                   image_folders: bool = False) -> PrepareReport:
    """Prepare every video under ``video_dir`` into ``cache`` (resumable), then write the manifest
    and the split files. ``image_folders``: folders of image frames are clips too (``--image-folder``)."""
    cfg = cfg or PrepareConfig()
    video_dir, cache = Path(video_dir), Path(cache)
    if cfg.crop_format not in ("jpg", "raw"):
        raise InputError(f"unknown crop format {cfg.crop_format!r} (use jpg or raw)")
    videos = find_videos(video_dir, image_folders, exclude=[cache])
    try:
        (cache / "clips").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {cache}: {exc.strerror or exc}") from None
    lists = read_split_lists(Path(split_lists)) if split_lists else None
    t0 = time.perf_counter()
    report = PrepareReport(failed=[])
    jobs = []
    ids = []
    for item in videos:
        v, cid = item.path, item.name
        ids.append(cid)
        if (cache / "clips" / cid / "meta.json").is_file():
            report.skipped_existing += 1
            continue
        jobs.append((str(v), cid, str(cache), cfg, tracker, frames, fitter))
    if cfg.workers > 1 and len(jobs) > 1:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")  # mediapipe / torch are not fork-safe
        with ctx.Pool(cfg.workers) as pool:
            results = pool.imap_unordered(_worker, jobs)
            for cid, err in results:
                _record(report, cid, err, progress)
    else:
        for job in jobs:
            _record(report, *_worker(job), progress)
    write_manifest(cache, ids, cfg, lists)
    report.clips = len(ids) - len(report.failed)
    report.seconds = time.perf_counter() - t0
    return report


def _record(report: PrepareReport, cid: str, err: str | None, progress) -> None:
    if err is None:
        report.prepared += 1
    else:
        report.failed.append((cid, err))
    if progress:
        progress(cid, err)


def write_manifest(cache: Path, clip_ids: Sequence[str], cfg: PrepareConfig,
                   lists: dict[str, list[str]] | None = None) -> dict:
    """Manifest of every finished clip folder among ``clip_ids`` + split files (atomic writes)."""
    infos = []
    for cid in clip_ids:
        folder = cache / "clips" / cid
        if (folder / "meta.json").is_file():
            infos.append(clip_info_from_meta(cache, folder))
    manifest = {"version": 1, "created_by": "spectre prepare", "config": asdict(cfg),
                "clips": [asdict(c) for c in infos]}
    atomic_write_text(cache / MANIFEST, json.dumps(manifest, indent=1))
    usable = [c.id for c in infos if c.valid_frames > 0]
    splits = make_splits(usable, cfg, lists)
    for name, ids in splits.items():
        atomic_write_text(cache / SPLITS_DIR / f"{name}.txt", "".join(f"{i}\n" for i in ids))
    return manifest


def print_progress(cid: str, err: str | None) -> None:
    print(f"  {'FAILED ' if err else 'ok     '}{cid}" + (f": {err}" if err else ""), file=sys.stderr)
