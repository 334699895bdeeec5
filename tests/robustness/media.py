"""Building blocks for the robustness corpus: encode frames with PyAV, take faces from the sample clips.

Everything is synthesised in a temporary folder at test time; nothing large is committed.
"""
from __future__ import annotations

import functools
import struct
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np

#: the small in-the-wild sample (224x224, one face); faces for every synthetic clip come from it
FACE_CLIP = "LRS3/0Fi83BHQsMA_00002.mp4"


@functools.lru_cache(maxsize=4)
def _decode(path: str, max_frames: int) -> np.ndarray:
    import av

    out = []
    with av.open(path) as c:
        for f in c.decode(c.streams.video[0]):
            out.append(f.to_ndarray(format="rgb24"))
            if len(out) >= max_frames:
                break
    arr = np.stack(out)
    arr.setflags(write=False)
    return arr


def face_frames(samples_dir: Path, n: int = 8, size: int | None = None) -> np.ndarray:
    """``n`` consecutive RGB frames (n,S,S,3) of a real talking face, optionally resized to ``size``."""
    frames = _decode(str(samples_dir / FACE_CLIP), max(n, 1))[:n]
    if size is not None and size != frames.shape[1]:
        import cv2

        frames = np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in frames])
    return np.ascontiguousarray(frames)


def blank_frames(n: int, h: int, w: int, value: int = 90, seed: int = 0) -> np.ndarray:
    """Faceless frames: flat grey with mild noise (so encoders produce real bitstreams)."""
    rng = np.random.default_rng(seed)
    base = np.full((n, h, w, 3), value, np.int16) + rng.integers(-12, 13, (n, h, w, 3), dtype=np.int16)
    return np.clip(base, 0, 255).astype(np.uint8)


def place(canvas_hw: tuple[int, int], faces: Sequence[np.ndarray], positions: Sequence[tuple[int, int]],
          background: int = 90) -> np.ndarray:
    """Paste face frames (each (n,h,w,3), same n) at (y, x) on a grey canvas -> (n,H,W,3)."""
    n = len(faces[0])
    out = np.full((n, *canvas_hw, 3), background, np.uint8)
    for f, (y, x) in zip(faces, positions):
        out[:, y:y + f.shape[1], x:x + f.shape[2]] = f
    return out


def write_video(path: Path, frames: np.ndarray, fps: float = 25, codec: str = "libx264",
                pix_fmt: str = "yuv420p", pts: Sequence[int] | None = None, time_base: Fraction | None = None,
                audio_seconds: float = 0.0, options: dict | None = None,
                container_options: dict | None = None) -> Path:
    """Encode RGB frames (n,H,W,3) into ``path``; ``pts`` (in ``time_base`` units) gives variable timing;
    ``options`` go to the encoder, ``container_options`` to the muxer (e.g. ``movflags=+faststart``)."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), "w", options=container_options or {}) as c:
        s = c.add_stream(codec, rate=rate)
        s.width, s.height = int(frames.shape[2]), int(frames.shape[1])
        s.pix_fmt = pix_fmt
        if time_base is not None:
            s.codec_context.time_base = time_base
            s.time_base = time_base
        if options:
            s.options = dict(options)
        a = None
        if audio_seconds > 0:
            a = c.add_stream("aac", rate=16000)
            a.layout = "mono"
        for i, img in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            if pts is not None:
                vf.pts = int(pts[i])
                vf.time_base = time_base
            for pkt in s.encode(vf):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
        if a is not None:
            _encode_tone(c, a, audio_seconds)
    return path


def _encode_tone(container, stream, seconds: float) -> None:
    import av

    rate = 16000
    t = np.arange(int(rate * seconds)) / rate
    pcm = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
    for start in range(0, pcm.shape[1], 1024):
        fr = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm[:, start:start + 1024]), format="fltp", layout="mono")
        fr.sample_rate = rate
        fr.pts = start
        for pkt in stream.encode(fr):
            container.mux(pkt)
    for pkt in stream.encode():
        container.mux(pkt)


def write_audio_only(path: Path, seconds: float = 1.0) -> Path:
    import av

    with av.open(str(path), "w", format="mp4") as c:
        a = c.add_stream("aac", rate=16000)
        a.layout = "mono"
        _encode_tone(c, a, seconds)
    return path


def write_empty_video(path: Path, w: int = 64, h: int = 64) -> Path:
    """A container with a video stream but not a single frame in it."""
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=25)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for pkt in s.encode():
            c.mux(pkt)
    return path


def write_image(path: Path, rgb: np.ndarray) -> Path:
    import cv2

    ok, buf = cv2.imencode(path.suffix, np.ascontiguousarray(rgb[..., ::-1]))
    assert ok, path
    path.write_bytes(buf.tobytes())
    return path


def set_mp4_rotation(path: Path, degrees: int) -> None:
    """Patch the video track's ``tkhd`` display matrix (what phones write) to ask for ``degrees``
    of rotation on display. The pixels stay as encoded."""
    data = bytearray(path.read_bytes())
    one, zero = 0x10000, 0
    mats = {90: (zero, one, -one, zero), 180: (-one, zero, zero, -one), 270: (zero, -one, one, zero)}
    a, b, c, d = mats[degrees % 360]
    pos = data.find(b"tkhd")
    assert pos > 0, "no tkhd box"
    version = data[pos + 4]
    # version(1) flags(3) creation modification track_id reserved duration (4 or 8 bytes each),
    # reserved(8) layer(2) alternate_group(2) volume(2) reserved(2), then the 3x3 matrix
    off = pos + 4 + 4 + (8 + 8 + 4 + 4 + 8 if version == 1 else 4 + 4 + 4 + 4 + 4) + 8 + 2 + 2 + 2 + 2
    struct.pack_into(">9i", data, off, a, b, 0, c, d, 0, 0, 0, 0x40000000)
    path.write_bytes(bytes(data))


def zero_mp4_timestamps(path: Path) -> Path:
    """Patch the video track's ``stts`` box so that every sample lasts 0 ticks: all frames at t = 0 (write
    the video without B-frames, ``options={"bf": "0"}``, so no edit list or ``ctts`` shifts them)."""
    data = bytearray(path.read_bytes())
    pos = data.find(b"stts")
    assert pos > 0, "no stts box"
    for k in range(struct.unpack_from(">I", data, pos + 8)[0]):
        struct.pack_into(">I", data, pos + 16 + 8 * k, 0)
    path.write_bytes(bytes(data))
    return path


def flip_bytes(data: bytes, count: int, rng: np.random.Generator, start: int = 0) -> bytes:
    """``count`` random single-byte corruptions at offsets >= ``start``."""
    buf = bytearray(data)
    for off in rng.integers(start, len(buf), count):
        buf[int(off)] = int(rng.integers(0, 256))
    return bytes(buf)
