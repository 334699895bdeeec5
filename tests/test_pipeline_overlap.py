"""The overlapped job (issue 15): same numbers as the same schedule run sequentially, the face-centred
video (size, frame count, audio), the window render against the full-frame render, quiet progress
without a terminal and the last line naming the outputs."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from spectre.reconstruct.config import make_config
from spectre.reconstruct.fit_stream import StreamFit, assemble
from spectre.reconstruct.overlap import Progress
from spectre.reconstruct.reconstructor import Reconstructor

#: small windows and tracking chunks so a short clip is split into several of each
SMALL = {"identity_span": 12, "window": 8, "chunk_mb": 1}



def test_overlapped_pipeline_equals_the_sequential_schedule(short_clip, tmp_path):
    cfg = make_config(pipeline=SMALL)
    rec = Reconstructor(cfg)
    try:
        res = rec.run(short_clip, tmp_path, overwrite=True)
        assert res.timings["fit"] > 0 and res.num_frames == 27
        # the same schedule without threads: the whole track pushed at once into one StreamFit
        _, tracks = rec.track(short_clip)
        (track,) = tracks.tracks.values()
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # as the pipeline's fit thread
        try:
            fitter = StreamFit(rec.model, cfg.fit, rec.evaluator, span=SMALL["identity_span"],
                               window=SMALL["window"])
            pieces = fitter.push(np.asarray(track.landmarks68), np.asarray(track.valid),
                                 np.asarray(track.points478))
            pieces += fitter.finish()
        finally:
            torch.set_num_threads(threads)
    finally:
        rec.close()
    assert len(pieces) >= 3, "the clip is solved in several windows"
    seq = assemble(pieces)
    face = res.face
    # tolerance: float32 rounding only (same ops, same order; 1e-3 px on a 224 frame)
    np.testing.assert_allclose(face.landmarks2d, seq.landmarks2d, atol=1e-3)
    for k, v in seq.params.items():
        np.testing.assert_allclose(face.params[k], v, atol=1e-4, err_msg=k)
    # and the fit follows the tracked landmarks (mean error well under 3% of the 224 frame)
    ok = np.asarray(face.valid)
    assert np.abs(face.landmarks2d[ok] - np.asarray(track.landmarks68)[ok]).mean() < 6.0


def test_face_files_are_written_while_the_video_is_drawn(short_clip, tmp_path, monkeypatch):
    """The parameters and ARKit curves are written as soon as the fit is done, not after the video's last
    frames; the video (finished and renamed at its end) and then the sidecar, which marks the job as done,
    come after them."""
    seen = {}
    write_faces = Reconstructor._write_faces

    def spy(self, result, out, stem, overwrite):
        seen.update(video=(out / f"{stem}.mp4").exists(), sidecar=(out / f"{stem}.yaml").exists())
        return write_faces(self, result, out, stem, overwrite)

    monkeypatch.setattr(Reconstructor, "_write_faces", spy)
    rec = Reconstructor(make_config(pipeline=SMALL))
    try:
        res = rec.run(short_clip, tmp_path)
    finally:
        rec.close()
    assert seen == {"video": False, "sidecar": False}
    assert [p.name[len(short_clip.stem):] for p in res.outputs] == [".npz", "_arkit.csv", ".mp4", ".yaml"]


def test_face_window_video_size_frames_and_audio(short_clip, tmp_path):
    import av

    # a 128 px maximum height makes the 224² sample "tall": the default shows the face window
    out_face, out_full = tmp_path / "face", tmp_path / "full"
    for out, frame in ((out_face, "auto"), (out_full, "full")):
        rec = Reconstructor(make_config(video_height=128, video_frame=frame, pipeline=SMALL))
        try:
            rec.run(short_clip, out, stem="clip")
        finally:
            rec.close()
    for path, size in ((out_face / "clip.mp4", (256, 128)), (out_full / "clip.mp4", (448, 224))):
        with av.open(str(path)) as c:
            v = c.streams.video[0]
            assert (v.codec_context.width, v.codec_context.height) == size
            assert len(c.streams.audio) == 1, "the input's audio is kept"
            frames = list(c.decode(video=0))
        assert len(frames) == 27
    # the render half is not empty (a face is drawn), and in the face window it is centred
    img = frames[13].to_ndarray(format="rgb24")  # frames of the last video checked: the full-frame one
    assert img[:, :224].max() > 100
    with av.open(str(out_face / "clip.mp4")) as c:
        face_img = next(iter(c.decode(video=0))).to_ndarray(format="rgb24")
    ys, xs = np.nonzero(face_img[:, :128].max(-1) > 40)
    assert len(xs) > 500 and abs(xs.mean() - 64) < 24 and abs(ys.mean() - 64) < 32


def test_window_render_matches_the_full_frame_render():
    """The video's render (straight into a 512 px face window) against the full-resolution render of the
    same frame resampled into that window: mean |difference| < 2% and silhouette IoU > 0.95."""
    import cv2

    from spectre.geometry import project_to_crop
    from spectre.models import load_face_model
    from spectre.reconstruct.videostage import FaceRows, render_window
    from spectre.reconstruct.window import VideoWindow
    from spectre.render.visualize import render_shape_in_frame

    model = load_face_model("ict")
    W, H = 1920, 1080
    params = {k: v.numpy() for k, v in model.default_params(1).items()}
    params["expression"] = np.zeros_like(params["expression"])
    params["expression"][0, :5] = 0.4
    with torch.no_grad():
        lm = model(model.complete({k: torch.as_tensor(v) for k, v in params.items()})).landmarks[0, :, :2]
    s = 2.0 / (1.4 * float((lm.amax(0) - lm.amin(0)).max()))
    cam = np.array([[s, 0.0, 0.0]], np.float32)
    # the crop covers 520 px of the frame around (900, 500): frame px -> crop px
    k = 224.0 / 520.0
    crop_tform = np.array([[[k, 0, -k * (900 - 260)], [0, k, -k * (500 - 260)], [0, 0, 1]]])
    window = VideoWindow(W, H, "face", 512)
    box = np.array([[900 - 200, 500 - 240, 900 + 200, 500 + 240]], float)
    tw = window.transforms(box, np.zeros(1))
    face = FaceRows(params, cam, crop_tform, np.ones(1, bool))
    rgb, alpha = render_window(model, model.render_faces(), face, tw, window.size)
    with torch.no_grad():
        verts = model.vertices(model.complete({k: torch.as_tensor(v) for k, v in params.items()}))
        crop = project_to_crop(verts, torch.as_tensor(cam))
        full, full_a = render_shape_in_frame(verts, crop, model.render_faces(),
                                             torch.as_tensor(crop_tform[:, :2]).float(), (H, W))
    full = full[0].permute(1, 2, 0).numpy()
    full_a = full_a[0, 0].numpy()
    x0 = int(round(0.5 - (tw[0, 0, 2] + 0.5) / tw[0, 0, 0]))
    y0 = int(round(0.5 - (tw[0, 1, 2] + 0.5) / tw[0, 0, 0]))
    side = int(round(512 / tw[0, 0, 0]))
    ref = cv2.resize(full[y0:y0 + side, x0:x0 + side], (512, 512), interpolation=cv2.INTER_AREA)
    ref_a = cv2.resize(full_a[y0:y0 + side, x0:x0 + side], (512, 512), interpolation=cv2.INTER_AREA)
    assert alpha[0].sum() > 0.05 * 512 * 512, "the face covers a good part of the window"
    assert np.abs(rgb[0] - ref).mean() < 0.02
    inter = ((alpha[0] > 0.5) & (ref_a > 0.5)).sum()
    union = ((alpha[0] > 0.5) | (ref_a > 0.5)).sum()
    assert inter / union > 0.95


def test_window_resamples_bilinearly_up_to_twice_smaller_and_area_averages_beyond():
    import cv2

    from spectre.reconstruct.window import LINEAR_UP_TO, VideoWindow

    rng = np.random.default_rng(0)
    # smooth content plus fine noise: bilinear and area averaging differ in how they weigh the pixels
    base = cv2.resize(rng.integers(0, 256, (60, 100, 3), dtype=np.uint8), (2000, 1200), interpolation=cv2.INTER_CUBIC)
    frame = np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)[None]
    for face_px, linear in ((300, True), (700, False)):  # the window covers about 2.2x the face
        window = VideoWindow(2000, 1200, "face", 512)
        tw = window.transforms(np.array([[900, 500, 900 + face_px, 500 + face_px]], float), np.zeros(1))
        got = window.apply(frame, tw)[0]
        side = int(round(512 / tw[0, 0, 0]))
        assert (side <= LINEAR_UP_TO * 512) == linear
        x0 = int(round(0.5 - (tw[0, 0, 2] + 0.5) / tw[0, 0, 0]))
        y0 = int(round(0.5 - (tw[0, 1, 2] + 0.5) / tw[0, 0, 0]))
        crop = frame[0, y0:y0 + side, x0:x0 + side]
        area = cv2.resize(crop, (512, 512), interpolation=cv2.INTER_AREA)
        if linear:
            assert np.array_equal(got, cv2.resize(crop, (512, 512), interpolation=cv2.INTER_LINEAR))
            assert np.abs(got.astype(float) - area).mean() < 4.0, "close to area averaging"
        else:
            assert np.array_equal(got, area)


def test_progress_counts_the_mean_over_stages():
    got = []
    p = Progress(got.append, ("track", "fit", "video"))
    p.add("track", 30)
    p.add("fit", 30)
    assert sum(got) == 20
    p.add("video", 30)
    assert sum(got) == 30


@pytest.mark.slow
def test_no_progress_without_a_terminal_and_last_line_names_the_outputs(short_clip, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "spectre", "reconstruct", str(short_clip), "-o", str(out),
                           "--layout", "none"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "frame/s" not in proc.stderr and "\r" not in proc.stderr and "%|" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last == f"wrote {out / short_clip.stem}.{{npz,yaml,_arkit.csv}}"
    assert (out / f"{short_clip.stem}.npz").is_file()


def test_evaluation_does_not_take_a_face_window_for_the_input_frame(tmp_path):
    """A 1080p grid shows a face window by default: lip-reading and the judges must not read it as a render
    in the input's pixel frame; a 224² grid and a 1080p ``render`` layout stay in the input's frame."""
    import yaml

    from spectre.evaluate.lipread import reconstruct_render

    result = tmp_path / "clip.npz"
    (tmp_path / "clip.mp4").write_bytes(b"")

    def render_of(layout, height, frame="auto"):
        cfg = yaml.safe_dump({"layout": layout, "video_frame": frame, "video_height": 512})
        return reconstruct_render(result, {"config": np.array(cfg), "height": np.array(height)})

    assert render_of("grid", 1080) is None
    assert render_of("grid", 224) == (tmp_path / "clip.mp4", "left")
    assert render_of("render", 1080) == (tmp_path / "clip.mp4", "full")
    assert render_of("render", 224, frame="face") is None


def test_clips_up_to_one_window_are_fitted_exactly_as_fit_track(short_clip):
    """With the default schedule (identity span = window = 128 frames) a clip of at most 128 frames gets
    the same identity frames and the same single window as :func:`fit_track`: the same numbers."""
    from spectre.reconstruct.fit import fit_track

    rec = Reconstructor(make_config(layout="none"))
    try:
        _, tracks = rec.track(short_clip)
        (track,) = tracks.tracks.values()
        lm, valid, p478 = np.asarray(track.landmarks68), np.asarray(track.valid), np.asarray(track.points478)
        old = fit_track(rec.model, np.nan_to_num(lm.astype(np.float64)), valid, rec.cfg.fit,
                        evaluator=rec.evaluator, points478=p478)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # as fit_track
        try:
            pc = rec.cfg.pipeline
            fitter = StreamFit(rec.model, rec.cfg.fit, rec.evaluator, span=pc.identity_span, window=pc.window)
            new = assemble(fitter.push(lm, valid, p478) + fitter.finish())
        finally:
            torch.set_num_threads(threads)
    finally:
        rec.close()
    np.testing.assert_allclose(new.landmarks2d, old.landmarks2d, atol=1e-3)
    np.testing.assert_allclose(new.cam, old.cam, atol=1e-5)
