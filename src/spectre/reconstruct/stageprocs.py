"""The overlapped job with its stages in processes (the command line's default).

As threads of one process (:mod:`.overlap`) the fit and the video stage are many small torch ops that
take turns on one GIL. Here the calling process decodes and tracks (PyAV and MediaPipe, mostly without
the GIL) and fits in a thread, while the video (render, compose, encode) runs in its own process, started
by the command line before it imports torch (:mod:`.stagespawn`), else when the
:class:`~.reconstructor.Reconstructor` starts its first such job, and reused for every job:

    parent: track -> window ------------------ frames' windows ---> video process
                  `-> fit thread -> posing thread --- posed faces ---/

When the command line tracks in a process of its own (:mod:`.trackproc`) and gave it the video process's
frame queue, the windows go from there straight to the video process and the parent gets the landmarks.

The posing thread evaluates the face model for each solved run of frames and sends the posed vertices with
their maps to the window (:func:`.videostage.posed_rows`), so the video process needs neither the model
nor, with the compiled rasteriser, torch. The queue into the child is bounded (a slow video holds the
tracker back); the video process reads ahead at most ``HOLD_MB`` of windows. A failure in a child is
raised in the parent with its own type and message; when a job stops early the children stop it too and
remove their temporary files; children leave when the parent closes them or dies. Processes are started
with ``spawn`` (Linux and macOS alike).
"""
from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..config import to_dict
from ..io.video import open_video
from ..render.fast_shape import video_light_table
from .childerrors import StageProcessError
from .compose import FaceRows
from .fit_stream import FitRows, StreamFit, fit_rows
from .overlap import Progress, render_batch
from .stagespawn import INBOX, SpawnedStages
from .tracked import CutSettings
from .videostage import posed_rows, video_tint

__all__ = ["StageProcesses", "StageProcessError", "run_in_processes"]

POLL_S = 0.1


class StageProcesses:
    """The stage processes (``roles``: ``video``), started at once, reused job after job."""

    def __init__(self, cfg, roles: tuple[str, ...] = ("video",), spawned: SpawnedStages | None = None):
        """``spawned``: processes started earlier (:mod:`.stagespawn`, by the command line before it imported
        torch), used when they have these roles and run, else closed and replaced."""
        if spawned is not None and (spawned.roles != tuple(roles) or spawned.configured or not spawned.alive()):
            spawned.close()
            spawned = None
        self.spawned = spawned if spawned is not None else SpawnedStages(roles)
        self.outbox, self.abort, self.inbox, self.procs = (self.spawned.outbox, self.spawned.abort,
                                                          self.spawned.inbox, self.spawned.procs)
        self.frames = self.spawned.frames  # the video process's frame queue (a tracking process writes it)
        self.spawned.configure(to_dict(cfg))
        self.ready: set[str] = set()
        self.job = 0
        self.running: set[str] = set()  # children still working on the current job
        self.tmp: Path | None = None

    @property
    def video(self) -> bool:
        return "video" in self.procs

    def alive(self) -> bool:
        return all(p.is_alive() for p in self.procs.values())

    def _check_alive(self) -> None:
        for role, p in self.procs.items():
            if not p.is_alive():
                raise StageProcessError(f"the {role} stage process ended unexpectedly (exit code {p.exitcode})")

    def receive(self, handle: Callable[[tuple], None], timeout: float = 0.0) -> bool:
        """Handle the children's messages (``timeout``: wait that long for the first); a child's error is
        raised here. Returns whether a message came."""
        got = False
        while True:
            try:
                msg = self.outbox.get(timeout=timeout) if timeout and not got else self.outbox.get_nowait()
            except queue.Empty:
                if not got:
                    self._check_alive()
                return got
            got = True
            kind = msg[0]
            if kind == "ready":
                self.ready.add(msg[1])
                continue
            if msg[1] not in (-1, self.job):
                continue  # left over from an earlier, stopped job
            if kind in ("done", "error", "aborted"):
                self.running.discard(msg[2])
            if kind == "error":
                raise msg[3]
            if kind == "tmp":
                self.tmp = Path(msg[2])
            else:
                handle(msg)

    def send(self, role: str, item, handle: Callable[[tuple], None]) -> None:
        """Put ``item`` into a child's bounded inbox, handling messages while it is full."""
        box = self.inbox[role]
        while True:
            try:
                box.put(item, timeout=POLL_S)
                return
            except queue.Full:
                self.receive(handle)

    def start_job(self, video: dict | None) -> int:
        self.job += 1
        self.tmp = None
        self.running = set()
        if video is not None and "video" in self.procs:
            self.running.add("video")
            self.inbox["video"].put(("job", self.job, video))
        return self.job

    def stop_job(self, timeout: float = 30.0) -> None:
        """Stop the current job in the children still running it and wait until they have cleaned up (a
        child that does not answer in time is ended); remove a temporary video file left behind."""
        self.abort.value = self.job
        deadline = time.monotonic() + timeout
        while self.running and time.monotonic() < deadline and self.alive():
            try:
                self.receive(lambda msg: None, timeout=POLL_S)
            except BaseException:  # noqa: BLE001 - a child's error while stopping: the first error is raised
                pass
        if self.running:
            self.close(timeout=5.0)
        if self.tmp is not None:
            self.tmp.unlink(missing_ok=True)
            self.tmp = None

    def close(self, timeout: float = 10.0) -> None:
        """Stop the children (asked first, then ended) and wait for them."""
        self.spawned.close(timeout)


class _StageThread:
    """A stage of this process in a thread of its own: items come through ``q``; an error is kept for the
    caller (``check``), ``close`` stops it."""

    name = "spectre-stage"

    def __init__(self, size: int = 0):
        self.q: queue.Queue = queue.Queue(size)
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.busy = 0.0
        self.thread = threading.Thread(target=self._guarded, name=self.name, daemon=True)
        self.thread.start()

    def _guarded(self) -> None:
        torch.set_num_threads(1)  # per thread: these ops are small, extra threads only spin
        try:
            self._run()
        except _Stopped:
            pass
        except BaseException as exc:  # noqa: BLE001 - raised in the caller
            self.error = exc

    def _run(self) -> None:
        raise NotImplementedError

    def check(self) -> None:
        if self.error is not None:
            raise self.error

    @property
    def running(self) -> bool:
        self.check()
        return self.thread.is_alive()

    def close(self) -> None:
        self.stop.set()
        try:
            self.q.put_nowait(None)
        except queue.Full:
            pass
        self.thread.join(timeout=60)


class _FitThread(_StageThread):
    """The fit in a thread of this process: tracking runs in another process (or mostly in MediaPipe and
    PyAV without the GIL), so the fit shares this process with little. Solved pieces go to ``handle``, then
    ``("fit-end", job)``."""

    name = "spectre-fit"

    def __init__(self, rec, span: int, window: int, job: int, handle: Callable[[tuple], None]):
        self.rec, self.span, self.window, self.job, self.handle = rec, span, window, job, handle
        super().__init__(INBOX)

    def _run(self) -> None:
        # built here (the evaluator takes a moment), while the caller starts tracking
        fitter = StreamFit(self.rec.model, self.rec.cfg.fit, self.rec.evaluator, span=self.span, window=self.window)
        while True:
            item = self.q.get()
            if item is None or self.stop.is_set():
                return
            t0 = time.perf_counter()
            end = item[0] == "end"
            pieces = fitter.finish() if end else fitter.push(*item[2:5])
            self.busy += time.perf_counter() - t0
            for piece in pieces:
                self.handle(("piece", self.job, piece))
                self.handle(("progress", self.job, "fit", piece.stop - piece.start))
            if end:
                self.handle(("fit-end", self.job))
                return

    def put(self, item, receive: Callable[[], None]) -> None:
        while True:
            self.check()
            try:
                self.q.put(item, timeout=POLL_S)
                return
            except queue.Full:
                receive()


class _Posing(_StageThread):
    """A thread that poses the face of each solved piece for the video process: the model's vertices and
    each frame's map to the window (:func:`.videostage.posed_rows`), 32 frames a message. Torch's matmuls
    release the GIL, so it runs beside the fit thread."""

    name = "spectre-pose"

    def __init__(self, rec, box, job: int):
        self.model, self.box, self.job = rec.model, box, job
        self.rows: list[tuple] = []  # (first row, to_window, crop tforms, valid) of each tracked chunk
        super().__init__()

    def add_chunk(self, ch) -> None:
        """A tracked chunk's window maps, crop transforms and valid rows (before its frames are fitted)."""
        self.rows.append((ch.row, ch.tw, ch.tf, np.asarray(ch.valid, bool)))

    def _slice(self, start: int, stop: int):
        parts = [(r, tw, tf, ok) for r, tw, tf, ok in self.rows if r < stop and r + len(ok) > start]
        pick = lambda k: np.concatenate([p[k][max(start - p[0], 0):stop - p[0]] for p in parts])  # noqa: E731
        self.rows = [p for p in self.rows if p[0] + len(p[3]) > start]  # pieces come in order
        return pick(1), pick(2), pick(3)

    def _put(self, item) -> None:
        while not self.stop.is_set():
            try:
                self.box.put(item, timeout=POLL_S)
                return
            except queue.Full:
                continue
        raise _Stopped()

    def _run(self) -> None:
        while True:
            item = self.q.get()
            if item is None or self.stop.is_set():
                return
            if item[0] == "fit-end":
                self._put(("fit-end", self.job))
                return
            piece = item[2]
            t0 = time.perf_counter()
            for a in range(piece.start, piece.stop, 32):
                b = min(a + 32, piece.stop)
                tw, tf, valid = self._slice(a, b)
                fit = fit_rows(piece.fit, slice(a - piece.start, b - piece.start))
                rows, verts, affine = posed_rows(self.model, FaceRows(fit.params, fit.cam_in_crop(tf), tf, valid), tw)
                self._put(("posed", self.job, a, b - a, rows, verts, affine))
            self.busy += time.perf_counter() - t0


class _Stopped(Exception):
    """The job stops (another stage failed, or the caller was interrupted)."""


def run_in_processes(rec, procs: StageProcesses, path: Path, video_path: Path | None, fitted: Callable,
                     overwrite: bool = False, progress: Callable[[int], None] | None = None) -> dict[str, float]:
    """As :func:`.overlap.run_overlapped`, with the video in ``procs``: ``fitted`` runs here while the video
    process draws the last frames. Returns the stages' timings."""
    cfg, pc = rec.cfg, rec.cfg.pipeline
    source = open_video(path)
    window = None
    video = None
    if video_path is not None:
        window = CutSettings.of(cfg, video=True).window(source.width, source.height)
        video = {"layout": cfg.layout, "window": window, "path": str(video_path), "fps": float(source.fps),
                 "audio_from": str(path) if getattr(source, "has_audio", False) else None, "overwrite": overwrite,
                 "batch": render_batch(*window.size), "faces": rec.model.render_faces().numpy(),
                 "light": video_light_table(), "tint": video_tint(rec.model, cfg.render_colours)}
    prog = Progress(progress, ("track", "fit", "video") if video is not None else ("track", "fit"))
    fits = FitRows(source.num_frames)
    timings = {"track": 0.0}
    tracked = rec.tracked_frames(path, source, window, frames_to=procs.frames if video is not None else None)
    frames_from = getattr(tracked, "frames_token", None)  # the windows go straight to the video process
    if frames_from is not None:
        video["frames_from"] = frames_from
    procs.start_job(video)
    posing = _Posing(rec, procs.inbox["video"], procs.job) if video is not None else None

    def handle(msg: tuple) -> None:
        kind = msg[0]
        if kind == "piece":
            fits.add(msg[2])
        elif kind == "progress":
            prog.add(msg[2], msg[3])
        elif kind == "done":  # CPU seconds of the child's job
            timings["render"] = msg[3]
        if posing is not None and kind in ("piece", "fit-end"):
            posing.q.put(msg)

    fitting = _FitThread(rec, pc.identity_span, pc.window, procs.job, handle)
    try:
        t0 = time.perf_counter()
        for ch in tracked:
            if posing is not None:
                posing.add_chunk(ch)
            fitting.put(("chunk", procs.job, ch.lm, ch.valid, ch.p478), lambda: procs.receive(handle))
            if video is not None and frames_from is None:
                procs.send("video", ("frames", procs.job, ch.row, ch.frames, ch.times), handle)
            prog.add("track", ch.n)
            procs.receive(handle)
            if posing is not None:
                posing.check()
        timings["track"] = time.perf_counter() - t0
        tracked.check_faces()
        fitting.put(("end", procs.job), lambda: procs.receive(handle))
        if video is not None:
            procs.send("video", ("frames-end", procs.job, tracked.rows), handle)
        while fitting.running or (posing is not None and posing.running):
            procs.receive(handle, timeout=POLL_S)
        timings["fit"] = fitting.busy
        if posing is not None:
            timings["pose"] = posing.busy
        fitted(*tracked.result(), fits.fit())
        while procs.running:
            procs.receive(handle, timeout=POLL_S)
        tracked.close()  # a tracking process that sent the video its windows has left by now
    except BaseException:
        tracked.close()  # MediaPipe's graphs and the decoder thread stop here, not at interpreter exit
        fitting.close()
        if posing is not None:
            posing.close()
        procs.stop_job()
        raise
    return timings
