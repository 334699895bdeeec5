"""Streaming reader: metadata, chunking, timestamps, rotation, images, and one-line errors on bad input."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from spectre.errors import InputError
from spectre.io.video import FrameChunk, apply_rotation, open_video


def _write_video(path: Path, frames: np.ndarray, fps: int = 25, rotation: int | None = None,
                 pts: list[int] | None = None, codec: str = "libx264", audio: bool = False) -> Path:
    from fractions import Fraction

    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=fps)
        s.width, s.height = frames.shape[2], frames.shape[1]
        s.pix_fmt = "yuv420p"
        s.options = {"crf": "1"} if codec == "libx264" else {}
        if pts is not None:
            s.codec_context.time_base = Fraction(1, 1000)
        if rotation is not None:
            s.set_display_rotation(rotation)
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24")
            if pts is not None:
                vf.pts = pts[i]
                vf.time_base = Fraction(1, 1000)
            for p in s.encode(vf):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def _pattern(n=10, h=64, w=96):
    f = np.zeros((n, h, w, 3), np.uint8)
    for i in range(n):
        f[i, :, :, 1] = (i * 20) % 256
    f[:, :16, :16] = 255  # white marker top-left
    return f


def test_sample_metadata_and_chunks(lrs3_video):
    src = open_video(lrs3_video)
    assert (src.width, src.height, src.fps, src.rotation, src.has_audio) == (224, 224, 25.0, 0, True)
    chunks = list(src.iter_chunks(16))
    assert all(isinstance(c, FrameChunk) and 0 < len(c) <= 16 for c in chunks)
    idx = np.concatenate([c.indices for c in chunks])
    pts = np.concatenate([c.pts_seconds for c in chunks])
    assert np.array_equal(idx, np.arange(len(idx)))
    assert len(idx) == src.num_frames
    np.testing.assert_allclose(np.diff(pts), 0.04, atol=1e-6)
    assert chunks[0].frames.dtype == np.uint8 and chunks[0].frames.shape[1:] == (224, 224, 3)
    audio, rate = src.read_audio()
    assert rate > 0 and audio.ndim == 2 and audio.shape[1] / rate == pytest.approx(src.duration, abs=0.2)


def test_variable_frame_rate_and_fps_warning(tmp_path, caplog):
    pts = [0, 40, 80, 200, 240, 400]  # ms, irregular
    path = _write_video(tmp_path / "vfr.mp4", _pattern(6), fps=10, pts=pts)
    with caplog.at_level(logging.WARNING):
        src = open_video(path)
    got = src.read().pts_seconds
    np.testing.assert_allclose(got, np.array(pts) / 1000.0, atol=1e-3)
    assert src.fps != 25 and "not 25 fps" in caplog.text


@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_rotation_metadata_is_applied(tmp_path, rotation):
    frames = _pattern(3)
    src = open_video(_write_video(tmp_path / "rot.mp4", frames, rotation=rotation))
    assert src.rotation == rotation % 360
    got = src.read().frames
    want = apply_rotation(frames[0], rotation)
    assert (src.height, src.width) == want.shape[:2] == got.shape[1:3]
    # the white marker must be where the rotation puts it (compression tolerance)
    assert np.abs(got[0].astype(int) - want.astype(int)).mean() < 4


def test_rotation_helper_direction():
    img = np.zeros((2, 3, 3), np.uint8)
    img[0, 0] = 255  # top-left
    assert apply_rotation(img, 90)[2, 0, 0] == 255  # CCW: top-left -> bottom-left
    assert apply_rotation(img, 270)[0, 1, 0] == 255  # CW: top-left -> top-right
    assert apply_rotation(img, 0) is img


def test_image_folder_and_single_image(tmp_path):
    import cv2

    folder = tmp_path / "frames"
    folder.mkdir()
    frames = _pattern(4)
    for i, f in enumerate(frames):
        cv2.imwrite(str(folder / f"{i:06d}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    (folder / "notes.txt").write_text("ignored")
    src = open_video(folder, image_fps=30)
    assert (src.kind, src.num_frames, src.fps, src.width, src.height) == ("images", 4, 30, 96, 64)
    got = src.read()
    assert np.array_equal(got.frames, frames)
    np.testing.assert_allclose(got.pts_seconds, np.arange(4) / 30)
    one = open_video(folder / "000002.png").read()
    assert np.array_equal(one.frames[0], frames[2])


def test_chunks_are_bounded(mead_video):
    from itertools import islice

    src = open_video(mead_video)
    assert (src.width, src.height) == (1920, 1080)
    chunks = list(islice(src.iter_chunks(8), 3))  # a generator: nothing beyond these is decoded
    assert [len(c) for c in chunks] == [8, 8, 8]
    assert np.array_equal(np.concatenate([c.indices for c in chunks]), np.arange(24))


def test_chunk_buffers_are_reused_only_when_nothing_holds_them(tmp_path):
    """A fresh buffer per chunk makes the kernel zero new pages for every chunk (about 1 CPU s per 350
    frames at 1080p); a buffer that a chunk, a view of it or a queue still holds must never be refilled."""
    frames = _pattern(n=12)
    path = _write_video(tmp_path / "p.mp4", frames)
    src = open_video(path)
    kept = list(src.iter_chunks(4))  # every chunk held: three buffers, each with its own frames
    assert len({id(c.frames) for c in kept}) == 3
    for c in kept:  # each frame's own green level (20 apart), not a later chunk's
        assert np.abs(np.median(c.frames[:, 32:, 32:, 1], axis=(1, 2)) - frames[c.indices, 0, -1, 1]).max() <= 3
    views = [c.frames[1] for c in kept]  # a view keeps its buffer as well
    again = [c.frames[1].copy() for c in src.iter_chunks(4)]  # one at a time: buffers go round
    for v, a in zip(views, again):
        assert np.array_equal(v, a)
    seen = []
    for c in src.iter_chunks(4):
        seen.append(c.frames.__array_interface__["data"][0])
        del c
    assert len(set(seen)) < 3  # consumed one at a time, a buffer came back


def test_chunk_buffer_pool():
    from spectre.io.video import ChunkBuffers

    pool = ChunkBuffers()
    a = pool.take((2, 3))
    b = pool.take((2, 3))
    assert a is not b  # a is still held
    a_id = id(a)
    del a
    c = pool.take((2, 3))
    assert id(c) == a_id  # released: refilled
    view = c[0]
    del c
    assert pool.take((2, 3)) is not view.base  # a view still holds it
    big = pool.take((4, 3))
    assert big.shape == (4, 3) and big.dtype == np.uint8


# ---- bad input: one-line InputError -------------------------------------------------------------
def _assert_one_line(exc: InputError, path: Path):
    msg = str(exc)
    assert "\n" not in msg and str(path) in msg


def test_missing_and_non_video(tmp_path):
    for path in (tmp_path / "nope.mp4",):
        with pytest.raises(InputError) as e:
            open_video(path)
        _assert_one_line(e.value, path)
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video at all\n" * 50)
    with pytest.raises(InputError) as e:
        open_video(text)
    _assert_one_line(e.value, text)
    bad_img = tmp_path / "bad.png"
    bad_img.write_bytes(b"\x89PNG garbage")
    with pytest.raises(InputError):
        open_video(bad_img)
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    with pytest.raises(InputError):
        open_video(empty_dir)


def test_corrupt_and_truncated(tmp_path, lrs3_video):
    data = Path(lrs3_video).read_bytes()
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(data[:64] + bytes(len(data) - 64))  # header kept, everything else zeroed
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(data[: len(data) // 3])
    for path in (corrupt, truncated):
        with pytest.raises(InputError) as e:
            src = open_video(path)
            list(src.iter_chunks(8))
        _assert_one_line(e.value, path)


def test_truncated_faststart_file_is_reported(tmp_path):
    import av

    frames = (np.random.default_rng(0).random((50, 64, 64, 3)) * 255).astype(np.uint8)
    full = tmp_path / "faststart.mp4"
    with av.open(str(full), "w", options={"movflags": "faststart"}) as c:  # index first, then data
        s = c.add_stream("libx264", rate=25)
        s.width = s.height = 64
        s.pix_fmt = "yuv420p"
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    assert len(open_video(full).read()) == 50
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    src = open_video(cut)  # the index is intact, the data is not
    with pytest.raises(InputError, match="truncated") as e:
        list(src.iter_chunks(8))
    _assert_one_line(e.value, cut)


def test_zero_frame_and_audio_only(tmp_path):
    import av

    audio_only = tmp_path / "audio.m4a"
    with av.open(str(audio_only), "w") as c:
        s = c.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 16000
        for p in s.encode(frame):
            c.mux(p)
        for p in s.encode():
            c.mux(p)
    with pytest.raises(InputError, match="audio-only"):
        open_video(audio_only)

    zero = tmp_path / "zero.mp4"
    with av.open(str(zero), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 64, 64, "yuv420p"
    with pytest.raises(InputError) as e:
        open_video(zero)
    _assert_one_line(e.value, zero)
