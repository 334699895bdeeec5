"""VideoWriter: frame count, timestamps, H.264/yuv420p, audio muxed from the input, atomic output."""
from __future__ import annotations

import math
import os
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from spectre.errors import OutputError
from spectre.io.writer import X264_UP_TO_AVX2, VideoWriter, _yuv420_frame, x264_asm
from spectre.render.visualize import compose, shape_frames


def read_video(path):
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        frames, pts = [], []
        for f in c.decode(video=0):
            frames.append(f.to_ndarray(format="rgb24"))
            pts.append(float(f.pts * vs.time_base))
        info = {"codec": vs.codec_context.name, "pix_fmt": vs.codec_context.pix_fmt,
                "audio": [(a.codec_context.name, a.codec_context.sample_rate,
                           float(a.duration * a.time_base) if a.duration else None) for a in c.streams.audio]}
    return frames, pts, info


def test_grid_video_keeps_frames_timing_and_audio(lrs3_video, tmp_path):
    frames, pts, info_in = read_video(lrs3_video)
    out = tmp_path / "grid.mp4"
    H, W = frames[0].shape[:2]
    with VideoWriter(out, 25, (2 * W, H), audio_from=lrs3_video, pts=pts) as w:
        for f in frames:
            w.write(compose("grid", 255 - f, np.ones(f.shape[:2]), f))
    got, got_pts, info = read_video(out)
    assert len(got) == len(frames)
    np.testing.assert_allclose(got_pts, pts, atol=1e-3)
    assert info["codec"] == "h264" and info["pix_fmt"] == "yuv420p"
    assert len(info["audio"]) == 1 and info["audio"][0][:2] == info_in["audio"][0][:2]
    assert abs(info["audio"][0][2] - info_in["audio"][0][2]) < 0.05
    # right half is the input: lossy but close
    err = np.abs(got[len(got) // 2][:, W:].astype(float) - frames[len(got) // 2]).mean()
    assert err < 4.0


def test_frames_reach_the_encoder_as_swscale_would_convert_them(lrs3_video):
    """The writer converts RGB to yuv420p itself (OpenCV, for speed): the planes must be those of FFmpeg's own
    conversion (BT.601, limited range), or every video's colours would shift. Chroma differs a little at
    edges: OpenCV averages each 2x2 block, FFmpeg's same-size path takes one pixel of it."""
    frames, _, _ = read_video(lrs3_video)
    for img in (frames[0], frames[-1], compose("grid", 255 - frames[5], np.ones(frames[5].shape[:2]), frames[5])):
        img = np.ascontiguousarray(img[: img.shape[0] // 2 * 2, : img.shape[1] // 2 * 2])
        ours = _yuv420_frame(img)
        ffmpeg = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
        assert ours.format.name == "yuv420p" and (ours.width, ours.height) == (img.shape[1], img.shape[0])
        a, b = ours.to_ndarray().astype(int), ffmpeg.to_ndarray().astype(int)
        h = img.shape[0]
        assert np.abs(a[:h] - b[:h]).max() <= 1  # luma
        assert abs(a[h:].mean() - b[h:].mean()) < 0.2 and np.abs(a[h:] - b[h:]).mean() < 1.0  # chroma


@pytest.mark.parametrize("h, left, right", [(224, 224, 224), (512, 512, 512), (226, 96, 130), (6, 4, 2)])
def test_converted_frames_side_by_side_are_the_conversion_of_the_frames_side_by_side(h, left, right):
    """The video process converts only the render half of the grid and puts it beside the window that the
    tracking process converted (``i420_beside``): the bytes of converting the whole grid, for even sizes
    (heights that are not a multiple of 4 included, where a chroma plane ends mid-row)."""
    from spectre.io.writer import i420_beside, rgb_to_i420

    rng = np.random.default_rng(h)
    a, b = (rng.integers(0, 256, (3, h, w, 3), dtype=np.uint8) for w in (left, right))
    whole = rgb_to_i420(np.concatenate([a, b], axis=2))
    assert whole.shape == (3, h * 3 // 2, left + right)
    assert np.array_equal(whole[1], _yuv420_frame(np.concatenate([a, b], axis=2)[1]).to_ndarray())
    assert np.array_equal(i420_beside(rgb_to_i420(a), rgb_to_i420(b)), whole)


def test_writing_converted_frames_writes_the_same_video(tmp_path):
    """``write_i420`` of converted frames gives the file ``write`` gives for the RGB frames; a frame of the
    wrong shape is refused."""
    from spectre.io.writer import rgb_to_i420

    frames = np.random.default_rng(1).integers(0, 256, (5, 32, 48, 3), dtype=np.uint8)
    for name, write, batch in (("rgb", "write", frames), ("i420", "write_i420", rgb_to_i420(frames))):
        with VideoWriter(tmp_path / f"{name}.mp4", 25, (48, 32), crf=20, preset="veryfast") as w:
            for i, f in enumerate(batch):
                getattr(w, write)(f, i * 0.04)
    assert (tmp_path / "rgb.mp4").read_bytes() == (tmp_path / "i420.mp4").read_bytes()
    with VideoWriter(tmp_path / "bad.mp4", 25, (48, 32)) as w, pytest.raises(ValueError, match="I420"):
        w.write_i420(rgb_to_i420(frames)[0, :-2])


def test_uncopyable_audio_is_reencoded_to_aac(tmp_path):
    wav = tmp_path / "tone.wav"
    with av.open(str(wav), "w") as c:
        s = c.add_stream("pcm_s16le", rate=16000, layout="mono")
        t = np.arange(16000) / 16000
        samples = (0.3 * np.sin(2 * math.pi * 440 * t) * 32767).astype(np.int16)[None]
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = 16000
        for p in s.encode(frame):
            c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    out = tmp_path / "o.mp4"
    with VideoWriter(out, 25, (33, 17), audio_from=wav) as w:  # odd size is padded
        for i in range(25):
            w.write(np.full((17, 33, 3), i * 10, np.uint8))
    frames, pts, info = read_video(out)
    assert len(frames) == 25 and frames[0].shape[:2] == (18, 34)
    np.testing.assert_allclose(pts, np.arange(25) / 25, atol=1e-3)
    assert info["audio"][0][0] == "aac" and abs(info["audio"][0][2] - 1.0) < 0.1


def test_render_video_encoder_settings_reach_libx264(tmp_path):
    from spectre.reconstruct.compose import ENCODER, open_video_writer
    from spectre.reconstruct.window import VideoWindow

    out = tmp_path / "a.mp4"
    with open_video_writer("grid", VideoWindow(32, 16, "full"), out, 25) as w:
        for i in range(5):
            w.write(np.full((16, 64, 3), i * 40, np.uint8))
    data = out.read_bytes()  # libx264 writes the settings it ran with into the stream
    settings = data[data.index(b"x264 - core"):].split(b"\0")[0].decode()
    assert f"crf={ENCODER['crf']:.1f}" in settings
    for option in ENCODER["x264_params"].split(":"):
        assert f" {option} " in f" {settings} ", option


# the render video's settings on a 448x224 grid of a 224² clip, encoded three times in one process with the
# heap written over in between (and glibc keeping freed buffers, so the encoder is given that memory)
_THRICE = """
import sys
import av
import numpy as np
from spectre.reconstruct.compose import open_video_writer
from spectre.reconstruct.window import VideoWindow
with av.open(sys.argv[1]) as c:
    frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
for k, name in enumerate(sys.argv[2:]):
    junk = [np.full(1 << 20, 37 + k, np.uint8) for _ in range(100)]
    del junk
    with open_video_writer("grid", VideoWindow(224, 224, "full"), name, 25) as w:
        for f in frames:
            w.write(np.concatenate([f, f[:, ::-1] // 2], axis=1))
"""


def test_the_same_frames_encode_to_the_same_bytes_whatever_the_heap_held(lrs3_video, tmp_path):
    import subprocess
    import sys

    names = [str(tmp_path / f"{k}.mp4") for k in range(3)]
    from spectre.allocator import MALLOC_ENV

    subprocess.run([sys.executable, "-c", _THRICE, str(lrs3_video), *names], env={**os.environ, **MALLOC_ENV},
                   check=True)
    first = Path(names[0]).read_bytes()
    assert all(Path(n).read_bytes() == first for n in names[1:])


def test_x264_keeps_to_avx2_on_cpus_with_avx512():
    assert x264_asm(frozenset({"sse2", "avx2", "avx512f", "avx512bw"})) == X264_UP_TO_AVX2
    assert x264_asm(frozenset({"sse2", "avx", "avx2"})) is None  # x264 picks its own code
    assert x264_asm(frozenset()) is None  # not Linux, or not x86


def test_no_overwrite_and_no_partial_file(tmp_path):
    out = tmp_path / "a.mp4"
    out.write_bytes(b"keep")
    with pytest.raises(OutputError):
        VideoWriter(out, 25, (16, 16))
    with pytest.raises(RuntimeError):
        with VideoWriter(out, 25, (16, 16), overwrite=True) as w:
            w.write(np.zeros((16, 16, 3), np.uint8))
            raise RuntimeError("boom")
    assert out.read_bytes() == b"keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4"]
    with pytest.raises(ValueError):
        with VideoWriter(tmp_path / "b.mp4", 25, (16, 16)) as w:
            w.write(np.zeros((8, 16, 3), np.uint8))
    assert not (tmp_path / "b.mp4").exists()


def test_shape_frames_layouts(golden_dir):
    g = np.load(golden_dir / "shading.npz")
    from spectre.geometry import project_to_crop
    verts = torch.from_numpy(g["verts"])
    crop = project_to_crop(verts, torch.from_numpy(g["in_cam"]))
    faces = torch.from_numpy(g["faces"][0]).long()
    images = [np.full((224, 224, 3), 200, np.uint8)] * 2
    grid = list(shape_frames(verts, crop, faces, images, "grid"))
    assert len(grid) == 2 and grid[0].shape == (224, 448, 3)
    assert (grid[0][:, 224:] == 200).all()  # right half: the input
    render = list(shape_frames(verts, crop, faces, None, "render"))
    np.testing.assert_array_equal(render[0], grid[0][:, :224])
    over = list(shape_frames(verts, crop, faces, images, "overlay"))[0]
    fg = render[0].sum(-1) > 0
    assert (over[~fg] == 200).all() and (over[fg] != 200).any()
    # the same render placed into a 2x larger "original frame" by the crop transform
    m = torch.tensor([[[0.5, 0.0, -10.0], [0.0, 0.5, -20.0]]]).repeat(2, 1, 1)  # frame px -> crop px
    frame = [np.zeros((500, 480, 3), np.uint8)] * 2
    big = list(shape_frames(verts, crop, faces, frame, "render", crop_transforms=m))[0]
    assert big.shape == (500, 480, 3)
    small = torch.from_numpy(big).permute(2, 0, 1)[None].float()
    from spectre.render.renderer import warp_affine
    back = warp_affine(small, m[0], 224)[0].permute(1, 2, 0).numpy()
    inner = fg & (np.abs(np.diff(render[0].astype(float), axis=0, prepend=0)).sum(-1) < 20)
    assert np.abs(back[inner] - render[0][inner]).mean() < 12


def test_encoder_thread_writes_what_the_writer_writes(tmp_path):
    from spectre.io.writer import EncoderThread, rgb_to_i420

    frames = np.random.default_rng(0).integers(0, 256, (9, 32, 48, 3), dtype=np.uint8)
    with VideoWriter(tmp_path / "direct.mp4", 25, (48, 32), crf=20, preset="veryfast") as w:
        for i, f in enumerate(frames):
            w.write(f, i * 0.04)
    written = []
    w = VideoWriter(tmp_path / "thread.mp4", 25, (48, 32), crf=20, preset="veryfast")
    enc = EncoderThread(w, on_written=written.append)
    for a in range(0, 9, 4):  # batches of 4, 4, 1: more than the queue holds; one converted
        times = [i * 0.04 for i in range(a, min(a + 4, 9))]
        if a == 4:
            enc.put(rgb_to_i420(frames[a:a + 4]), times, i420=True)
        else:
            enc.put(frames[a:a + 4], times)
    enc.finish()
    w.close()
    assert written == [4, 4, 1] and not enc.thread.is_alive()
    assert (tmp_path / "thread.mp4").read_bytes() == (tmp_path / "direct.mp4").read_bytes()


def test_encoder_thread_raises_the_writers_error_and_stops_on_check(tmp_path):
    from spectre.io.writer import EncoderThread

    w = VideoWriter(tmp_path / "bad.mp4", 25, (48, 32))
    enc = EncoderThread(w)
    enc.put(np.zeros((1, 16, 16, 3), np.uint8))  # the wrong size: the thread's write fails
    with pytest.raises(ValueError, match="writer expects 48x32"):
        enc.finish()
    enc.stop()
    w.__exit__(ValueError, ValueError("stop"), None)
    assert not (tmp_path / "bad.mp4").exists() and not list(tmp_path.iterdir())

    class Stop(Exception):
        pass

    def check():
        raise Stop()

    w = VideoWriter(tmp_path / "stopped.mp4", 25, (48, 32))
    enc = EncoderThread(w, check=check)
    with pytest.raises(Stop):  # a job that stops: put returns by raising, the writer is the caller's again
        enc.put(np.zeros((1, 32, 48, 3), np.uint8))
    enc.stop()
    assert not enc.thread.is_alive()
    w.__exit__(Stop, Stop(), None)
    assert not list(tmp_path.iterdir())
