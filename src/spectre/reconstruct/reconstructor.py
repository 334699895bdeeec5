"""The one-video API: :class:`Reconstructor` holds the heavy objects (tracker, face model, networks) and
runs video -> face tracks -> backend (``fit`` | ``learned``) -> ARKit weights -> files;
:func:`reconstruct` is the public function over it.

All outputs are written atomically; the sidecar ``<stem>.yaml`` (the resolved config plus the list of
outputs) is written last, so its presence marks the video as finished (:mod:`.resume`).
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import yaml

from .. import __version__
from ..assets import AssetStore
from ..atomic import atomic_write_text
from ..config import to_dict
from ..device import Runtime
from ..errors import NoFaceError, OutputError, SpectreError
from ..faces.crop import face_crop_transform, interpolate_landmarks
from ..faces.track import FaceTracker, select_faces
from ..io.livelink import save_livelink_csv
from ..io.results import FaceResult, save_arkit_csv, save_face_npz
from ..io.video import open_video
from ..models import ARKIT_MODEL, load_face_model
from .animation import frame_times, livelink_angles, write_head_glb
from .arkit import LandmarkArkitSolver, arkit_weights, expression_labels
from .config import ReconstructConfig, make_config
from .encoder_backend import EncoderBackend
from .evaluator import PointEvaluator
from .fit import TrackFit, fit_track
from .learned import LearnedBackend
from .outputs import write_meshes
from .overlap import TrackedFrames, run_overlapped
from .result import ReconstructionResult
from .resume import guard_input, output_names, source_identity
from .stageprocs import StageProcesses, run_in_processes
from .stagespawn import SpawnedStages, clip_uses_processes
from .tracked import CutSettings
from .trackproc import TrackProcess
from .videostage import write_video
from .window import VideoWindow

__all__ = ["Reconstructor", "reconstruct"]


class Reconstructor:
    """Holds the heavy objects (tracker, face model, networks) so many videos reuse them."""

    def __init__(self, config: ReconstructConfig | None = None, processes: bool = False):
        """``processes``: overlapped jobs render their video in a process of its own (:mod:`.stageprocs`,
        spawned by :meth:`start_processes` or the first job; the command line's default), else in a thread
        of this process (:mod:`.overlap`; no ``if __name__ == "__main__"`` guard needed in a script)."""
        self.cfg = (config or ReconstructConfig()).validate()
        self.processes = processes
        self._procs: StageProcesses | None = None
        self.store = AssetStore(self.cfg.assets)
        self.runtime = Runtime.create(self.cfg.device, self.cfg.precision)
        self._model = None
        self._evaluator = None
        self._learned = None
        self._tracker = None
        self._arkit = None
        #: tracking started before this object (the command line tracks its first video in a process of its
        #: own while torch loads): a :class:`~.trackproc.TrackProcess` (:meth:`tracked_frames`)
        self.track_ahead: TrackProcess | None = None
        #: stage processes started before this object (:mod:`.stagespawn`; the command line starts them
        #: before it imports torch), used by :meth:`start_processes` when their roles match
        self.spawned_stages: SpawnedStages | None = None

    # -- lazily built parts
    @property
    def model(self):
        if self._model is None:
            # the landmark fit is small and latency-bound: it runs on the CPU unless asked otherwise
            self._model = load_face_model(self.cfg.model, self.store).eval()
        return self._model

    @property
    def evaluator(self):
        if self._evaluator is None:
            self._evaluator = PointEvaluator(self.model, dense=self.cfg.fit.dense_face > 0)
        return self._evaluator

    @property
    def tracker(self):
        if self._tracker is None:
            self._tracker = FaceTracker()
        return self._tracker

    def tracked_frames(self, path: Path, source, window: VideoWindow | None, frames_to=None):
        """The overlapped job's tracked chunks of ``path``: from :attr:`track_ahead` when it is a tracking
        process started for this video with this job's settings (:mod:`.trackproc`) that sends its windows
        where this job's video reads them (``frames_to``: the video process's frame queue), else tracked
        here."""
        early = self.track_ahead
        if isinstance(early, TrackProcess):
            self.track_ahead = None
            if early.matches(path, CutSettings.of(self.cfg, video=window is not None), frames_to):
                return early.take(source.num_frames)
            early.close()
        return TrackedFrames(self, path, source, window)

    @property
    def process_roles(self) -> tuple[str, ...]:
        """The stages its jobs run in processes (with ``processes`` and overlapped jobs that write a video):
        the video (render, compose, encode); the fit shares this process with tracking, which runs in a
        process of its own or mostly without the GIL (docs/performance.md)."""
        if not (self.processes and self.overlapped and self.cfg.layout != "none"):
            return ()
        return ("video",)

    def uses_processes(self, path: str | Path) -> bool:
        """Whether the job of ``path`` runs its stages in processes: with ``processes``, overlapped stages
        and a clip longer than the fit's first window (:func:`.stagespawn.clip_uses_processes`)."""
        if not self.process_roles:
            return False
        try:
            n = open_video(path, warn_fps=False).num_frames
        except SpectreError:
            return True  # the job reports the error
        return clip_uses_processes(n, min(self.cfg.pipeline.identity_span, self.cfg.pipeline.window))

    def start_processes(self) -> None:
        """Spawn the stage processes now (they start up while this process loads the model and tracks),
        unless they run already."""
        if self._procs is None or not self._procs.alive():
            if self._procs is not None:
                self._procs.close()
            spawned, self.spawned_stages = self.spawned_stages, None
            self._procs = StageProcesses(self.cfg, roles=self.process_roles, spawned=spawned)

    def close(self) -> None:
        if self.track_ahead is not None:
            self.track_ahead.close()
            self.track_ahead = None
        if self.spawned_stages is not None:
            self.spawned_stages.close()
            self.spawned_stages = None
        if self._procs is not None:
            self._procs.close()
            self._procs = None
        if self._tracker is not None:
            self._tracker.close()
            self._tracker = None

    # -- stages
    def track(self, path: Path):
        source = open_video(path)
        tracks = self.tracker.track(source, chunk_size=self.cfg.track_chunk, chunk_mb=self.cfg.pipeline.chunk_mb)
        face = self.cfg.face if self.cfg.face in ("largest", "all") else int(self.cfg.face)
        tracks = select_faces(tracks, face)
        usable = {tid: t for tid, t in tracks.tracks.items() if np.asarray(t.valid).any()}
        if not usable:
            raise NoFaceError(f"{path}: no face found in any of its {len(tracks.indices)} frames")
        tracks.tracks = usable
        return source, tracks

    def arkit_weights(self, params: dict[str, np.ndarray]) -> np.ndarray:
        if self.model.arkit_names is None and self._arkit is None:
            # the model has no ARKit blendshapes: fit the reference model's to its landmark motion
            self._arkit = LandmarkArkitSolver(load_face_model(ARKIT_MODEL))
        return arkit_weights(self.model, params, self._arkit)

    def fit_face(self, track, tracks) -> FaceResult:
        valid = np.asarray(track.valid, bool)
        lm = np.asarray(track.landmarks68, np.float64)
        fit = fit_track(self.model, np.nan_to_num(lm), valid, self.cfg.fit, evaluator=self.evaluator,
                        points478=getattr(track, "points478", None))
        return self.face_from_fit(track, tracks, fit)

    def face_from_fit(self, track, tracks, fit: TrackFit) -> FaceResult:
        """The :class:`FaceResult` of a fitted track (crop transforms and crop camera per frame)."""
        valid = np.asarray(track.valid, bool)
        lm = np.asarray(track.landmarks68, np.float64)
        filled = interpolate_landmarks(np.where(valid[:, None, None], lm, np.nan))
        tforms = face_crop_transform(filled, scale=self.cfg.crop_scale)
        params = dict(fit.params)
        return FaceResult(
            track_id=int(track.track_id), model=self.cfg.model, backend="fit", params=params,
            cam=fit.cam_in_crop(tforms), crop_tform=tforms, landmarks2d=fit.landmarks2d,
            landmarks3d=fit.landmarks3d, valid=valid, frame_index=np.asarray(tracks.indices),
            timestamps=np.asarray(tracks.pts_seconds), tracked68=np.asarray(track.landmarks68, np.float32),
            points478=np.asarray(track.points478, np.float32),
            expression_names=expression_labels(self.model),
            extras={"fit_loss": fit.final_loss, "evaluator": fit.evaluator})

    def learned_face(self, source, track, tracks) -> FaceResult:
        if self._learned is None:
            if self.cfg.uses_face_encoder:
                # a trained face encoder: --weights, else the installed '<model>-encoder' asset
                weights = self.cfg.learned.weights or self.store.path(f"{self.cfg.model}-encoder")
                self._learned = EncoderBackend(self.model, weights, self.runtime, self.cfg.learned, self.cfg.fit,
                                               self.evaluator, crop_scale=self.cfg.crop_scale)
            else:
                self._learned = LearnedBackend(self.model, self.store, self.runtime, self.cfg.learned,
                                               crop_scale=self.cfg.crop_scale)
        return self._learned.run(source, track, tracks)

    @property
    def overlapped(self) -> bool:
        """Whether jobs run with overlapped stages (:mod:`.overlap`): the fit backend on the largest face."""
        return self.cfg.pipeline.overlap and self.cfg.backend == "fit" and self.cfg.face == "largest"

    def _run_overlapped(self, path: Path, video: Path | None, overwrite: bool, progress,
                        fitted: Callable[[ReconstructionResult], None] | None = None) -> ReconstructionResult:
        """``fitted(result)`` is called as soon as the fit is done, while the video may still be drawn."""
        t0 = time.perf_counter()
        made: list[ReconstructionResult] = []

        def done_fitting(tracks, track, fit) -> None:
            face = self.face_from_fit(track, tracks, fit)
            if self.cfg.arkit:
                face.arkit = self.arkit_weights(face.params)
            made.append(ReconstructionResult(video=path, fps=float(tracks.fps), width=int(tracks.width),
                                             height=int(tracks.height), num_frames=int(len(tracks.indices)),
                                             faces=[face], config=self.cfg, timings={}))
            if fitted is not None:
                fitted(made[0])

        if self.uses_processes(path):
            self.start_processes()
            timings = run_in_processes(self, self._procs, path, video, done_fitting, overwrite=overwrite,
                                       progress=progress)
        else:
            timings = run_overlapped(self, path, video, done_fitting, overwrite=overwrite, progress=progress)
        result = made[0]
        result.timings.update({k: v for k, v in timings.items() if v})
        result.timings["total"] = time.perf_counter() - t0
        return result

    def run(self, path: str | Path, output_dir: str | Path, stem: str | None = None, overwrite: bool = False,
            progress: Callable[[int], None] | None = None) -> ReconstructionResult:
        """Reconstruct one video and write its files: with overlapped stages where :attr:`overlapped`
        (the video is made while the video is tracked; the other files are written while its last frames
        are drawn), else :meth:`process` then :meth:`write`.
        ``progress(n)``: frames done, averaged over the stages (total: the video's frame count)."""
        path = Path(path)
        if not self.overlapped:
            result = self.process(path)
            self.write(result, output_dir, stem=stem, overwrite=overwrite, progress=progress)
            return result
        out = self._output_dir(output_dir)
        stem = stem or path.stem
        names = output_names(path, stem, [0], self.cfg)
        guard_input(path, [out / n for group in names.values() for n in group] + [out / f"{stem}.yaml"])
        video = out / names["video"][0] if names["video"] else None
        written: list[Path] = []
        result = self._run_overlapped(path, video, overwrite, progress,
                                      fitted=lambda r: written.extend(self._write_faces(r, out, stem, overwrite)))
        self._write_rest(result, out, stem, overwrite, written, video=video)
        return result

    def process(self, path: str | Path) -> ReconstructionResult:
        """Track and reconstruct one video (no files written)."""
        path = Path(path)
        if self.overlapped:
            return self._run_overlapped(path, None, False, None)
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
    @staticmethod
    def _output_dir(output_dir: str | Path) -> Path:
        out = Path(output_dir)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create output folder {out}: {exc.strerror or exc}") from None
        return out

    def write(self, result: ReconstructionResult, output_dir: str | Path, stem: str | None = None,
              overwrite: bool = False, progress: Callable[[int], None] | None = None,
              video: Path | None = None) -> list[Path]:
        """Write the files of a result (``video``: the render video, when already written)."""
        out = self._output_dir(output_dir)
        stem = stem or result.video.stem
        written = self._write_faces(result, out, stem, overwrite)
        return self._write_rest(result, out, stem, overwrite, written, progress=progress, video=video)

    def _write_faces(self, result: ReconstructionResult, out: Path, stem: str, overwrite: bool) -> list[Path]:
        """The per-face files: parameters, ARKit curves, meshes."""
        names = output_names(result.video, stem, [f.track_id for f in result.faces], self.cfg)
        guard_input(result.video, [out / n for group in names.values() for n in group] + [out / f"{stem}.yaml"])
        written: list[Path] = []
        cfg_yaml = self.cfg.to_yaml()
        t0 = time.perf_counter()
        for i, face in enumerate(result.faces):
            written.append(save_face_npz(out / names["npz"][i], face, video=str(result.video), fps=result.fps,
                                         width=result.width, height=result.height, config_yaml=cfg_yaml,
                                         version=__version__, overwrite=overwrite))
            if names["csv"]:
                written.append(save_arkit_csv(out / names["csv"][i], face, overwrite=overwrite))
            if names["livelink"]:
                angles = livelink_angles(self.model, face, result.width, result.height)
                written.append(save_livelink_csv(out / names["livelink"][i], frame_times(face, result.fps) +
                                                 float(np.asarray(face.timestamps)[0]), face.arkit, angles,
                                                 overwrite=overwrite))
        result.timings["write"] = time.perf_counter() - t0
        if self.cfg.meshes:
            t0 = time.perf_counter()
            if self.cfg.meshes == "glb":  # one animated scene: a head node per face track
                written.append(write_head_glb(out / names["meshes"][0], self.model, result.faces, width=result.width,
                                              height=result.height, fps=result.fps, video=str(result.video),
                                              overwrite=overwrite))
            else:
                for i, face in enumerate(result.faces):
                    written.append(write_meshes(self.model, face, out / names["meshes"][i], self.cfg.meshes,
                                                overwrite))
            result.timings["meshes"] = time.perf_counter() - t0
        return written

    def _write_rest(self, result: ReconstructionResult, out: Path, stem: str, overwrite: bool, written: list[Path],
                    progress: Callable[[int], None] | None = None, video: Path | None = None) -> list[Path]:
        """The render video (unless ``video`` was written already), then the sidecar."""
        if self.cfg.layout != "none" and video is not None:
            written.append(Path(video))
        elif self.cfg.layout != "none":
            names = output_names(result.video, stem, [f.track_id for f in result.faces], self.cfg)
            t0 = time.perf_counter()
            written.append(write_video(self.model, result, out / names["video"][0], self.cfg.layout,
                                       self.cfg.video_frame, self.cfg.video_height, overwrite=overwrite,
                                       progress=progress, colours=self.cfg.render_colours))
            result.timings["render"] = time.perf_counter() - t0
        # the sidecar is written last: its presence marks the video as finished (resume)
        sidecar = {"spectre_version": __version__, "video": str(result.video), "source": source_identity(result.video),
                   "num_frames": result.num_frames,
                   "fps": result.fps, "faces": [int(f.track_id) for f in result.faces],
                   "outputs": [p.name for p in written], "timings": {k: round(v, 4) for k, v in result.timings.items()},
                   "config": to_dict(self.cfg)}
        written.append(atomic_write_text(out / f"{stem}.yaml", yaml.safe_dump(sidecar, sort_keys=False),
                                         overwrite=overwrite))
        result.outputs = written
        return written


def reconstruct(path: str | Path, output_dir: str | Path | None = None, *, backend: str | None = None,
                model: str | None = None, face: str | int | None = None, device: str | None = None,
                precision: str | None = None, layout: str | None = None, render_colours: str | None = None,
                meshes: str | None = None, arkit_format: str | None = None,
                config: str | Path | ReconstructConfig | None = None, assets: str | Path | None = None,
                overwrite: bool = False) -> ReconstructionResult:
    """Reconstruct the face(s) of one video.

    Without ``output_dir`` nothing is written and no render is made; with it the ``.npz``, ARKit ``.csv``
    (``arkit_format``: ``csv``, ``livelink`` for the Live Link Face layout, or ``both``), the render video
    (``layout``: ``grid`` (default), ``overlay``, ``render``, ``none``; ``render_colours``: ``tinted``
    (default) or the official ``grey``) and optional meshes (``meshes``: ``obj``, ``ply`` or ``glb``, an
    animated head scene for Blender/Unreal) are written there; existing files are only replaced with
    ``overwrite=True``. ``backend`` is ``fit`` (default) or ``learned``,
    ``model`` ``ict`` or ``flame``, ``face`` ``largest`` (default), ``all`` or a track id, ``device``
    ``auto``/``cpu``/``cuda``/``mps``. ``config`` is a YAML file or a :class:`ReconstructConfig`; keyword
    arguments override it.

    Returns a :class:`ReconstructionResult`: ``result.arkit`` (T, 52) with ``result.arkit_names``, and per
    face ``result.faces[i]`` the parameters, camera, landmarks and timestamps. Raises
    :class:`~spectre.errors.SpectreError` subclasses with one-line messages (``NoFaceError`` when no frame
    has a face).
    """
    overrides = dict(backend=backend, model=model, face=None if face is None else str(face), device=device,
                     precision=precision, layout=layout, render_colours=render_colours, meshes=meshes,
                     arkit_format=arkit_format, assets=None if assets is None else str(assets))
    if isinstance(config, ReconstructConfig):
        cfg = dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None}).validate()
    else:
        cfg = make_config(config, **overrides)
    if output_dir is None:
        cfg = dataclasses.replace(cfg, layout="none", meshes=None)
    rec = Reconstructor(cfg)
    try:
        if output_dir is not None:
            return rec.run(path, output_dir, overwrite=overwrite)
        return rec.process(path)
    finally:
        rec.close()
