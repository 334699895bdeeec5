"""Streaming video/image reader: frames arrive in bounded chunks with their timestamps.

Why streaming: a 1-hour 1080p video is ~560 GB of RGB pixels, so no stage may hold a whole clip.
``open_video`` validates the input once (first frame decoded) and returns a ``VideoSource`` whose
``iter_chunks`` re-opens the file and yields ``FrameChunk``s of at most ``chunk_size`` frames.

Conventions: frames are uint8 RGB (H, W, 3) *after* applying the container's display rotation;
``indices`` count decoded frames from 0; ``pts_seconds`` are presentation times (variable frame
rate survives). Every failure is a one-line ``InputError`` naming the file and the reason.
"""
from __future__ import annotations

import logging
import math
import queue
import sys
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from ..errors import InputError, SpectreError

log = logging.getLogger(__name__)

#: The lipreader (and SPECTRE's training data) run at this rate.
LIPREADER_FPS = 25.0
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
#: the one list of video file suffixes every command recognises (lower case; PyAV decodes them all)
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv")
#: upper bound on the pixels of one chunk (a chunk holds fewer frames than asked when they are huge)
MAX_CHUNK_BYTES = 512 * 2**20
#: MB of decoded frames per chunk where tracking chooses the chunk by memory (:func:`chunk_frames`): about
#: 10 frames at 1080p; a few chunks are in flight at once, and each new MB costs the kernel time to zero
CHUNK_MB = 64
_T = TypeVar("_T")
_DONE = object()


def chunk_frames(width: int, height: int, budget_mb: int, most: int) -> int:
    """Frames per decoded chunk so that one chunk of RGB frames stays within ``budget_mb`` (at least 4, or
    ``most`` when fewer; at most ``most``)."""
    return int(max(min(4, most), min(most, budget_mb * 2**20 // max(width * height * 3, 1))))


class ChunkBuffers:
    """Frame buffers that are reused once nothing refers to them any more.

    Why: a chunk of 1080p frames is tens of MB, which the allocator maps fresh from the kernel for every
    chunk, and the kernel zeroes each new page before the frames overwrite it (0.5 to 0.8 CPU s per 350
    frames at 1080p, docs/performance.md). A buffer is reused only when no chunk, view or queue still
    holds it: its reference count is the pool's own (measured once on a probe, so it does not depend on
    the interpreter)."""

    def __init__(self) -> None:
        self._bufs: list[np.ndarray] = []
        self._own = self._refs([np.empty(0)], 0)

    @staticmethod
    def _refs(bufs: list[np.ndarray], i: int) -> int:
        return sys.getrefcount(bufs[i])

    def take(self, shape: tuple[int, ...]) -> np.ndarray:
        """An uninitialised uint8 buffer of ``shape`` that nothing else refers to."""
        bufs = self._bufs
        idle = [i for i in range(len(bufs)) if self._refs(bufs, i) == self._own]
        for i in idle:
            if bufs[i].shape == shape:
                return bufs[i]
        self._bufs = [b for i, b in enumerate(bufs) if i not in idle]  # idle ones of another size go
        self._bufs.append(np.empty(shape, np.uint8))
        return self._bufs[-1]


def prefetch(items: Iterable[_T], depth: int = 1) -> Iterator[_T]:
    """Iterate ``items`` in a background thread, at most ``depth`` items ahead, yielding them in order.

    Decoding (PyAV releases the GIL) then overlaps with the consumer's work (tracking, fitting) while
    memory stays bounded. Exceptions of the producer are re-raised in the consumer; closing the
    iterator early stops the producer."""
    q: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which re-raises it
            put((_DONE, exc))
            return
        put((_DONE, None))

    thread = threading.Thread(target=produce, name="spectre-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, exc = q.get()
            if item is _DONE:
                if exc is not None:
                    raise exc
                return
            yield item
    finally:
        stop.set()
        thread.join(timeout=30)  # it stops after the item it is decoding: no native decode outlives us


@dataclass
class FrameChunk:
    """Consecutive decoded frames: ``frames`` (N,H,W,3) uint8 RGB, ``indices`` (N,) int64,
    ``pts_seconds`` (N,) float64."""

    frames: np.ndarray
    indices: np.ndarray
    pts_seconds: np.ndarray

    def __len__(self) -> int:
        return int(self.frames.shape[0])


def apply_rotation(frame: np.ndarray, rotation: int) -> np.ndarray:
    """Turn a decoded frame upright: ``rotation`` is the counter-clockwise angle (degrees, a
    multiple of 90) the display matrix asks for, as PyAV's ``VideoFrame.rotation`` reports it."""
    k = (int(round(rotation / 90.0))) % 4
    return np.ascontiguousarray(np.rot90(frame, k=k)) if k else frame


def _short(exc: BaseException) -> str:
    """The reason only (PyAV errors repeat the file name, which our messages already lead with)."""
    text = getattr(exc, "strerror", None) or str(exc)
    return " ".join(str(text).split()) or type(exc).__name__


class VideoSource:
    """A readable video, image folder or single image. Metadata attributes:

    ``path``, ``kind`` ('video' | 'images' | 'array'), ``fps``, ``num_frames`` (container estimate for videos,
    exact for images), ``width``/``height`` (after rotation), ``rotation``, ``has_audio``,
    ``audio_stream_index`` (for muxing the original audio back, or None), ``duration`` (seconds).
    """

    def __init__(self, path: Path, kind: str, fps: float, num_frames: int, width: int, height: int,
                 rotation: int, has_audio: bool, audio_stream_index: int | None, duration: float,
                 image_files: list[Path] | None = None):
        self.path = path
        self.kind = kind
        self.fps = fps
        self.num_frames = num_frames
        self.width = width
        self.height = height
        self.rotation = rotation
        self.has_audio = has_audio
        self.audio_stream_index = audio_stream_index
        self.duration = duration
        self._image_files = image_files

    def __repr__(self) -> str:
        return (f"VideoSource({str(self.path)!r}, kind={self.kind}, {self.width}x{self.height}, "
                f"fps={self.fps:g}, ~{self.num_frames} frames, rotation={self.rotation}, audio={self.has_audio})")

    @classmethod
    def from_array(cls, frames: np.ndarray, fps: float = LIPREADER_FPS, name: str = "<array>") -> VideoSource:
        """Wrap in-memory RGB frames (N,H,W,3) uint8, e.g. frames produced by another tool."""
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
            raise InputError(f"{name}: expected non-empty uint8 frames (N,H,W,3), got {frames.dtype} {frames.shape}")
        src = cls(Path(name), "array", float(fps), len(frames), frames.shape[2], frames.shape[1], 0, False, None,
                  len(frames) / fps)
        src._array = frames
        return src

    # -- frames ------------------------------------------------------------------------------
    def iter_frames(self) -> Iterator[tuple[int, float, np.ndarray]]:
        """Yield ``(index, pts_seconds, frame)`` one at a time (bounded memory)."""
        if self.kind == "array":
            for i, f in enumerate(self._array):
                yield i, i / self.fps, f
            return
        if self.kind == "images":
            for i, f in enumerate(self._image_files or []):
                yield i, i / self.fps, _read_image(f)
            return
        yield from _decode_video(self.path, self.fps)

    def iter_chunks(self, chunk_size: int = 32) -> Iterator[FrameChunk]:
        """Yield ``FrameChunk``s of at most ``chunk_size`` frames (fewer for frames so large that a chunk
        would pass ``MAX_CHUNK_BYTES``, e.g. 8K). Raises ``InputError`` if the
        stream turns out to hold no frame or breaks mid-way (frames before the break were yielded)."""
        if chunk_size < 1:
            raise InputError(f"chunk_size must be >= 1, got {chunk_size}")
        buf: np.ndarray | None = None  # filled in place: one copy per frame, no list + stack
        pool = ChunkBuffers()
        n = 0
        idx: list[int] = []
        pts: list[float] = []
        total = 0
        for i, t, frame in self.iter_frames():
            if buf is None or frame.shape != buf.shape[1:]:
                if n:  # frame size changed mid-stream: close the current chunk
                    yield FrameChunk(buf[:n], np.asarray(idx, np.int64), np.asarray(pts, np.float64))
                    total += n
                    n, idx, pts = 0, [], []
                # 64 frames of 8K are 6 GB: big frames come in fewer per chunk
                frames_per_chunk = max(1, min(chunk_size, MAX_CHUNK_BYTES // max(frame.nbytes, 1)))
                buf = pool.take((frames_per_chunk, *frame.shape))
            buf[n] = frame
            n += 1
            idx.append(i)
            pts.append(t)
            if n == len(buf):
                yield FrameChunk(buf, np.asarray(idx, np.int64), np.asarray(pts, np.float64))
                total += n
                n, idx, pts = 0, [], []
                buf = pool.take(buf.shape)
        if n:
            total += n
            yield FrameChunk(buf[:n], np.asarray(idx, np.int64), np.asarray(pts, np.float64))
        if total == 0:
            raise InputError(f"{self.path}: no decodable video frame")

    def chunks_ahead(self, most: int = 32) -> Iterator[FrameChunk]:
        """:meth:`iter_chunks` decoded in a thread, one chunk ahead of the consumer (:func:`prefetch`), in
        chunks of at most ``most`` frames and about :data:`CHUNK_MB` (10 frames at 1080p). Decoded in the
        main thread, every 1080p frame was mapped fresh (0.7-1.6 s of system time per 354 frames)."""
        return prefetch(self.iter_chunks(chunk_frames(self.width, self.height, CHUNK_MB, most)))

    def read(self, max_frames: int | None = None) -> FrameChunk:
        """Read the whole clip (or its first ``max_frames``) into one chunk. Only for short clips."""
        chunks = []
        n = 0
        for chunk in self.iter_chunks(64):
            chunks.append(chunk)
            n += len(chunk)
            if max_frames is not None and n >= max_frames:
                break
        out = FrameChunk(np.concatenate([c.frames for c in chunks]), np.concatenate([c.indices for c in chunks]),
                         np.concatenate([c.pts_seconds for c in chunks]))
        if max_frames is not None:
            out = FrameChunk(out.frames[:max_frames], out.indices[:max_frames], out.pts_seconds[:max_frames])
        return out

    # -- audio -------------------------------------------------------------------------------
    def read_audio(self) -> tuple[np.ndarray, int] | None:
        """Decode the first audio stream to float32 (channels, samples) and its sample rate,
        or None when there is none. (Small: 1 h of 48 kHz stereo is ~1.4 GB, so prefer remuxing
        the packets of ``audio_stream_index`` from ``path`` for very long inputs.)"""
        if not self.has_audio:
            return None
        import av

        try:
            with av.open(str(self.path)) as container:
                stream = container.streams.audio[0]
                rate = stream.codec_context.sample_rate or stream.rate
                parts = []
                for frame in container.decode(stream):
                    a = frame.to_ndarray()
                    if a.dtype.kind in "iu":
                        a = a.astype(np.float32) / float(np.iinfo(a.dtype).max)
                    if frame.format.is_planar:
                        parts.append(a.astype(np.float32))
                    else:  # packed: (1, samples*channels)
                        ch = len(frame.layout.channels)
                        parts.append(a.reshape(-1, ch).T.astype(np.float32))
        except Exception as exc:  # av.error.* and friends
            raise InputError(f"{self.path}: cannot decode audio: {_short(exc)}") from None
        if not parts:
            return None
        return np.concatenate(parts, axis=1), int(rate)


def _read_image(path: Path) -> np.ndarray:
    import cv2

    data = np.fromfile(str(path), dtype=np.uint8) if path.is_file() else None
    img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data is not None and data.size else None
    if img is None:
        raise InputError(f"{path}: not a readable image")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _decode_video(path: Path, fps: float) -> Iterator[tuple[int, float, np.ndarray]]:
    import av

    try:
        container = av.open(str(path))
    except Exception as exc:
        raise InputError(f"{path}: cannot open video: {_short(exc)}") from None
    with container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        tb = float(stream.time_base) if stream.time_base else 0.0
        i, last, stuck = 0, -math.inf, 0
        try:
            for frame in container.decode(stream):
                if frame.pts is not None and tb:
                    t = frame.pts * tb - (float(stream.start_time * stream.time_base) if stream.start_time else 0.0)
                else:
                    t = i / fps
                if i and t <= last:  # e.g. all-zero timestamps: keep time moving at the stream's rate
                    t, stuck = last + 1.0 / fps, stuck + 1
                img = apply_rotation(frame.to_ndarray(format="rgb24"), frame.rotation)
                yield i, float(t), img
                last = t
                i += 1
        except av.error.FFmpegError as exc:
            raise InputError(f"{path}: video stream is corrupt or truncated after frame {i}: {_short(exc)}") from None
        if stuck:
            log.warning("%s: %d of %d frame timestamps do not increase (e.g. all zero); those frames are timed "
                        "1/%.3g s after the previous one", path, stuck, i, fps)
        expected = int(stream.frames or 0)
        if expected and i < 0.9 * expected - 1:  # the container's index promises more than the data holds
            raise InputError(f"{path}: file is truncated (decoded {i} of the {expected} frames its index lists)")
        if 0 < i < expected:  # a few frames short: FFmpeg ends such a file quietly, so say it
            log.warning("%s: only %d of the %d frames the container lists could be decoded (file truncated?); "
                        "the result covers those frames", path, i, expected)


def frame_count(path: str | Path) -> int | None:
    """The frame count the container lists (0 when it does not say; None when the file is not a readable
    video, which its job reports)."""
    try:
        return open_video(path, warn_fps=False).num_frames
    except SpectreError:
        return None


def open_video(path: str | Path, image_fps: float = LIPREADER_FPS, warn_fps: bool = True) -> VideoSource:
    """Open a video file (any container/codec FFmpeg reads), an image folder (sorted by name, at
    ``image_fps``) or a single image; validate it by decoding its first frame.

    Raises ``InputError`` (one line) for missing, unreadable, corrupt, zero-frame, audio-only and
    non-video files. Logs a warning when the frame rate is not the lipreader's 25 fps.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not files:
            raise InputError(f"{path}: folder holds no image ({', '.join(IMAGE_SUFFIXES)})")
        return _image_source(path, files, image_fps)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return _image_source(path, [path], image_fps)
    source = _probe_video(path)
    if warn_fps and abs(source.fps - LIPREADER_FPS) > 0.01:
        log.warning("%s: frame rate is %.3g fps, not %g fps (the lipreader's rate); frames are used "
                    "as they are, not resampled", path, source.fps, LIPREADER_FPS)
    return source


def _image_source(path: Path, files: list[Path], fps: float) -> VideoSource:
    first = _read_image(files[0])
    h, w = first.shape[:2]
    return VideoSource(path, "images", float(fps), len(files), w, h, 0, False, None, len(files) / fps, files)


def _probe_video(path: Path) -> VideoSource:
    import av

    try:
        container = av.open(str(path))
    except Exception as exc:
        raise InputError(f"{path}: not a readable video ({_short(exc)})") from None
    with container:
        if not container.streams.video:
            what = "audio-only file" if container.streams.audio else "no video stream (truncated or not a video)"
            raise InputError(f"{path}: {what}, nothing to track")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else LIPREADER_FPS
        if not math.isfinite(fps) or fps <= 0:
            fps = LIPREADER_FPS
        try:
            first = next(container.decode(stream), None)
        except av.error.FFmpegError as exc:
            raise InputError(f"{path}: video stream is corrupt ({_short(exc)})") from None
        if first is None:
            raise InputError(f"{path}: video stream holds no frame")
        rotation = int(first.rotation or 0) % 360
        w, h = first.width, first.height
        if rotation in (90, 270):
            w, h = h, w
        if stream.duration and stream.time_base:
            duration = float(stream.duration * stream.time_base)
        elif container.duration:
            duration = container.duration / 1e6
        else:
            duration = 0.0
        num = int(stream.frames) if stream.frames else int(round(duration * fps))
        audio = container.streams.audio
        return VideoSource(path, "video", fps, max(num, 1), w, h, rotation, bool(audio),
                           audio[0].index if audio else None, duration)
