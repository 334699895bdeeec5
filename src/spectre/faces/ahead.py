"""Tracking that starts before its consumer is ready.

``spectre reconstruct`` cannot fit before torch and the face model are loaded (about 1.5 s on a laptop
CPU), but tracking needs neither. :class:`TrackAhead` runs :meth:`FaceTracker.stream` over one video in a
background thread from the moment the command knows its first video, and keeps the finished chunks (at
most ``max_bytes`` of decoded frames, in chunks of at most ``chunk_size`` frames and ``chunk_mb``; tracking
waits beyond that) until the consumer takes the stream.
The tracker's output does not depend on the chunking, so a taken stream gives exactly what a fresh
``FaceTracker().stream`` of the same video gives.
"""
from __future__ import annotations

import collections
import threading
from collections.abc import Iterator
from pathlib import Path

from ..io.video import chunk_frames, open_video
from .track import FaceTracker
from .tracks import FaceChunk

__all__ = ["TrackAhead"]


def _nbytes(chunk: FaceChunk) -> int:
    return int(getattr(chunk.frames.frames, "nbytes", 0))


class TrackAhead:
    """Tracks ``path`` with a default :class:`FaceTracker` in a thread; :meth:`take` hands the stream over.

    Errors (an unreadable video, say) are kept and raised by the taken stream, where the consumer would
    have met them anyway. :meth:`close` stops the thread and closes the tracker unless it was taken."""

    def __init__(self, path: str | Path, chunk_size: int = 64, chunk_mb: int = 64, max_bytes: int = 64 * 2**20):
        self.path = Path(path)
        self.tracker: FaceTracker | None = FaceTracker()
        self._tracker = self.tracker  # the thread's, also once the tracker is taken
        self.chunk_size, self.chunk_mb, self.max_bytes = int(chunk_size), int(chunk_mb), int(max_bytes)
        self._chunks: collections.deque[FaceChunk] = collections.deque()
        self._bytes = 0
        self._cond = threading.Condition()
        self._stop = False
        self._done = False
        self._taken = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="spectre-track-ahead", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        stream = None
        try:
            source = open_video(self.path)
            chunk = chunk_frames(source.width, source.height, self.chunk_mb, self.chunk_size)
            stream = self._tracker.stream(source, chunk_size=chunk)
            for chunk in stream:
                n = _nbytes(chunk)
                with self._cond:
                    while self._chunks and self._bytes + n > self.max_bytes and not self._stop:
                        self._cond.wait(0.1)
                    if self._stop:
                        return
                    self._chunks.append(chunk)
                    self._bytes += n
                    self._cond.notify_all()
        except BaseException as exc:  # noqa: BLE001 - raised by the taken stream
            self._error = exc
        finally:
            if stream is not None:
                stream.close()  # in this thread: MediaPipe's graphs and the decoder stop here
            with self._cond:
                self._done = True
                self._cond.notify_all()

    def matches(self, path: str | Path) -> bool:
        """Whether this tracks ``path`` and its stream is still to be taken."""
        return not self._taken and not self._stop and Path(path).resolve() == self.path.resolve()

    def take(self) -> tuple[Iterator[FaceChunk], FaceTracker]:
        """The stream (chunks tracked so far, then the rest as it comes) and the tracker, which the caller
        now owns (to reuse for its next videos). Closing the stream stops the tracking."""
        if self._taken:
            raise RuntimeError("the stream was already taken")
        self._taken = True
        tracker, self.tracker = self.tracker, None
        return _TakenStream(self), tracker

    def _next(self) -> FaceChunk:
        with self._cond:
            while not self._chunks and not self._done:
                self._cond.wait(0.1)
            if not self._chunks:
                if self._error is not None:
                    raise self._error
                raise StopIteration
            chunk = self._chunks.popleft()
            self._bytes -= _nbytes(chunk)
            self._cond.notify_all()
        return chunk

    def _halt(self) -> None:
        with self._cond:
            self._stop = True
            self._chunks.clear()
            self._bytes = 0
            self._cond.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=60)

    def close(self) -> None:
        """Stop tracking (waits for the chunk in progress) and close the tracker if it was not taken."""
        self._halt()
        if self.tracker is not None:
            self.tracker.close()
            self.tracker = None


class _TakenStream:
    """The taken stream: an iterator of chunks whose ``close`` (like a generator's) stops the tracking."""

    def __init__(self, ahead: TrackAhead):
        self._ahead = ahead

    def __iter__(self):
        return self

    def __next__(self) -> FaceChunk:
        try:
            return self._ahead._next()
        except BaseException:
            self._ahead._halt()
            raise

    def close(self) -> None:
        self._ahead._halt()
