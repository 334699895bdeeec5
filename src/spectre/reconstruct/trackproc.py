"""Tracking in a process of its own, started before the job's process imports torch.

The default job cannot fit before torch and the face model are loaded (about 1.5 s), but tracking needs
neither. Tracking in a thread of the job's process (:mod:`spectre.faces.ahead`) shares one GIL with torch's
import, which then took 2.0 s instead of 1.1 while fewer than 64 frames were tracked. :class:`TrackProcess`
tracks the video in a spawned process instead (no torch there), cuts each frame to the video's window there
(:func:`.tracked.cut_chunk`, with the :class:`~.tracked.CutSettings` the command line expects) and sends
the tracked chunks through a bounded queue. The job takes them (:meth:`TrackProcess.take`) when its own
settings are the same, else it closes the process and tracks the video itself.

Decoded frames stay in that process; only the windows (at most 512x512 by default) cross, to the job or
straight to its video process.
Warnings of the decoder and MediaPipe are printed by that process, as they would be by the job's.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import queue
import threading
import uuid
from pathlib import Path

from ..faces.track import FaceTracker
from ..io.video import chunk_frames, open_video
from .childerrors import StageProcessError, child_signals, only_read, picklable
from .tracked import CutSettings, TrackedParts, cut_chunk

__all__ = ["TrackProcess", "TrackedFromProcess"]

#: tracked chunks waiting for the job (at 1080p a chunk is about 10 frames: 8 MB of 512x512 windows; at 224²,
#: 64 frames: 10 MB). Enough that tracking does not wait while the job imports torch and loads the model
#: (about 2 s; with 3 chunks the 1080p job took 0.6 s longer, docs/performance.md), few enough for memory.
QUEUED_CHUNKS = 8
POLL_S = 0.1
#: seconds the tracking process waits for its last windows to reach the video process: without limit while
#: the job goes on (:meth:`TrackProcess.close` with ``finished``), this long once it stopped
FLUSH_S = 2.0
FINISH_S = 120.0


class _Stopped(Exception):
    """The job no longer wants the chunks, or it is gone."""


def track_main(path: str, settings: CutSettings, outbox, stop, frames_to=None, tag: str | None = None) -> None:
    """The tracking process (spawned): ``("chunk", (TrackedChunk, FaceTracks, FaceTrack))`` per chunk, then
    ``("end",)`` or ``("error", exc)``. With ``frames_to`` (the video process's inbox) each chunk's windows
    go there instead, as ``("frames", tag, row, frames, times)``, then ``("frames-end", tag, rows)``. It
    leaves without the interpreter's teardown once they are sent."""
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

    stream = None
    try:
        try:
            source = open_video(path, warn_fps=False)  # the job opens it too and warns there
            window = settings.window(source.width, source.height)
            chunk = chunk_frames(source.width, source.height, settings.chunk_mb, settings.track_chunk)
            stream = FaceTracker().stream(source, chunk_size=chunk)
            row = 0
            for fc in stream:
                ch, part, chosen = cut_chunk(fc, row, window, settings.crop_scale)
                if frames_to is not None and ch.frames is not None:
                    put(("frames", tag, ch.row, ch.frames, ch.times), frames_to)
                    ch.frames = None
                row += ch.n
                put(("chunk", (ch, part, chosen)))
            if frames_to is not None:
                put(("frames-end", tag, row), frames_to)
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
        wanted = not stop.is_set() and (parent is None or parent.is_alive())
        for box in (outbox, frames_to):
            if box is not None:
                box.close()
                if wanted:
                    box.join_thread()  # what was put reaches the pipe
                elif box is frames_to:
                    _flush_for_a_while(box)
        os._exit(0)


def _flush_for_a_while(box) -> None:
    """Let ``box``'s feeder write what was put for at most ``FLUSH_S``: the job stopped, but the video
    process reads on, and an item put and never written would hold a place in its bounded inbox for good."""
    writer = threading.Thread(target=box.join_thread, daemon=True)
    writer.start()
    writer.join(FLUSH_S)


class TrackProcess:
    """Tracks ``path`` in a spawned process with ``settings``; :meth:`take` gives the job its chunks.

    ``frames_to``: the inbox of the video process that will make this video (:mod:`.stagespawn`). The
    windows then go there straight from this process, tagged :attr:`tag` (the job tells the video process
    which tag is its), and not through the job's process, which would unpickle and pickle them again
    (278 MB for 354 frames at 1080p) beside its fit."""

    def __init__(self, path: str | Path, settings: CutSettings, frames_to=None):
        ctx = mp.get_context("spawn")
        self.path, self.settings, self.frames_to = Path(path), settings, frames_to
        self.tag = f"track-{uuid.uuid4().hex}" if frames_to is not None else None
        self.outbox = ctx.Queue(QUEUED_CHUNKS)
        self.stop = ctx.Event()
        self.proc = ctx.Process(target=track_main, name="spectre-track", daemon=True,
                                args=(str(path), settings, self.outbox, self.stop, frames_to, self.tag))
        self.proc.start()
        only_read(self.outbox)  # the process's death mid-message is an end of file here, not a hang
        self._taken = self._closed = False

    def matches(self, path: str | Path, settings: CutSettings, frames_to=None) -> bool:
        """Whether this tracks ``path`` with ``settings``, sends the windows to ``frames_to`` (None: with
        the chunks) and its chunks are still to be taken."""
        return (not self._taken and not self._closed and settings == self.settings
                and frames_to is self.frames_to and Path(path).resolve() == self.path.resolve())

    def take(self) -> TrackedFromProcess:
        if self._taken:
            raise RuntimeError("the tracked chunks were already taken")
        self._taken = True
        return TrackedFromProcess(self)

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

    def close(self, timeout: float = 10.0, finished: bool = False) -> None:
        """Stop the process and wait for it (ended when it does not stop in time). Idempotent. ``finished``: it
        sent its end; it may still be writing windows to the video process, so it is first given ``FINISH_S``
        to leave by itself."""
        if self._closed:
            return
        self._closed = True
        if finished:
            self.proc.join(FINISH_S)
        self.stop.set()
        self.proc.join(timeout)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(2.0)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(2.0)
        self.outbox.cancel_join_thread()
        self.outbox.close()


class TrackedFromProcess(TrackedParts):
    """The tracked chunks of a :class:`TrackProcess`, iterated like :class:`~.overlap.TrackedFrames`."""

    def __init__(self, tracker: TrackProcess):
        super().__init__(tracker.path)
        self.tracker = tracker
        self.frames_tag = tracker.tag

    def __iter__(self):
        while True:
            msg = self.tracker.get()
            if msg[0] == "error":
                self.tracker.close()
                raise msg[1]
            if msg[0] == "end":
                self.tracker.close(finished=True)
                return
            yield self.add(*msg[1])

    def close(self) -> None:
        self.tracker.close()
