"""video -> face tracks -> backend (``fit`` | ``learned``) -> results, renders and exports.

``reconstruct(path, ...)`` is the public one-video API; ``run_batch`` runs many videos with resume,
``--overwrite`` semantics, parallel workers (or a Ray cluster) and a failure summary; the CLI is a thin
layer over both. All outputs are written atomically; a video counts as finished when its sidecar
``<name>.yaml`` (the resolved config plus the list of outputs) exists together with every listed output.
"""
from __future__ import annotations

import dataclasses
import glob
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import yaml

from .. import __version__
from ..config import from_dict, load_yaml, to_dict
from ..device import resolve_device, resolve_precision
from ..errors import ConfigError, InputError, NoFaceError, OutputError, SpectreError
from ..io.results import FaceResult, save_arkit_csv, save_face_npz
from ..io.video import IMAGE_SUFFIXES, VIDEO_SUFFIXES
from .fit import FitConfig

log = logging.getLogger(__name__)

BACKENDS = ("fit", "learned")
LAYOUTS = ("grid", "overlay", "render", "none")
MESH_FORMATS = ("obj", "ply", "glb")

__all__ = ["ReconstructConfig", "LearnedConfig", "ReconstructionResult", "reconstruct", "Reconstructor",
           "expand_inputs", "run_batch", "BatchSummary", "JobOutcome", "output_names"]


@dataclass
class LearnedConfig:
    """Official SPECTRE inference settings (SPEC §1.3, §1.5)."""

    chunk_length: int = 50
    chunk_overlap: int = 4
    edge_padding: int = 2
    fast: bool = True  # channels-last + reduced precision where the device supports it


@dataclass
class ReconstructConfig:
    """Everything that decides a reconstruction; saved (resolved) next to every output."""

    backend: str = "fit"
    model: str | None = None  # resolved by validate(): ict for the fit backend, flame for learned
    face: str = "largest"  # largest | all | <track id>
    device: str = "auto"
    precision: str = "auto"  # resolved by validate(): bf16 on CPUs with native bf16 / on CUDA, else fp32
    layout: str = "grid"   # grid | overlay | render | none
    meshes: str | None = None  # obj | ply | glb
    crop_scale: float = 1.6
    assets: str | None = None
    arkit: bool = True
    track_chunk: int = 64
    fit: FitConfig = field(default_factory=FitConfig)
    learned: LearnedConfig = field(default_factory=LearnedConfig)

    def validate(self) -> "ReconstructConfig":
        if self.backend not in BACKENDS:
            raise ConfigError(f"unknown backend {self.backend!r} (choose from {', '.join(BACKENDS)})")
        if self.model is None:
            self.model = "flame" if self.backend == "learned" else "ict"
        if self.model not in ("ict", "flame"):
            raise ConfigError(f"unknown model {self.model!r} (choose ict or flame)")
        if self.backend == "learned" and self.model != "flame":
            raise ConfigError("the learned backend predicts FLAME parameters: use --model flame")
        if self.layout not in LAYOUTS:
            raise ConfigError(f"unknown layout {self.layout!r} (choose from {', '.join(LAYOUTS)})")
        if self.meshes is not None and self.meshes not in MESH_FORMATS:
            raise ConfigError(f"unknown mesh format {self.meshes!r} (choose from {', '.join(MESH_FORMATS)})")
        face = str(self.face)
        if face not in ("largest", "all") and not face.lstrip("-").isdigit():
            raise ConfigError(f"--face must be largest, all or a track id, not {face!r}")
        if not 1.0 <= float(self.crop_scale) <= 3.0:
            raise ConfigError(f"crop_scale {self.crop_scale} out of range [1, 3]")
        # the saved config must say what ran: 'auto' becomes the precision this machine uses
        self.precision = resolve_precision(self.precision, resolve_device(self.device))
        return self

    def to_yaml(self) -> str:
        return yaml.safe_dump(to_dict(self), sort_keys=False)


def make_config(config_file: str | Path | None = None, **overrides: Any) -> ReconstructConfig:
    """Defaults <- YAML file <- explicit overrides (``None`` = not given). Nested keys as dicts."""
    data = load_yaml(config_file) if config_file else {}
    for k, v in overrides.items():
        if v is None:
            continue
        if isinstance(v, dict) and isinstance(data.get(k), dict):
            data[k] = {**data[k], **v}
        else:
            data[k] = v
    if "face" in data:
        data["face"] = str(data["face"])
    if data.get("backend") == "learned" and "model" not in data:
        data["model"] = "flame"  # the official encoders predict FLAME parameters
    return from_dict(ReconstructConfig, data, str(config_file) if config_file else "config").validate()


# ------------------------------------------------------------------------------------------------
@dataclass
class ReconstructionResult:
    """What ``spectre.reconstruct`` returns for one video.

    ``faces``: one :class:`~spectre.io.results.FaceResult` per reconstructed face track (arrays per input
    frame: parameters, camera, crop transforms, 2D/3D landmarks, valid mask, timestamps, ARKit weights);
    ``outputs``: files written (empty without ``output_dir``); ``timings``: seconds per stage.
    """

    video: Path
    fps: float
    width: int
    height: int
    num_frames: int
    faces: list[FaceResult]
    config: ReconstructConfig
    outputs: list[Path] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def face(self) -> FaceResult:
        """The first (with ``face='largest'``: the only) face."""
        return self.faces[0]


def output_names(video: Path, stem: str, track_ids: Sequence[int], cfg: ReconstructConfig) -> dict[str, list[str]]:
    """File names (relative to the output folder) a video produces. Several faces get ``_face<id>``."""
    multi = len(track_ids) > 1 or cfg.face not in ("largest",)
    names: dict[str, list[str]] = {"npz": [], "csv": [], "video": [], "meshes": []}
    for tid in track_ids:
        base = f"{stem}_face{tid}" if multi else stem
        names["npz"].append(f"{base}.npz")
        if cfg.arkit:
            names["csv"].append(f"{base}_arkit.csv")
        if cfg.meshes:
            names["meshes"].append(f"{base}_meshes")
    if cfg.layout != "none":
        names["video"].append(f"{stem}.mp4")
    return names


class Reconstructor:
    """Holds the heavy objects (tracker, face model, networks) so many videos reuse them."""

    def __init__(self, config: ReconstructConfig | None = None):
        from ..assets import AssetStore
        from ..device import Runtime

        self.cfg = (config or ReconstructConfig()).validate()
        self.store = AssetStore(self.cfg.assets)
        self.runtime = Runtime.create(self.cfg.device, self.cfg.precision)
        self._model = None
        self._evaluator = None
        self._learned = None
        self._tracker = None
        self._arkit = None

    # -- lazily built parts
    @property
    def model(self):
        if self._model is None:
            from ..models import load_face_model

            # the landmark fit is small and latency-bound: it runs on the CPU unless asked otherwise
            self._model = load_face_model(self.cfg.model, self.store).eval()
        return self._model

    @property
    def evaluator(self):
        if self._evaluator is None:
            from .fit import PointEvaluator

            self._evaluator = PointEvaluator(self.model)
        return self._evaluator

    @property
    def tracker(self):
        if self._tracker is None:
            from ..faces.track import FaceTracker

            self._tracker = FaceTracker()
        return self._tracker

    def close(self) -> None:
        if self._tracker is not None:
            self._tracker.close()
            self._tracker = None

    # -- stages
    def track(self, path: Path):
        from ..faces.track import select_faces
        from ..io.video import open_video

        source = open_video(path)
        tracks = self.tracker.track(source, chunk_size=self.cfg.track_chunk)
        face = self.cfg.face if self.cfg.face in ("largest", "all") else int(self.cfg.face)
        tracks = select_faces(tracks, face)
        usable = {tid: t for tid, t in tracks.tracks.items() if np.asarray(t.valid).any()}
        if not usable:
            raise NoFaceError(f"{path}: no face found in any of its {len(tracks.indices)} frames")
        tracks.tracks = usable
        return source, tracks

    def arkit_weights(self, params: dict[str, np.ndarray]) -> np.ndarray:
        from .arkit import LandmarkArkitSolver, ict_to_arkit

        if self.cfg.model == "ict":
            return ict_to_arkit(params["expression"], tuple(self.model.expression_names))
        if self._arkit is None:
            from ..models import load_face_model

            self._arkit = LandmarkArkitSolver(load_face_model("ict"))
        return self._arkit.solve(self.model, params)

    def fit_face(self, track, tracks) -> FaceResult:
        from ..faces.crop import face_crop_transform, interpolate_landmarks
        from .fit import fit_track

        valid = np.asarray(track.valid, bool)
        lm = np.asarray(track.landmarks68, np.float64)
        fit = fit_track(self.model, np.nan_to_num(lm), valid, self.cfg.fit, evaluator=self.evaluator,
                        points478=getattr(track, "points478", None))
        filled = interpolate_landmarks(np.where(valid[:, None, None], lm, np.nan))
        tforms = face_crop_transform(filled, scale=self.cfg.crop_scale)
        params = dict(fit.params)
        return FaceResult(
            track_id=int(track.track_id), model=self.cfg.model, backend="fit", params=params,
            cam=fit.cam_in_crop(tforms), crop_tform=tforms, landmarks2d=fit.landmarks2d,
            landmarks3d=fit.landmarks3d, valid=valid, frame_index=np.asarray(tracks.indices),
            timestamps=np.asarray(tracks.pts_seconds), tracked68=np.asarray(track.landmarks68, np.float32),
            points478=np.asarray(track.points478, np.float32),
            expression_names=tuple(getattr(self.model, "expression_names", ())),
            extras={"fit_loss": fit.final_loss, "evaluator": fit.evaluator})

    def learned_face(self, source, track, tracks) -> FaceResult:
        from .learned import LearnedBackend

        if self._learned is None:
            self._learned = LearnedBackend(self.model, self.store, self.runtime, self.cfg.learned,
                                           crop_scale=self.cfg.crop_scale)
        return self._learned.run(source, track, tracks)

    def process(self, path: str | Path) -> ReconstructionResult:
        """Track and reconstruct one video (no files written)."""
        path = Path(path)
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        source, tracks = self.track(path)
        timings["track"] = time.perf_counter() - t0
        faces = []
        t0 = time.perf_counter()
        for tid in sorted(tracks.tracks):
            track = tracks.tracks[tid]
            face = (self.fit_face(track, tracks) if self.cfg.backend == "fit"
                    else self.learned_face(source, track, tracks))
            if self.cfg.arkit:
                face.arkit = self.arkit_weights(face.params)
            faces.append(face)
        timings[self.cfg.backend] = time.perf_counter() - t0
        return ReconstructionResult(video=path, fps=float(tracks.fps or source.fps), width=int(tracks.width),
                                    height=int(tracks.height), num_frames=int(len(tracks.indices)), faces=faces,
                                    config=self.cfg, timings=timings)

    # -- outputs
    def write(self, result: ReconstructionResult, output_dir: str | Path, stem: str | None = None,
              overwrite: bool = False, progress: Callable[[int], None] | None = None) -> list[Path]:
        out = Path(output_dir)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create output folder {out}: {exc.strerror or exc}") from None
        stem = stem or result.video.stem
        names = output_names(result.video, stem, [f.track_id for f in result.faces], self.cfg)
        guard_input(result.video, [out / n for group in names.values() for n in group] + [out / f"{stem}.yaml"])
        written: list[Path] = []
        cfg_yaml = self.cfg.to_yaml()
        t0 = time.perf_counter()
        for i, face in enumerate(result.faces):
            written.append(save_face_npz(out / names["npz"][i], face, video=str(result.video), fps=result.fps,
                                         width=result.width, height=result.height, config_yaml=cfg_yaml,
                                         version=__version__, overwrite=overwrite))
            if self.cfg.arkit:
                written.append(save_arkit_csv(out / names["csv"][i], face, overwrite=overwrite))
        result.timings["write"] = time.perf_counter() - t0
        if self.cfg.meshes:
            t0 = time.perf_counter()
            from .outputs import write_meshes

            for i, face in enumerate(result.faces):
                written.append(write_meshes(self.model, face, out / names["meshes"][i], self.cfg.meshes, overwrite))
            result.timings["meshes"] = time.perf_counter() - t0
        if self.cfg.layout != "none":
            t0 = time.perf_counter()
            from .outputs import write_render_video

            written.append(write_render_video(self.model, result, out / names["video"][0], self.cfg.layout,
                                              overwrite=overwrite, progress=progress))
            result.timings["render"] = time.perf_counter() - t0
        # the sidecar is written last: its presence marks the video as finished (resume)
        sidecar = {"spectre_version": __version__, "video": str(result.video), "num_frames": result.num_frames,
                   "fps": result.fps, "faces": [int(f.track_id) for f in result.faces],
                   "outputs": [p.name for p in written], "timings": {k: round(v, 4) for k, v in result.timings.items()},
                   "config": to_dict(self.cfg)}
        from ..atomic import atomic_write_text

        written.append(atomic_write_text(out / f"{stem}.yaml", yaml.safe_dump(sidecar, sort_keys=False),
                                         overwrite=overwrite))
        result.outputs = written
        return written


def reconstruct(path: str | Path, output_dir: str | Path | None = None, *, backend: str | None = None,
                model: str | None = None, face: str | int | None = None, device: str | None = None,
                precision: str | None = None, layout: str | None = None, meshes: str | None = None,
                config: str | Path | ReconstructConfig | None = None, assets: str | Path | None = None,
                overwrite: bool = False) -> ReconstructionResult:
    """Reconstruct the face(s) of one video.

    Without ``output_dir`` nothing is written and no render is made; with it the ``.npz``, ARKit ``.csv``,
    the render video (``layout``, default ``grid``) and optional meshes are written there (existing
    files are only replaced with ``overwrite=True``). ``config`` is a YAML file or a
    :class:`ReconstructConfig`; keyword arguments override it. Raises :class:`~spectre.errors.SpectreError`
    subclasses with one-line messages (``NoFaceError`` when no frame has a face).
    """
    overrides = dict(backend=backend, model=model, face=None if face is None else str(face), device=device,
                     precision=precision, layout=layout, meshes=meshes, assets=None if assets is None else str(assets))
    if isinstance(config, ReconstructConfig):
        cfg = dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None}).validate()
    else:
        cfg = make_config(config, **overrides)
    if output_dir is None:
        cfg = dataclasses.replace(cfg, layout="none", meshes=None)
    rec = Reconstructor(cfg)
    try:
        result = rec.process(path)
        if output_dir is not None:
            rec.write(result, output_dir, overwrite=overwrite)
        return result
    finally:
        rec.close()


# ------------------------------------------------------------------------------------------------
def expand_inputs(items: Iterable[str | Path]) -> list[Path]:
    """Files, folders (their videos, sorted), globs, and ``.txt`` lists of paths (one per line, ``#``
    comments; relative paths are relative to the list) -> unique existing paths in order."""
    out: list[Path] = []

    def add(p: Path):
        if p not in out:
            out.append(p)

    for item in items:
        s = str(item)
        p = Path(s)
        if p.is_dir():
            vids = sorted(q for q in p.iterdir() if q.suffix.lower() in VIDEO_SUFFIXES and q.is_file())
            if not vids and any(q.suffix.lower() in IMAGE_SUFFIXES for q in p.iterdir()):
                add(p)  # a folder of frames is one image-sequence input
                continue
            if not vids:
                raise InputError(f"{p}: folder contains no video or image files ({', '.join(VIDEO_SUFFIXES)})")
            for q in vids:
                add(q)
        elif p.is_file() and p.suffix.lower() == ".txt":
            for line in p.read_text(encoding="utf-8", errors="replace").splitlines():
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                q = Path(line)
                q = q if q.is_absolute() else (p.parent / q)
                if not q.exists():
                    raise InputError(f"{p}: listed file {line} does not exist")
                add(q)
        elif p.exists():
            add(p)
        elif any(c in s for c in "*?["):
            matches = sorted(glob.glob(s, recursive=True))
            if not matches:
                raise InputError(f"no file matches {s}")
            for m in matches:
                add(Path(m))
        else:
            raise InputError(f"{s}: no such file or folder")
    return out


def unique_stems(paths: Sequence[Path]) -> list[str]:
    """Output base names: the file stem, prefixed by parent folders when two inputs share a stem."""
    original = [p.stem for p in paths]
    stems = list(original)
    for i, p in enumerate(paths):
        if original.count(p.stem) > 1:
            parts = p.with_suffix("").parts
            stems[i] = "_".join(parts[-2:])
    if len(set(stems)) < len(stems):  # still ambiguous: add the index
        stems = [f"{s}_{i}" for i, s in enumerate(stems)]
    return stems


@dataclass
class JobOutcome:
    video: str
    status: str  # ok | skipped | failed
    message: str = ""
    outputs: list[str] = field(default_factory=list)
    seconds: float = 0.0
    exit_code: int = 0


@dataclass
class BatchSummary:
    outcomes: list[JobOutcome]

    @property
    def failed(self) -> list[JobOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    @property
    def exit_code(self) -> int:
        """0 when nothing failed; a single video's own error code; 1 when several videos failed."""
        failed = self.failed
        if not failed:
            return 0
        if len(self.outcomes) == 1:
            return failed[0].exit_code or 1
        return 1

    def text(self) -> str:
        lines = [f"{self.count('ok')} done, {self.count('skipped')} skipped (already finished), "
                 f"{len(self.failed)} failed"]
        for o in self.failed:
            lines.append(f"  FAILED {o.video}: {o.message}")
        return "\n".join(lines)


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


def _same_config(output_dir: Path, stem: str, cfg_dict: dict) -> bool:
    """Whether a finished video's sidecar records the config asked for now."""
    try:
        data = yaml.safe_load((output_dir / f"{stem}.yaml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    now = yaml.safe_load(yaml.safe_dump(cfg_dict, sort_keys=False))
    return isinstance(data, dict) and data.get("config") == now


def _stale_outputs(output_dir: Path, stem: str) -> list[Path]:
    """Files under this video's output names (an unfinished earlier run's, or someone else's)."""
    pats = [f"{stem}.npz", f"{stem}_face*.npz", f"{stem}_arkit.csv", f"{stem}_face*_arkit.csv", f"{stem}.mp4",
            f"{stem}.yaml"]
    found = []
    for pat in pats:
        found += [p for p in output_dir.glob(pat) if p.is_file()]
    return found


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def guard_input(video: Path, targets: Iterable[Path]) -> None:
    """Refuse (even with --overwrite) to write an output over the input itself, e.g. the render
    ``clip.mp4`` when the output folder is the input's folder."""
    for t in targets:
        if _same_file(Path(video), t):
            raise OutputError(f"{t}: output would replace the input video; choose another output folder")


def _marker(output_dir: Path, stem: str) -> Path:
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
            return head.startswith("frame,time,valid,")
        if path.suffix == ".yaml":
            return head.startswith("spectre_version:")
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return False


def _ours(output_dir: Path, stem: str) -> set[Path]:
    """Files an earlier spectre run of this video wrote: all of them if it was interrupted while
    writing (marker present), else those its sidecar lists and result files that carry our format."""
    found = _stale_outputs(output_dir, stem)
    if _marker(output_dir, stem).exists():
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


def _check_name_length(output_dir: Path, stem: str) -> None:
    """Fail before the work when this video's longest output name (a temporary multi-face ARKit CSV)
    would not fit the file system's limit on a file name."""
    try:
        name_max = os.pathconf(output_dir, "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    longest = f".{stem}_face00_arkit.XXXXXXXX.partial.csv"
    if len(os.fsencode(longest)) > name_max:
        spare = name_max - (len(os.fsencode(longest)) - len(os.fsencode(stem)))
        raise OutputError(f"the output names for {stem[:40]}... would be too long for {output_dir} (file names "
                          f"are limited to {name_max} bytes: rename the input to at most {spare} bytes)")


def _without_prefix(message: str, video: str) -> str:
    """The reason only when the message starts with the video's own path (the summary names it)."""
    return message[len(video) + 2:] if message.startswith(f"{video}: ") else message


_WORKER: Reconstructor | None = None
_IN_JOB = False
_STOPPING = False


def _worker_stop(signum, frame):  # noqa: ARG001 - signal handler signature
    """SIGTERM from the parent: abandon the current video cleanly (temporary files removed), or leave."""
    global _STOPPING
    _STOPPING = True
    if _IN_JOB:
        raise KeyboardInterrupt
    os._exit(128 + signum)


def _worker_init(cfg_dict: dict) -> None:
    global _WORKER
    import signal

    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the parent decides
    signal.signal(signal.SIGTERM, _worker_stop)
    torch.set_num_threads(1)
    _WORKER = Reconstructor(from_dict(ReconstructConfig, cfg_dict))


def _worker_job(*args) -> JobOutcome:
    global _IN_JOB
    if _STOPPING:  # a video queued before the stop request: do not start it
        return JobOutcome(str(args[0]), "failed", "interrupted", exit_code=130)
    _IN_JOB = True
    try:
        return run_job(*args)
    finally:
        _IN_JOB = False


def _stop_pool(pool, timeout: float = 30.0) -> None:
    """Cancel pending videos and stop the running ones (SIGTERM: each worker removes its temporary files)."""
    procs = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in procs:
        if proc.is_alive():
            proc.terminate()
    for proc in procs:
        proc.join(timeout)
        if proc.is_alive():
            proc.kill()


def run_job(video: str, stem: str, output_dir: str, cfg_dict: dict, overwrite: bool,
            reconstructor: Reconstructor | None = None, progress=None) -> JobOutcome:
    """Process one video with resume semantics; never raises for a per-video failure."""
    out = Path(output_dir)
    t0 = time.perf_counter()
    try:
        _check_name_length(out, stem)
        if not overwrite and is_finished(out, stem):
            _marker(out, stem).unlink(missing_ok=True)  # stopped between the sidecar and the marker's removal
            if not _same_config(out, stem, cfg_dict):
                log.warning("%s: skipped: already finished in %s with a different config (pass --overwrite to "
                            "redo it)", video, out)
                return JobOutcome(video, "skipped", "already finished with a different config")
            return JobOutcome(video, "skipped", "already finished")
        rec = reconstructor or _WORKER
        if rec is None:
            rec = Reconstructor(from_dict(ReconstructConfig, cfg_dict))
        existing = [p for p in _stale_outputs(out, stem) if not _same_file(Path(video), p)]
        if not overwrite:
            # an earlier unfinished run's outputs are ours to redo; anybody else's file is left alone
            ours = _ours(out, stem)
            foreign = [p for p in existing if p not in ours]
            if foreign:
                raise OutputError(f"{foreign[0]} already exists and was not written by spectre for this video "
                                  "(pass --overwrite to replace it)")
            for p in existing:
                p.unlink()
        result = rec.process(video)
        marker = _marker(out, stem)
        try:
            marker.touch()
        except OSError as exc:
            raise OutputError(f"cannot write to {out}: {exc.strerror or exc} ({marker.name})") from None
        written = rec.write(result, out, stem=stem, overwrite=True,
                            progress=progress)
        marker.unlink(missing_ok=True)
        return JobOutcome(video, "ok", "", [str(p) for p in written], time.perf_counter() - t0)
    except SpectreError as exc:
        return JobOutcome(video, "failed", _without_prefix(str(exc), video), seconds=time.perf_counter() - t0,
                          exit_code=exc.exit_code)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - a bug on one video must not stop a batch; reported in the summary
        log.debug("unexpected failure on %s", video, exc_info=True)
        msg = " ".join(f"{type(exc).__name__}: {exc}".split())
        return JobOutcome(video, "failed", f"internal error ({msg})", seconds=time.perf_counter() - t0, exit_code=1)


def run_batch(inputs: Sequence[str | Path], output_dir: str | Path, config: ReconstructConfig | None = None, *,
              overwrite: bool = False, workers: int = 1, ray_address: str | None = None,
              progress: bool = False, on_done: Callable[[JobOutcome], None] | None = None) -> BatchSummary:
    """Reconstruct many videos into ``output_dir``: finished videos are skipped (unless ``overwrite``),
    unfinished ones are redone, failures are collected in the returned summary."""
    cfg = (config or ReconstructConfig()).validate()
    videos = expand_inputs(inputs)
    if not videos:
        raise InputError("no input videos given")
    out = Path(output_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output folder {out}: {exc.strerror or exc}") from None
    if not os.access(out, os.W_OK):
        raise OutputError(f"output folder {out} is not writable")
    stems = unique_stems(videos)
    cfg_dict = to_dict(cfg)
    jobs = [(str(v), s) for v, s in zip(videos, stems)]
    if ray_address:
        from .distributed import run_on_ray

        outcomes = run_on_ray(jobs, str(out), cfg_dict, overwrite, ray_address)
        for o in outcomes:
            if on_done:
                on_done(o)
        return BatchSummary(outcomes)

    outcomes: list[JobOutcome] = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), desc="videos", unit="video", position=0, dynamic_ncols=True)

    def done(o: JobOutcome):
        outcomes.append(o)
        if bar is not None:
            bar.update(1)
            bar.set_postfix_str(f"failed={sum(x.status == 'failed' for x in outcomes)}")
        if on_done:
            on_done(o)

    if workers <= 1 or len(jobs) == 1:
        rec = Reconstructor(cfg)
        try:
            # a missing or unsafe face model fails every video the same way: say it once, before any work
            if not all(is_finished(out, s) for _, s in jobs) or overwrite:
                rec.model  # noqa: B018 - loads (and checks) the face model asset
            for video, stem in jobs:
                frame_bar = None
                cb = None
                if progress:
                    from tqdm import tqdm

                    frame_bar = tqdm(desc=Path(video).name, unit="frame", position=1, leave=False, dynamic_ncols=True)
                    cb = frame_bar.update
                try:
                    done(run_job(video, stem, str(out), cfg_dict, overwrite, reconstructor=rec, progress=cb))
                finally:
                    if frame_bar is not None:
                        frame_bar.close()
        finally:
            rec.close()
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        ctx = mp.get_context("spawn")
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init,
                                   initargs=(cfg_dict,))
        try:
            futs = {pool.submit(_worker_job, v, s, str(out), cfg_dict, overwrite): v for v, s in jobs}
            for fut in as_completed(futs):
                try:
                    done(fut.result())
                except Exception as exc:  # noqa: BLE001 - a crashed worker process
                    done(JobOutcome(futs[fut], "failed", f"worker crashed ({type(exc).__name__}: {exc})", exit_code=1))
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: stop the workers, then report the interruption
            _stop_pool(pool)
            raise
        pool.shutdown(wait=True)
    if bar is not None:
        bar.close()
    order = {v: i for i, (v, _) in enumerate(jobs)}
    outcomes.sort(key=lambda o: order.get(o.video, 0))
    return BatchSummary(outcomes)
