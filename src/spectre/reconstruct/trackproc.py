"""Tracking in a process of its own, started before the job's process imports torch.

The default job cannot fit before torch and the face model are loaded (about 1.5 s), but tracking needs
neither. Tracking in a thread of the job's process shared one GIL with torch's import, which then took
2.0 s instead of 1.1 while fewer than 64 frames were tracked (and the 41-frame README clip took 1 s longer
in all). :class:`TrackProcess` tracks the video in a spawned process (no torch there), for clips of any
length, with or without a video; it cuts each frame to the video's window there
(:func:`.tracked.cut_chunk`, with the :class:`~.tracked.CutSettings` the command line expects) and sends
the tracked chunks through a bounded queue. The job takes them (:meth:`TrackProcess.take`) when its own
settings are the same, else it closes the process and tracks the video itself.

Decoded frames stay in that process; only the windows (at most 512x512 by default) leave it: to the job,
or, when the command line gives it the video process's frame queue (``frames_to``, :mod:`.stagespawn`),
straight to the video process, which is the only one that needs them (the job gets the landmarks).
Our warnings there (the decoder's: a truncated file, timestamps that do not increase) are sent to the job,
which logs them as its own (its handlers, not across its progress bar); MediaPipe's native messages are
printed by that process.
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import os
import queue
import threading
import time
import uuid
from pathlib import Path

from ..faces.track import FaceTracker
from ..io.video import chunk_frames, open_video
from ..io.writer import rgb_to_i420
from .childerrors import StageProcessError, child_signals, only_read, picklable
from .tracked import CutSettings, TrackedParts, cut_chunk

__all__ = ["TrackProcess", "TrackedFromProcess", "queued_chunks"]

#: MB of tracked windows that may wait for the job, in 3 to 8 chunks (:func:`queued_chunks`): enough that
#: tracking goes on while the job imports torch and loads the model (about 2 s; with 3 chunks, 30 frames at
#: 1080p, the 1080p job took 0.6 s longer, docs/performance.md), few enough for memory
QUEUED_MB = 80
POLL_S = 0.1


def queued_chunks(settings: CutSettings, width: int, height: int) -> int:
    """How many tracked chunks of a ``width`` x ``height`` video may wait for the job: about ``QUEUED_MB``
    of windows (8 chunks at 1080p, 10 frames each, and at 224², 64 frames each), and never fewer than 3."""
    window = settings.window(width, height)
    w, h = window.size if window is not None else (0, 0)
    chunk_bytes = chunk_frames(width, height, settings.chunk_mb, settings.track_chunk) * w * h * 3
    return int(min(8, max(3, QUEUED_MB * 2**20 // max(chunk_bytes, 1))))


class _Stopped(Exception):
    """The job no longer wants the chunks, or it is gone."""


class _ToJob(logging.Handler):
    """Sends this process's ``spectre`` log records to the job as ``("log", logger, level, message)``."""

    def __init__(self, put):
        super().__init__()
        self.put = put

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.put(("log", record.name, record.levelno, record.getMessage()))
        except _Stopped:  # nobody reads any more: the next chunk's put stops the process
            pass


def track_main(path: str, settings: CutSettings, outbox, stop, frames_to=None, token: str = "") -> None:
    """The tracking process (spawned): ``("chunk", (TrackedChunk, ChunkFaces))`` per chunk and
    ``("log", ...)`` per warning (:class:`_ToJob`), then ``("end",)`` or ``("error", exc)``. With ``frames_to``
    each chunk's windows go there instead, as ``("frames", token, row, frames, times)`` (for the grid layout
    converted for the encoder, :func:`.io.writer.rgb_to_i420`, when their sizes are even), then
    ``("frames-done", token, rows)``. It leaves without the interpreter's teardown once they are sent."""
    child_signals()
    parent = mp.parent_process()

    def put(item, box=outbox) -> None:
        while True:
            if stop.is_set() or (parent is not None and not parent.is_alive()):
                raise _Stopped()
            try:
                box.put(item, timeout=POLL_S)
                return
            except queue.Full:
                continue

    ours = logging.getLogger("spectre")
    ours.addHandler(_ToJob(put))
    ours.propagate = False
    stream = None
    try:
        try:
            source = open_video(path, warn_fps=False)  # the job opens it too and warns there
            window = settings.window(source.width, source.height)
            chunk = chunk_frames(source.width, source.height, settings.chunk_mb, settings.track_chunk)
            stream = FaceTracker().stream(source, chunk_size=chunk)
            row = 0
            for fc in stream:
                item = cut_chunk(fc, row, window, settings.crop_scale)
                ch = item[0]
                if frames_to is not None and ch.frames is not None:
                    frames = ch.frames
                    if settings.layout == "grid" and not (frames.shape[1] % 2 or frames.shape[2] % 2):
                        # converted for the encoder here (the video process converts the render half only
                        # and puts them side by side): half the bytes to send and to hold
                        frames = rgb_to_i420(frames)
                    put(("frames", token, ch.row, frames, ch.times), frames_to)
                    ch.frames = None
                row += ch.n
                put(("chunk", item))
            if frames_to is not None:
                put(("frames-done", token, row), frames_to)
            put(("end",))
        except _Stopped:
            pass
        except BaseException as exc:  # noqa: BLE001 - raised in the job
            try:
                put(("error", picklable(exc)))
            except _Stopped:
                pass
    finally:
        if stream is not None:
            stream.close()
        outbox.close()
        if not stop.is_set() and (parent is None or parent.is_alive()):
            outbox.join_thread()  # what was put reaches the pipe
        if frames_to is not None:
            _flush(frames_to, stop, parent)
        os._exit(0)


def _flush(box, stop, parent) -> None:
    """Wait until what was put on ``box`` has reached its pipe (its reader, the video process, takes the
    frames as it renders them), unless the job stops this process or is gone first."""
    box.close()
    flushed = threading.Event()
    threading.Thread(target=lambda: (box.join_thread(), flushed.set()), daemon=True).start()
    while not flushed.wait(POLL_S):
        if stop.is_set() or (parent is not None and not parent.is_alive()):
            return


class TrackProcess:
    """Tracks ``path`` in a spawned process with ``settings``; :meth:`take` gives the job its chunks.
    ``size``: the video's (width, height), which sizes the queue of chunks (3 without it). ``frames_to``:
    the video process's frame queue (:attr:`.stagespawn.SpawnedStages.frames`): the windows go there, tagged
    with :attr:`token`, and the job's chunks come without them."""

    def __init__(self, path: str | Path, settings: CutSettings, size: tuple[int, int] | None = None,
                 frames_to=None):
        ctx = mp.get_context("spawn")
        self.path, self.settings, self.frames_to = Path(path), settings, frames_to
        self.token = uuid.uuid4().hex if frames_to is not None else None
        self.outbox = ctx.Queue(queued_chunks(settings, *size) if size else 3)
        self.stop = ctx.Event()
        self.proc = ctx.Process(target=track_main, name="spectre-track", daemon=True,
                                args=(str(path), settings, self.outbox, self.stop, frames_to, self.token))
        self.proc.start()
        only_read(self.outbox)  # the process's death mid-message is an end of file here, not a hang
        if frames_to is not None:
            # this process never writes there: with only the tracking process's write end open, its death
            # mid-message is an end of file for the video process, not a hang
            only_read(frames_to)
        self._taken = self._closed = False

    def matches(self, path: str | Path, settings: CutSettings, frames_to=None) -> bool:
        """Whether this tracks ``path`` with ``settings``, sends its windows where the job reads them (to
        the queue ``frames_to``, or with the chunks when None), and its chunks are still to be taken."""
        return (not self._taken and not self._closed and settings == self.settings
                and frames_to is self.frames_to and Path(path).resolve() == self.path.resolve())

    def take(self, frames: int = 0) -> TrackedFromProcess:
        """Its tracked chunks (``frames``: the video's announced frame count)."""
        if self._taken:
            raise RuntimeError("the tracked chunks were already taken")
        self._taken = True
        return TrackedFromProcess(self, frames)

    def get(self) -> tuple:
        """The next message; :class:`StageProcessError` when the process ended without sending one (or
        in the middle of one)."""
        try:
            while True:
                try:
                    return self.outbox.get(timeout=POLL_S)
                except queue.Empty:
                    if self.proc.is_alive():
                        continue
                return self.outbox.get(timeout=1.0)  # it may have ended just after its last message
        except (queue.Empty, EOFError, OSError):
            self.proc.join(1.0)
            raise StageProcessError("the tracking process ended unexpectedly "
                                    f"(exit code {self.proc.exitcode})") from None

    def close(self, timeout: float = 10.0) -> None:
        """Stop the process and wait for it (ended when it does not stop in time). Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.stop.set()
        deadline = time.monotonic() + timeout
        while self.proc.is_alive() and time.monotonic() < deadline:
            # a process that has sent its last chunk waits until the pipe takes what it queued (more than
            # the pipe holds when nobody reads): read it away, so that it leaves at once
            self._discard()
            self.proc.join(POLL_S)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(2.0)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(2.0)
        self.outbox.cancel_join_thread()
        self.outbox.close()

    def _discard(self) -> None:
        try:
            while True:
                self.outbox.get_nowait()
        except (queue.Empty, EOFError, OSError):
            pass


class TrackedFromProcess(TrackedParts):
    """The tracked chunks of a :class:`TrackProcess`, iterated like :class:`~.overlap.TrackedFrames`."""

    def __init__(self, tracker: TrackProcess, frames: int = 0):
        super().__init__(tracker.path, frames)
        self.tracker = tracker
        #: the windows went to the video process, tagged with this (None: they come with the chunks)
        self.frames_token = tracker.token

    def __iter__(self):
        while True:
            msg = self.tracker.get()
            if msg[0] == "error":
                self.tracker.close()
                raise msg[1]
            if msg[0] == "end":
                if self.frames_token is None:  # else it leaves once the video process has its last windows
                    self.tracker.close()
                return
            if msg[0] == "log":
                logging.getLogger(msg[1]).log(msg[2], "%s", msg[3])
                continue
            yield self.add(*msg[1])

    def close(self) -> None:
        self.tracker.close()
