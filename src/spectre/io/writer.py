"""``VideoWriter``: H.264/yuv420p MP4 via PyAV with the input's audio muxed in.

Why its own module: outputs must play everywhere (H.264 + yuv420p), keep the input's frame count and
timestamps (so renders line up with the audio and with the input frame by frame), carry the input's
audio (copied when the codec fits MP4, otherwise re-encoded to AAC), and never leave a half-written
file (the video is written to a temporary file and renamed on ``close``).
"""
from __future__ import annotations

import functools
import queue
import threading
from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from ..errors import InputError, OutputError

__all__ = ["EncoderThread", "VideoWriter", "i420_beside", "rgb_to_i420", "x264_asm"]

_TIME_BASE = Fraction(1, 90000)
_COPYABLE_AUDIO = {"aac", "mp3", "alac", "opus", "ac3"}
#: x264's instruction sets up to AVX2, for CPUs with AVX-512. x264's AVX-512 code reads memory it never wrote
#: (B-frames with its macroblock tree, frames not a multiple of 128 pixels wide, such as the 448x224 grid of a
#: 224² clip): the same frames encoded again in one process gave other streams that decoded up to 40 levels
#: apart, depending on what the heap held. Its AVX2 code gives one stream, at the same size and speed
#: (docs/performance.md, thirteenth session). Every CPU with AVX-512 has all of these.
X264_UP_TO_AVX2 = "MMX2,SSE,SSE2,SSE2Fast,SSE3,SSSE3,SSE4.1,SSE4.2,AVX,FMA3,LZCNT,BMI1,BMI2,AVX2"


@functools.cache
def _cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux lists them (empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return frozenset()
    return frozenset(next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), ()))


def x264_asm(flags: frozenset[str] | None = None) -> str | None:
    """libx264's ``asm`` option: :data:`X264_UP_TO_AVX2` where the CPU (``flags``, default this one's) has
    AVX-512, else None (x264 picks its own code)."""
    flags = _cpu_flags() if flags is None else flags
    return X264_UP_TO_AVX2 if "avx512f" in flags and "avx2" in flags else None


def _frame_to_uint8(frame) -> np.ndarray:
    """(H, W, 3) uint8, or float in [0, 1] as (H, W, 3) / (3, H, W) numpy or torch -> (H, W, 3) uint8."""
    if hasattr(frame, "detach"):
        frame = frame.detach().cpu().numpy()
    frame = np.asarray(frame)
    if frame.ndim == 3 and frame.shape[0] == 3 and frame.shape[-1] != 3:
        frame = frame.transpose(1, 2, 0)
    if frame.ndim == 2:
        frame = np.repeat(frame[..., None], 3, axis=-1)
    if frame.ndim != 3 or frame.shape[-1] != 3:
        raise ValueError(f"frames must be (H, W, 3) RGB, got shape {frame.shape}")
    if frame.dtype != np.uint8:
        frame = np.clip(frame.astype(np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(frame)


def rgb_to_i420(frames: np.ndarray) -> np.ndarray:
    """Even-sized RGB frames (n, H, W, 3) uint8 as the encoder's planar ``yuv420p`` (n, 3H/2, W): each frame's
    Y plane (H, W), then U and V (H/2, W/2) one after the other (BT.601, limited range, as swscale makes it).

    Why: converted by OpenCV, writing a 1024x512 grid frame costs 0.6 ms less than when PyAV's swscale
    converts it inside ``encode`` (7.0 vs 7.6 CPU ms with x264's own work; docs/performance.md, ninth session).
    Same luma within 1 level; chroma is the mean of each 2x2 block where swscale takes one of its pixels
    (tests/test_writer.py). Every output pixel depends on its own 2x2 block only, which
    :func:`i420_beside` relies on."""
    import cv2

    n, h, w = frames.shape[:3]
    out = np.empty((n, h * 3 // 2, w), np.uint8)
    for i in range(n):
        cv2.cvtColor(frames[i], cv2.COLOR_RGB2YUV_I420, dst=out[i])
    return out


def i420_beside(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Two batches of :func:`rgb_to_i420` frames of one height side by side: the conversion of the RGB frames
    put side by side, byte for byte (the seam falls between 2x2 blocks)."""
    n, rows, wl = left.shape
    wr = right.shape[2]
    h, w = rows * 2 // 3, wl + wr
    out = np.empty((n, rows, w), np.uint8)
    flat, fl, fr = out.reshape(n, -1), left.reshape(n, -1), right.reshape(n, -1)
    start = 0
    for ph, pw, k in ((h, w, 1), (h // 2, w // 2, 2), (h // 2, w // 2, 2)):  # Y, U, V planes
        dst = flat[:, start:start + ph * pw].reshape(n, ph, pw)
        dst[:, :, :wl // k] = fl[:, start * wl // w:(start + ph * pw) * wl // w].reshape(n, ph, wl // k)
        dst[:, :, wl // k:] = fr[:, start * wr // w:(start + ph * pw) * wr // w].reshape(n, ph, wr // k)
        start += ph * pw
    return out


def _yuv420_frame(img: np.ndarray):
    """An even-sized RGB frame as the encoder's ``yuv420p`` frame (:func:`rgb_to_i420`)."""
    return _i420_frame(rgb_to_i420(img[None])[0])


def _i420_frame(i420: np.ndarray):
    import av

    return av.VideoFrame.from_ndarray(i420, format="yuv420p")


class VideoWriter:
    """Write RGB frames to ``path`` (.mp4/.mov/.mkv) as H.264 yuv420p.

    ``size`` is (width, height) of the frames; odd sizes are padded by one edge pixel (yuv420p needs
    even sizes). ``pts``: presentation time in seconds of every frame (e.g. the input's, so timing is
    identical, variable frame rate included); default ``i / fps``. ``audio_from``: a media file whose
    first audio stream is muxed in (copied, or re-encoded to AAC). Use as a context manager; on an
    exception the partial file is removed and any existing file at ``path`` is left untouched.
    """

    def __init__(self, path: str | Path, fps: float, size: tuple[int, int], audio_from: str | Path | None = None,
                 pts: Sequence[float] | None = None, *, overwrite: bool = False, crf: float = 18,
                 preset: str = "medium", x264_params: str | None = None):
        import av
        import cv2  # noqa: F401 - the frames' colour conversion (up to 0.1 s to load): here, not on the first frame

        self.path = Path(path)
        self.fps = float(fps)
        if not self.fps > 0:
            raise InputError(f"{self.path}: frame rate must be positive, got {fps}")
        self.width, self.height = int(size[0]), int(size[1])
        if self.width <= 0 or self.height <= 0:
            raise InputError(f"{self.path}: invalid frame size {size}")
        self.pts = None if pts is None else [float(t) for t in pts]
        self.frames_written = 0
        self._audio_from = Path(audio_from) if audio_from is not None else None
        self._ctx = atomic_path(self.path, overwrite)
        self._tmp = self._ctx.__enter__()
        try:
            self._out = av.open(str(self._tmp), mode="w")
            self._video = self._out.add_stream("libx264", rate=Fraction(self.fps).limit_denominator(100000))
            self._video.width = self.width + self.width % 2
            self._video.height = self.height + self.height % 2
            self._video.pix_fmt = "yuv420p"
            self._video.time_base = _TIME_BASE
            self._video.codec_context.time_base = _TIME_BASE
            options = {"crf": f"{crf:g}", "preset": preset}
            # libx264's own options, ``key=value:key=value``, over the preset's
            asm = x264_asm()
            params = [p for p in (x264_params, f"asm={asm}" if asm else None) if p]
            if params:
                options["x264-params"] = ":".join(params)
            self._video.options = options
            self._audio_in = self._audio_out = self._audio_src = None
            if self._audio_from is not None:
                self._open_audio()
        except BaseException as exc:
            self._abort(exc)
            raise

    # ---- audio -----------------------------------------------------------------------------
    def _open_audio(self) -> None:
        import av

        try:
            src = av.open(str(self._audio_from))
        except (av.error.FFmpegError, OSError) as exc:
            raise InputError(f"cannot read audio from {self._audio_from}: {exc}") from None
        if not src.streams.audio:
            src.close()  # a silent input gives a silent output
            return
        self._audio_src = src
        self._audio_in = src.streams.audio[0]
        name = self._audio_in.codec_context.name
        if name in _COPYABLE_AUDIO:
            self._audio_out = self._out.add_stream_from_template(self._audio_in)
            self._audio_copy = True
        else:
            rate = self._audio_in.codec_context.sample_rate or 48000
            self._audio_out = self._out.add_stream("aac", rate=rate)
            channels = self._audio_in.codec_context.channels or 2
            self._audio_out.layout = "mono" if channels == 1 else "stereo"
            self._audio_copy = False

    def _mux_audio(self) -> None:
        import av

        if self._audio_in is None:
            return
        if self._audio_copy:
            for packet in self._audio_src.demux(self._audio_in):
                if packet.dts is None:
                    continue
                packet.stream = self._audio_out
                self._out.mux(packet)
            return
        resampler = av.AudioResampler(format=self._audio_out.codec_context.format or "fltp",
                                      layout=self._audio_out.layout, rate=self._audio_out.rate,
                                      frame_size=self._audio_out.codec_context.frame_size or 1024)
        for frame in self._audio_src.decode(self._audio_in):
            for rf in resampler.resample(frame):
                self._out.mux(self._audio_out.encode(rf))
        for rf in resampler.resample(None):
            self._out.mux(self._audio_out.encode(rf))
        self._out.mux(self._audio_out.encode(None))

    # ---- video -----------------------------------------------------------------------------
    def write(self, frame, t: float | None = None) -> None:
        """Append one RGB frame ((H, W, 3) uint8, or float in [0, 1]); ``t``: its presentation time in
        seconds when the timestamps are not known up front (default: ``pts`` given, else ``i / fps``)."""
        img = _frame_to_uint8(frame)
        if img.shape[:2] != (self.height, self.width):
            raise ValueError(f"frame is {img.shape[1]}x{img.shape[0]}, writer expects {self.width}x{self.height}")
        if self.width % 2 or self.height % 2:
            img = np.pad(img, ((0, self.height % 2), (0, self.width % 2), (0, 0)), mode="edge")
        self._encode(_yuv420_frame(img), t)

    def write_i420(self, frame: np.ndarray, t: float | None = None) -> None:
        """Append one frame already converted (:func:`rgb_to_i420`, (3H/2, W) uint8; even sizes only)."""
        if frame.dtype != np.uint8 or frame.shape != (self.height * 3 // 2, self.width) or self.height % 2 \
                or self.width % 2:
            raise ValueError(f"an I420 frame of {self.width}x{self.height} is ({self.height * 3 // 2}, "
                             f"{self.width}) uint8 (even sizes only), not {frame.shape} {frame.dtype}")
        self._encode(_i420_frame(frame), t)

    def _encode(self, vf, t: float | None) -> None:
        i = self.frames_written
        if t is None and self.pts is not None:
            if i >= len(self.pts):
                raise ValueError(f"more frames than the {len(self.pts)} timestamps given")
            t = self.pts[i]
        elif t is None:
            t = i / self.fps
        vf.pts = int(round(t / _TIME_BASE))
        vf.time_base = _TIME_BASE
        for packet in self._video.encode(vf):
            self._out.mux(packet)
        self.frames_written += 1

    @property
    def temporary_path(self) -> Path | None:
        """Where the video is written until ``close`` moves it into place (None once closed)."""
        return self._tmp if self._ctx is not None else None

    def close(self) -> Path:
        """Flush the encoder, mux the audio and move the file into place."""
        import av

        if self._ctx is None:
            return self.path
        try:
            for packet in self._video.encode(None):
                self._out.mux(packet)
            self._mux_audio()
            self._out.close()
            if self._audio_src is not None:
                self._audio_src.close()
        except av.error.FFmpegError as exc:
            err = OutputError(f"cannot write {self.path}: {exc}")
            self._abort(err)
            raise err from None
        except BaseException as exc:
            self._abort(exc)
            raise
        ctx, self._ctx = self._ctx, None
        ctx.__exit__(None, None, None)
        return self.path

    def _abort(self, exc: BaseException) -> None:
        for res in (getattr(self, "_out", None), getattr(self, "_audio_src", None)):
            try:
                if res is not None:
                    res.close()
            except Exception:  # noqa: BLE001 - best effort while already failing
                pass
        if self._ctx is not None:
            ctx, self._ctx = self._ctx, None
            try:
                ctx.__exit__(type(exc), exc, exc.__traceback__)
            except BaseException:  # noqa: BLE001 - the original error is what the caller sees
                pass

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is None:
            self.close()
        else:
            self._abort(exc)


class EncoderThread:
    """Encodes the frames given to :meth:`put` with ``writer`` in a thread of its own, so that drawing the
    next frames and encoding these overlap (libx264 and PyAV's conversion run without the GIL). It holds two
    batches; an encoder error is raised at the next ``put`` or at ``finish``. While it waits, ``check`` is
    called every ``poll`` seconds (it raises to stop waiting); ``on_written(n)`` is called from the thread
    after each batch. The writer is this thread's from the first ``put`` until ``finish`` or ``stop``
    returns."""

    def __init__(self, writer: VideoWriter, check: Callable[[], None] | None = None,
                 on_written: Callable[[int], None] | None = None, poll: float = 0.1):
        self.writer, self.check, self.on_written, self.poll = writer, check, on_written, poll
        self.q: queue.Queue = queue.Queue(2)
        self.error: BaseException | None = None
        self.halt = threading.Event()
        self.thread = threading.Thread(target=self._run, name="spectre-encode", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            while not self.halt.is_set():
                item = self.q.get()
                if item is None:
                    return
                frames, times, i420 = item
                write = self.writer.write_i420 if i420 else self.writer.write
                for i, f in enumerate(frames):
                    write(f, None if times is None else float(times[i]))
                if self.on_written is not None:
                    self.on_written(len(frames))
        except BaseException as exc:  # noqa: BLE001 - raised in the caller's thread
            self.error = exc

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error
        if self.check is not None:
            self.check()

    def put(self, frames, times: Sequence[float] | None = None, i420: bool = False) -> None:
        """Queue ``frames`` (n, H, W, 3) uint8, or converted (``i420``: (n, 3H/2, W), :func:`rgb_to_i420`), with
        their presentation ``times`` (None: the writer's)."""
        while True:
            self._raise()
            try:
                self.q.put((frames, times, i420), timeout=self.poll)
                return
            except queue.Full:
                continue

    def finish(self) -> None:
        """Encode what is queued, then return (the writer is the caller's again)."""
        while True:
            self._raise()
            try:
                self.q.put(None, timeout=self.poll)
                break
            except queue.Full:
                continue
        while self.thread.is_alive():
            self.thread.join(timeout=self.poll)
            self._raise()
        self._raise()

    def stop(self) -> None:
        """Stop encoding (the job stops early): the writer is the caller's once this returns."""
        self.halt.set()
        try:
            while True:
                self.q.get_nowait()
        except queue.Empty:
            pass
        try:
            self.q.put_nowait(None)
        except queue.Full:
            pass
        self.thread.join(timeout=30)
