"""Independent judges of `spectre evaluate`: landmarks re-detected on the render and on the input."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from spectre.cli import main
from spectre.evaluate import judge as J
from spectre.evaluate.report import load_run

needs_dlib = pytest.mark.skipif(not J.dlib_available(), reason="dlib / face_recognition_models not installed "
                                "(pip install 'spectre-face[judge]')")


def test_dlib_model_is_found_without_importing_its_package():
    import sys

    if not J.dlib_available():
        pytest.skip("dlib / face_recognition_models not installed")
    sys.modules.pop("face_recognition_models", None)
    path = J._dlib_model_path()
    assert path is not None and path.name == J.DLIB_MODEL_FILE and path.stat().st_size > 1_000_000
    assert "face_recognition_models" not in sys.modules


def test_unknown_judge_is_a_typed_error():
    from spectre.errors import InputError

    with pytest.raises(InputError, match="unknown judge"):
        J.make_judges(["nope"])
    assert J.make_judges([]) == []


def test_arkit_activity_counts_weights_above_threshold(tmp_path):
    csv = tmp_path / "x_arkit.csv"
    csv.write_text("frame,time,valid,a,b,c\n0,0.0,1,0.5,0.05,0.2\n1,0.04,1,0.5,0.0,0.0\n2,0.08,0,0.9,0.9,0.9\n")
    act = J.arkit_activity(csv)
    assert act["active_per_frame"] == pytest.approx(1.5)  # frame 2 is not valid
    assert list(act["top"]) == ["a", "c"]
    assert J.arkit_activity(tmp_path / "missing.csv") is None


def _result(tmp_path, video, frames, name="clip"):
    """A `spectre reconstruct`-like result whose render (<name>.mp4, layout render) is ``video`` itself."""
    d = tmp_path / "results"
    d.mkdir(exist_ok=True)
    inp = tmp_path / "input.mp4"
    shutil.copy(video, inp)
    shutil.copy(video, d / f"{name}.mp4")
    lm = np.zeros((frames, 68, 2), np.float32)
    lm[:] = np.random.default_rng(0).uniform(50, 150, (68, 2))
    np.savez(d / f"{name}.npz", landmarks2d=lm, tracked68=lm, valid=np.ones(frames, bool), fps=25.0,
             config="layout: render\n", video=str(inp))
    return d


@needs_dlib
def test_dlib_judge_scores_an_identical_render_as_perfect(lrs3_video, tmp_path):
    from spectre.io.video import open_video

    n = open_video(lrs3_video, warn_fps=False).num_frames
    d = _result(tmp_path, lrs3_video, n)
    out = tmp_path / "run"
    assert main(["evaluate", str(d), "--judge", "dlib", "-o", str(out), "--no-plots"]) == 0
    rep = load_run(out)
    j = rep["videos"][0]["judges"]["dlib"]
    assert j["detected_render"] >= 0.8 * n
    r = j["render"]
    assert r["nme_mouth"] < 1e-6 and r["aperture_r"] > 0.999 and r["jitter_pred"] == pytest.approx(r["jitter_ref"])
    # the (fake, constant) tracked landmarks are far from what dlib sees
    assert j["tracked"]["nme_mouth"] > 0.1
    assert rep["settings"]["judges"] == ["dlib"]
    assert "Independent judge: dlib" in (out / "report.md").read_text()


@needs_dlib
@pytest.mark.slow
def test_dlib_judge_sees_a_time_reversed_render(lrs3_video, tmp_path):
    """The render half of a grid played backwards: the judge loses the aperture correlation."""
    from test_evaluate_lipread import _write_video

    from spectre.io.video import open_video

    frames = open_video(lrs3_video, warn_fps=False).read().frames
    grid = tmp_path / "rev_grid.mp4"
    _write_video(grid, np.ascontiguousarray(np.concatenate([frames[::-1], frames], 2)))
    out = tmp_path / "run"
    assert main(["evaluate", str(grid), "--half", "left", "--judge", "dlib", "-o", str(out), "--no-plots"]) == 0
    r = load_run(out)["videos"][0]["judges"]["dlib"]["render"]
    assert r["aperture_r"] < 0.5 and r["nme_mouth"] > 0.02


def test_judged_frames_are_decoded_ahead_and_the_decoder_stops_with_them(lrs3_video):
    """The judge's frames are decoded in a thread beside the detector (1080p evaluation 6.1-7.1 -> 5.1-5.6 s);
    taking fewer frames than the video holds stops that thread, and the frames are the video's own."""
    import threading
    import time

    from spectre.io.video import open_video

    frames = J._frames(J.VideoSide(lrs3_video, half="left", start=2), 5)
    got = [next(frames)]
    assert any(t.name == "spectre-prefetch" for t in threading.enumerate())  # decoding ahead
    got += list(frames)  # ends after 5 of the video's frames
    want = open_video(lrs3_video, warn_fps=False).read(7).frames[2:7]
    assert [i for i, _ in got] == [0, 1, 2, 3, 4]
    assert all(np.array_equal(f, w[:, :w.shape[1] // 2]) for (_, f), w in zip(got, want))
    deadline = time.monotonic() + 5
    while any(t.name == "spectre-prefetch" for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(t.name == "spectre-prefetch" for t in threading.enumerate())
