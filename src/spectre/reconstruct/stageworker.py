"""The child side of :mod:`.stageprocs`: the video stage (render, compose, encode) of the overlapped job in a
process of its own, one job after another, with its own interpreter (and GIL).

It needs no face model and, with the compiled rasteriser (the ``fast`` extra), no torch: the job sends,
with each run of fitted frames, the posed vertices and the map to the window's pixels
(:func:`.videostage.posed_rows`); the process draws them into the frames it composes with the windows of
the input (:func:`.compose.compose_posed`) and encodes.

Messages (tuples, the first item names them) arrive on the process's inbox, the first being
``("config", cfg_dict)`` (:mod:`.stagespawn` starts the process before its configuration is known); a job
whose windows come from the tracking process (``frames_from``: its token) reads them from the process's
frame queue as well (:mod:`.trackproc`);
everything it reports goes to the parent's outbox: ``("ready", role)``, then per job
``("progress", job, stage, n)``, ``("tmp", job, path)`` (its temporary file, removed by the parent should
this process die), ``("done", job, role, busy_seconds)``, ``("error", job, role, exc)`` or
``("aborted", job, role)``. A job stops early when the shared ``abort`` value holds its id. The process
leaves on ``("stop",)`` or when its parent is gone.
"""
from __future__ import annotations

import multiprocessing as mp
import multiprocessing.connection
import os
import queue
import time

import numpy as np

from ..collector import imports_kept
from ..io.writer import EncoderThread
from ..raster_kernels import warm_up
from .childerrors import child_signals, only_read, picklable
from .compose import compose_posed, open_video_writer

__all__ = ["serve"]

POLL_S = 0.1


class _Stopped(Exception):
    """The job was aborted by the parent, or the parent is gone."""


class _Channel:
    """This process's inbox, its frame queue (read during a job whose windows come from the tracking
    process whose token is :attr:`frames_from`, until that process's last message there) and the queues it
    writes to, with the job's abort flag checked while waiting."""

    def __init__(self, inbox, outbox, abort, frames=None):
        self.inbox, self.outbox, self.abort, self.frames = inbox, outbox, abort, frames
        self.job = -1
        self.frames_from: str | None = None
        self.parent = mp.parent_process()
        only_read(inbox)  # a parent killed while it writes frames is an end of file here, not a hang
        if frames is not None:
            only_read(frames)  # and a tracking process killed while it writes frames

    def alive(self) -> bool:
        return self.parent is None or self.parent.is_alive()

    def check(self) -> None:
        if self.abort.value == self.job or not self.alive():
            raise _Stopped()

    def get(self, in_job: bool = True):
        while True:
            if in_job:
                self.check()
            elif not self.alive():
                raise _Stopped()
            if self.frames_from is not None:  # whichever queue has a message (their pipes' read ends)
                if mp.connection.wait([self.inbox._reader, self.frames._reader], timeout=POLL_S):
                    try:
                        return self.get_nowait()
                    except queue.Empty:
                        pass
                continue
            try:
                return self.inbox.get(timeout=POLL_S)
            except queue.Empty:
                continue
            except (EOFError, OSError):  # every writer is gone (the parent died mid-message)
                raise _Stopped() from None

    def get_nowait(self):
        """The next message if one is there (``queue.Empty`` if not)."""
        try:
            return self.inbox.get_nowait()
        except queue.Empty:
            if self.frames_from is None:
                raise
        except (EOFError, OSError):  # every writer is gone (the parent died mid-message)
            raise _Stopped() from None
        try:
            msg = self.frames.get_nowait()
        except (EOFError, OSError):
            # the tracking process died before its last windows: the job hears why from it and stops
            self.frames_from = None
            raise _Stopped() from None
        if msg[0] == "frames-done" and msg[1] == self.frames_from:
            self.frames_from = None
        return msg

    def put(self, q, item) -> None:
        while True:
            self.check()
            try:
                q.put(item, timeout=POLL_S)
                return
            except queue.Full:
                continue


def serve(role: str, inbox, outbox, abort, frames=None) -> None:
    """Entry point of a stage process (``role``: ``video``; its first message is its configuration,
    :mod:`.stagespawn`; ``frames``: its frame queue, or None). It leaves without the interpreter's teardown
    once its messages are sent."""
    try:
        _serve(role, inbox, outbox, abort, frames)
    finally:
        outbox.close()
        parent = mp.parent_process()
        if parent is None or parent.is_alive():  # nobody reads a dead parent's queue: do not wait for it
            outbox.join_thread()
        os._exit(0)


def _serve(role: str, inbox, outbox, abort, frames) -> None:
    child_signals()
    ch = _Channel(inbox, outbox, abort, frames)
    try:
        if role != "video":
            raise ValueError(f"unknown stage role {role!r}")
        with imports_kept():  # what the kernels leave lives as long as the process: never walked again
            warm_up()  # the compiled rasteriser, while the parent starts up
        while True:
            try:
                msg = ch.get(in_job=False)
            except _Stopped:
                return
            if msg[0] == "stop":
                return
            if msg[0] == "config":
                break
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises it
        outbox.put(("error", -1, role, picklable(exc)))
        return
    outbox.put(("ready", role))
    aborted: set[int] = set()
    while True:
        try:
            msg = ch.get(in_job=False)
        except _Stopped:
            return
        kind = msg[0]
        if kind == "stop":
            return
        if kind != "job" or msg[1] in aborted:
            continue  # left over from an aborted job
        ch.job = job = msg[1]
        t0 = time.process_time()
        try:
            _video_job(ch, **msg[2])
            outbox.put(("done", job, role, time.process_time() - t0))
        except _Stopped:
            aborted.add(job)
            if not ch.alive():
                return
            outbox.put(("aborted", job, role))
        except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises it
            aborted.add(job)
            outbox.put(("error", job, role, picklable(exc)))
            if isinstance(exc, (SystemExit, KeyboardInterrupt)):
                return
        finally:
            ch.frames_from = None  # the frame queue is read by the job that takes its windows only


def _video_job(ch: _Channel, layout: str, window, path: str, fps: float, audio_from, overwrite: bool,
               batch: int, faces: np.ndarray, light: np.ndarray, tint: np.ndarray | None,
               frames_from: str | None = None) -> None:
    """Render, compose and encode each frame once both its window (from the parent, or from the tracking
    process whose token is ``frames_from``) and its posed face (from the parent) are here, in order; the
    temporary file is removed when the job stops early. Between batches the queues are read on while fewer
    than ``HOLD_MB`` of windows wait, so tracking goes on while the video renders, with bounded memory."""
    if frames_from is not None and ch.frames is None:
        raise ValueError("the job's windows come from a tracking process, but this process has no frame queue")
    writer = open_video_writer(layout, window, path, fps, audio_from=audio_from, overwrite=overwrite)
    job = ch.job
    encoder = None
    try:
        ch.outbox.put(("tmp", job, str(writer.temporary_path)))
        encoder = EncoderThread(writer, check=ch.check,
                                on_written=lambda n: ch.outbox.put(("progress", job, "video", n)))
        state = _VideoState(job, job if frames_from is None else frames_from)
        ch.frames_from = frames_from
        while not state.finished:
            if not state.ready():
                state.absorb(ch.get())
                continue
            while state.held_bytes < HOLD_MB * 2**20:
                try:
                    state.absorb(ch.get_nowait())
                except queue.Empty:
                    break
            ch.check()
            frames, times, (rows, verts, affine) = state.take(batch)
            encoder.put(compose_posed(frames, rows, verts, affine, faces, light, layout, tint), times,
                        i420=frames.ndim == 3)
        encoder.finish()
        writer.close()
    except BaseException as exc:
        if encoder is not None:
            encoder.stop()
        writer.__exit__(type(exc), exc, exc.__traceback__)
        raise


#: MB of frame windows the video process reads ahead while it renders (more waits in its bounded inbox)
HOLD_MB = 48


class _VideoState:
    """The frames (from the parent or the tracking process) and posed faces (from the parent) waiting to be
    rendered."""

    def __init__(self, job: int, frames_key):
        self.job = job
        self.frames_key = frames_key  # what the frames' messages carry: the job's id or the tracker's token
        self.chunks: list[tuple] = []  # (row, frames, times), in order
        self.posed: list[tuple] = []   # (row, n, rows, vertices, affine), in order
        self.total: int | None = None  # frame count, once the parent has sent every frame
        self.fit_end = False
        self.done = 0                  # frames written
        self.held_bytes = 0

    def absorb(self, msg: tuple) -> None:
        if msg[0] == "frames":
            if msg[1] == self.frames_key:
                self.chunks.append(msg[2:])
                self.held_bytes += msg[3].nbytes
            return
        if msg[1] != self.job:
            return
        if msg[0] == "posed":
            self.posed.append(msg[2:])
        elif msg[0] == "frames-end":
            self.total = msg[2]
        elif msg[0] == "fit-end":
            self.fit_end = True

    @property
    def finished(self) -> bool:
        return self.fit_end and self.total is not None and self.done >= self.total

    def _drop(self) -> None:
        while self.chunks and self.chunks[0][0] + len(self.chunks[0][1]) <= self.done:
            self.held_bytes -= self.chunks.pop(0)[1].nbytes
        while self.posed and self.posed[0][0] + self.posed[0][1] <= self.done:
            self.posed.pop(0)

    def ready(self) -> bool:
        self._drop()
        return bool(self.chunks and self.posed)

    def take(self, batch: int):
        """The next frames (at most ``batch``, within one chunk and one posed run), their times and the posed
        face of their valid rows (indices into these frames, vertices, affine maps)."""
        (prow, pn, rows, verts, affine), (row, frames, times) = self.posed[0], self.chunks[0]
        a = self.done - row
        b = min(row + len(frames), prow + pn, self.done + batch) - row
        lo, hi = self.done - prow, self.done - prow + b - a
        sel = (rows >= lo) & (rows < hi)
        self.done += b - a
        return frames[a:b], times[a:b], (rows[sel] - lo, verts[sel], affine[sel])
