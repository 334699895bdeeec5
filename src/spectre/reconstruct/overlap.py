"""The default job with its stages overlapped: decode -> track -> fit -> render -> encode.

Run one after another, the stages of a job cost their sum; here each runs as soon as its input exists:
the calling thread tracks (decoding runs one chunk ahead in its own thread, MediaPipe releases the
GIL), a fit thread solves each window of the track as soon as its frames are tracked (:mod:`.fit_stream`,
torch at one intra-op thread: its ops are tiny), and a video thread renders, composes and encodes the
finished frames (:mod:`.videostage`; libx264 uses its own threads). Bounded queues between them keep
memory flat: only the window of each frame (at most 512 px high by default) is kept until its fit is
done. A failure in any stage stops the others and is raised in the caller.
"""
from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..io.video import chunk_frames, open_video
from .compose import FaceRows
from .fit_stream import FitRows, StreamFit, fit_rows
from .tracked import CutSettings, TrackedParts, cut_chunk
from .videostage import VideoStage
from .window import VideoWindow

__all__ = ["run_overlapped", "Progress"]

_END = object()


class Progress:
    """Frames done per stage, reported to ``callback(n)`` as increments of their mean over the stages, so
    one bar with the video's frame count as total shows an ETA that covers every stage. Thread-safe."""

    def __init__(self, callback: Callable[[int], None] | None, stages: tuple[str, ...]):
        self.callback, self.stages = callback, stages
        self.done = dict.fromkeys(stages, 0)
        self._shown = 0
        self._lock = threading.Lock()

    def add(self, stage: str, n: int) -> None:
        if self.callback is None:
            return
        with self._lock:
            self.done[stage] += int(n)
            mean = sum(self.done.values()) // len(self.stages)
            if mean > self._shown:
                self.callback(mean - self._shown)
                self._shown = mean


class _Pipe:
    """A bounded queue whose ``put`` and ``get`` give up once the pipeline is aborted."""

    def __init__(self, abort: threading.Event, size: int):
        self.q: queue.Queue = queue.Queue(maxsize=size)
        self.abort = abort

    def put(self, item) -> None:
        while True:
            if self.abort.is_set():
                raise _Aborted()
            try:
                self.q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def get(self):
        while True:
            if self.abort.is_set():
                raise _Aborted()
            try:
                return self.q.get(timeout=0.1)
            except queue.Empty:
                continue


class _Aborted(Exception):
    """Another stage failed (or the caller stopped): leave quietly."""


def render_batch(width: int, height: int, pixels: int = 2**20) -> int:
    """Frames rendered at once: 16 at 224², 4 in a 512² window (the rasteriser's buffers grow with
    frames x pixels; this keeps them around 100 MB)."""
    return int(max(1, min(16, pixels // max(width * height, 1))))


class TrackedFrames(TrackedParts):
    """Iterate the tracked chunks (:class:`~.tracked.TrackedChunk`) of the largest face of ``path``, tracked
    in this process (decoding one chunk ahead, chunks sized by ``pipeline.chunk_mb``); each frame is cut to
    the video's window as soon as it is tracked, so only the windows are kept."""

    def __init__(self, rec, path: Path, source, window: VideoWindow | None):
        super().__init__(path, source.num_frames)
        self.rec, self.source, self.window = rec, source, window
        self._stream = None

    def __iter__(self):
        cfg = self.rec.cfg
        chunk = chunk_frames(self.source.width, self.source.height, cfg.pipeline.chunk_mb, cfg.track_chunk)
        self._stream = self.rec.tracker.stream(self.source, chunk_size=chunk)
        for fc in self._stream:
            yield self.add(*cut_chunk(fc, self.rows, self.window, cfg.crop_scale))

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()


def run_overlapped(rec, path: Path, video_path: Path | None, fitted: Callable, overwrite: bool = False,
                   progress: Callable[[int], None] | None = None) -> dict[str, float]:
    """Track, fit and (with ``video_path``) write the render video of the largest face of ``path``, all
    overlapped. As soon as the fit is done, ``fitted(tracks, track, fit)`` gets the per-frame tracks, the
    selected face track and its :class:`~.fit.TrackFit` (the caller builds the result and writes the other
    files while the video's last frames are drawn). Returns the stages' timings."""
    cfg, pc = rec.cfg, rec.cfg.pipeline
    source = open_video(path)
    model, evaluator = rec.model, rec.evaluator  # built here, not in the threads
    fitter = StreamFit(model, cfg.fit, evaluator, span=pc.identity_span, window=pc.window)
    prog = Progress(progress, ("track", "fit", "video") if video_path is not None else ("track", "fit"))
    abort = threading.Event()
    # a solved piece holds up to a window of frames: one waits while the video thread works on another
    to_fit, to_video = _Pipe(abort, 2), _Pipe(abort, 1)
    errors: list[BaseException] = []
    fits = FitRows(source.num_frames)
    timings = {"track": 0.0, "fit": 0.0, "render": 0.0}

    def guarded(fn):
        def run():
            try:
                fn()
            except _Aborted:
                pass
            except BaseException as exc:  # noqa: BLE001 - handed to the caller, which re-raises it
                errors.append(exc)
                abort.set()
        return run

    def fit_loop():
        torch.set_num_threads(1)  # per thread: the fit's ops are tiny, extra threads only spin
        held: list[tuple] = []  # (first row, window frames, to_window, crop tforms, times) not yet solved
        while True:
            item = to_fit.get()
            t0 = time.perf_counter()
            if item is _END:
                new = fitter.finish()
            else:
                row, lm, valid, p478, frames, tw, tf, times = item
                held.append((row, frames, tw, tf, times))
                new = fitter.push(lm, valid, p478)
            timings["fit"] += time.perf_counter() - t0
            for piece in new:
                fits.add(piece)
                prog.add("fit", piece.stop - piece.start)
                if stage is not None:
                    for a in range(piece.start, piece.stop, 32):  # small items: less memory in flight
                        to_video.put(_rows_for_video(piece, a, min(a + 32, piece.stop), held, fitter))
            if stage is not None:
                held = [h for h in held if h[0] + len(h[1]) > fitter.done]
            if item is _END:
                if stage is not None:
                    to_video.put(_END)
                return

    def video_loop():
        torch.set_num_threads(1)
        w, h = window.size
        batch = render_batch(w, h)
        while True:
            item = to_video.get()
            if item is _END:
                return
            t0 = time.perf_counter()
            frames, tw, face, times = item
            for a in range(0, len(frames), batch):
                sl = slice(a, a + batch)
                part = FaceRows({k: v[sl] for k, v in face.params.items()}, face.cam[sl], face.crop_tform[sl],
                                face.valid[sl])
                stage.write(frames[sl], [part], tw[sl], times[sl])
                prog.add("video", len(frames[sl]))
            timings["render"] += time.perf_counter() - t0

    threads = [threading.Thread(target=guarded(fit_loop), name="spectre-fit", daemon=True)]
    if video_path is not None:
        threads.append(threading.Thread(target=guarded(video_loop), name="spectre-video", daemon=True))
    window = stage = None
    if video_path is not None:  # creates the temporary video file: the handler below removes it on any exit
        window = CutSettings.of(cfg, video=True).window(source.width, source.height)
        stage = VideoStage(model, cfg.layout, window, video_path, source.fps,
                           audio_from=path if getattr(source, "has_audio", False) else None, overwrite=overwrite,
                           colours=cfg.render_colours)
    tracked = rec.tracked_frames(path, source, window)
    try:
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for ch in tracked:
            prog.add("track", ch.n)
            if errors:
                break
            to_fit.put((ch.row, ch.lm, ch.valid, ch.p478, ch.frames, ch.tw, ch.tf, ch.times))
        timings["track"] = time.perf_counter() - t0
        tracked.check_faces()
        to_fit.put(_END)
        for i, t in enumerate(threads):  # the fit's thread first
            while t.is_alive() and not errors:
                t.join(timeout=0.2)
            if errors:
                raise errors[0]
            if i == 0:
                fitted(*tracked.result(), fits.fit())
    except BaseException as exc:
        abort.set()
        tracked.close()  # MediaPipe's graphs and the decoder thread stop here, not at interpreter exit
        for t in threads:  # they stop at their next queue operation; the writer is theirs until then
            if t.ident is not None:
                t.join(timeout=60)
        err = errors[0] if isinstance(exc, _Aborted) and errors else exc
        if stage is not None:
            stage.abort(err)
        if err is exc:
            raise
        raise err from None
    if stage is not None:
        stage.close()
    return timings


def _rows_for_video(piece, start: int, stop: int, held: list[tuple], fitter: StreamFit):
    """The window frames, transforms and camera of rows ``start:stop`` of a solved piece (from the chunks
    still held)."""
    frames, tws, tfs, times = [], [], [], []
    for row, f, tw, tf, ts in held:
        a, b = max(start, row), min(stop, row + len(f))
        if a < b:
            frames.append(f[a - row:b - row])
            tws.append(tw[a - row:b - row])
            tfs.append(tf[a - row:b - row])
            times.append(ts[a - row:b - row])
    frames, tw, tf, times = (np.concatenate(x) for x in (frames, tws, tfs, times))
    valid = np.asarray(fitter._valid[start:stop], bool)
    fit = fit_rows(piece.fit, slice(start - piece.start, stop - piece.start))
    face = FaceRows(fit.params, fit.cam_in_crop(tf), tf, valid)
    return frames, tw, face, times
