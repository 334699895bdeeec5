"""Tracking, 478->68 mapping, gaps, multi-face identities and filtering, on the sample clips and on
synthetic videos built from them (side by side, blanked frames, re-encoded)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from spectre.errors import InputError, NoFaceError
from spectre.faces import (
    FaceTracker,
    FaceTracks,
    OneEuroConfig,
    OneEuroFilter,
    TrackerConfig,
    landmark_jitter,
    mp478_to_ibug68,
    select_faces,
    track_video,
)
from spectre.faces.landmarks import IBUG68_FROM_MP478, MP478_TO_IBUG68
from spectre.io.video import VideoSource, open_video

# Mouth states read by eye from contact sheets of the raw frames (no landmarks drawn), per clip:
# frame indices where the lips are clearly closed / clearly apart.
MOUTH_LABELS = {
    "W023_level_2_surprised_010": ({12, 42, 45, 48, 72}, {0, 3, 9, 18, 24, 36, 51}),
    "OzA6jRYjVQs_00004": ({21}, {6, 9, 15}),
}


def _only(tracks: FaceTracks):
    assert len(tracks.tracks) == 1, sorted(tracks.tracks)
    return next(iter(tracks.tracks.values()))


@pytest.fixture(scope="module")
def tracked(sample_videos):
    """Whole-clip tracks (all faces) for the two clips used below, computed once."""
    out = {}
    for name in MOUTH_LABELS:
        src = open_video(sample_videos[name])
        out[name] = (src, FaceTracker().track(src))
    return out


def _write(path: Path, frames: np.ndarray, fps: int = 25, crf: int = 18) -> Path:
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        s.options = {"crf": str(crf)}
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def test_mapping_table_is_well_formed():
    assert len(IBUG68_FROM_MP478) == 68
    assert np.allclose(MP478_TO_IBUG68.sum(1), 1.0)
    used = [i for ids in IBUG68_FROM_MP478 for i in ids]
    assert min(used) >= 0 and max(used) < 478 and len(set(used)) == len(used)
    pts = np.random.default_rng(0).normal(size=(2, 478, 3))
    assert mp478_to_ibug68(pts).shape == (2, 68, 3)
    np.testing.assert_allclose(mp478_to_ibug68(pts)[:, 8], pts[:, 152])  # chin is one vertex


@pytest.mark.parametrize("name", list(MOUTH_LABELS))
def test_single_face_present_and_ordered(tracked, name):
    src, tracks = tracked[name]
    t = _only(tracks)
    assert len(tracks) == src.num_frames and t.present.all() and not t.interpolated.any()
    assert np.median(t.confidence) > 0.6
    L = t.landmarks68
    assert t.points478.shape == (len(tracks), 478, 3) and np.isfinite(L).all()
    x, y = L[..., 0], L[..., 1]
    tol = 0.01 * (y[:, 8] - y[:, 27])  # closed lips may touch/cross by a hair
    # left/right: subject's right (iBUG 0, 36, 48, 17) is on the image left
    for a, b in [(0, 16), (1, 15), (4, 12), (17, 26), (36, 45), (39, 42), (31, 35), (48, 54), (60, 64), (49, 53)]:
        assert (x[:, a] < x[:, b]).all(), (a, b)
    # upper/lower: brows above eyes above nose tip above mouth above chin; lips in order
    for a, b in [(19, 37), (24, 44), (27, 30), (30, 33), (33, 51), (51, 62), (62, 66), (66, 57), (57, 8),
                 (37, 41), (43, 47), (50, 58), (52, 56)]:
        assert (y[:, a] <= y[:, b] + tol).all(), (a, b)
    # contour runs monotonically down to the chin on both sides
    assert (np.diff(y[:, 0:9], axis=1) > 0).mean() > 0.95 and (np.diff(y[:, 8:17], axis=1) < 0).mean() > 0.95
    # 478 points are kept, bbox covers them
    assert (t.bbox[:, 0] <= L[..., 0].min(1)).all() and (t.bbox[:, 3] >= L[..., 1].max(1)).all()


@pytest.mark.parametrize("name", list(MOUTH_LABELS))
def test_inner_lip_aperture_follows_visible_opening(tracked, name):
    _, tracks = tracked[name]
    L = _only(tracks).landmarks68
    aperture = np.linalg.norm(L[:, 66] - L[:, 62], axis=-1) / np.linalg.norm(L[:, 16] - L[:, 0], axis=-1)
    closed, open_ = MOUTH_LABELS[name]
    assert aperture[sorted(closed)].max() < 0.02
    assert aperture[sorted(open_)].min() > 0.05


def test_reencoded_copy_gives_nearly_the_same_points(tmp_path, tracked):
    src, tracks = tracked["OzA6jRYjVQs_00004"]
    copy = _write(tmp_path / "copy.mp4", src.read().frames, crf=23)
    again = _only(track_video(copy))
    ref = _only(tracks)
    iod = np.linalg.norm(ref.landmarks68[:, 36] - ref.landmarks68[:, 45], axis=-1)
    err = np.linalg.norm(again.landmarks68 - ref.landmarks68, axis=-1).mean(1) / iod
    assert np.median(err) < 0.03 and err.max() < 0.08


def test_short_gaps_interpolated_long_gaps_split(sample_videos):
    frames = open_video(sample_videos["0Fi83BHQsMA_00002"]).read().frames.copy()  # 41 frames
    frames[10:13] = 0          # 3-frame gap  (<= max_gap 5): interpolated, same identity
    frames[20:30] = 0          # 10-frame gap (> max_gap): track split
    chunks = list(FaceTracker(TrackerConfig(max_gap=5, max_faces=1)).stream(VideoSource.from_array(frames), chunk_size=8))
    # chunks come out in order, final, and are held back at most max_gap frames
    assert np.array_equal(np.concatenate([c.frames.indices for c in chunks]), np.arange(41))
    assert max(len(c.frames) for c in chunks) <= 8 + 5
    tracks = FaceTracks.concat([c.faces for c in chunks])
    assert len(tracks) == 41 and len(tracks.tracks) == 2
    first, second = (tracks.tracks[k] for k in sorted(tracks.tracks))
    assert first.interpolated[10:13].all() and not first.present[10:13].any()
    assert first.present[:10].all() and first.present[13:20].all()
    assert not first.valid[20:].any() and not second.valid[:30].any() and second.present[30:].all()
    assert np.isfinite(first.landmarks68[10:13]).all() and (first.confidence[10:13] == 0).all()
    # interpolation is linear between the neighbours
    np.testing.assert_allclose(first.points478[11], (first.points478[9] + first.points478[13]) / 2, atol=1e-3)
    # missing frames are flagged, never dropped
    assert not (first.valid | second.valid)[20:30].any()
    largest = select_faces(tracks, "largest")
    t = _only(largest)
    assert t.valid.sum() == 31 and not t.valid[20:30].any()


def test_two_faces_side_by_side_keep_identities(tmp_path, sample_videos):
    a = open_video(sample_videos["0Fi83BHQsMA_00002"]).read(24).frames
    b = open_video(sample_videos["PbgB2TaYhio_00007"]).read(24).frames
    b_small = b[:, ::2, ::2].repeat(2, axis=1).repeat(2, axis=2)[:, :224, :224]  # same size, blurrier
    both = np.concatenate([a, b_small], axis=2)  # (24, 224, 448, 3)
    path = _write(tmp_path / "two.mp4", both)
    src = open_video(path)
    chunks = list(FaceTracker(TrackerConfig(max_faces=2)).stream(src, chunk_size=10))
    assert [len(c.frames) for c in chunks] == [10, 10, 4]
    assert all(np.array_equal(c.frames.indices, c.faces.indices) for c in chunks)
    tracks = FaceTracks.concat([c.faces for c in chunks])
    assert len(tracks.tracks) == 2
    left, right = sorted(tracks.tracks.values(), key=lambda t: np.nanmean(t.bbox[:, 0]))
    assert left.present.all() and right.present.all()
    assert (left.bbox[:, 2] < 240).all() and (right.bbox[:, 0] > 208).all()  # ids never swap sides
    assert select_faces(tracks, right.track_id).tracks.keys() == {right.track_id}
    assert len(select_faces(tracks, "all").tracks) == 2
    with pytest.raises(InputError):
        select_faces(tracks, 99)
    with pytest.raises(InputError):
        select_faces(tracks, "biggest")
    # "largest": per frame the face with the largest bbox w+h (official rule)
    big = _only(select_faces(tracks, "largest"))
    bigger = np.where(left.size >= right.size, 0, 1)
    want = np.where(bigger[:, None, None] == 0, left.landmarks68, right.landmarks68)
    np.testing.assert_array_equal(big.landmarks68, want)


def test_no_face_raises_one_line_error():
    frames = np.tile(np.linspace(0, 255, 64, dtype=np.uint8)[None, None, :, None], (5, 48, 1, 3))
    with pytest.raises(NoFaceError) as e:
        track_video(VideoSource.from_array(frames, name="gradient"))
    assert "\n" not in str(e.value) and "gradient" in str(e.value)


def test_whole_clip_tracking_holds_chunks_of_bounded_memory(monkeypatch):
    """``spectre track`` decoded 1080p in chunks of 32 frames (200 MB each, 1 GB held in all): whole-clip
    tracking chunks by memory, about 64 MB (10 frames at 1080p), and small frames by count."""
    asked = []
    iter_chunks = VideoSource.iter_chunks

    def spy(self, chunk_size=32):
        asked.append(chunk_size)
        return iter_chunks(self, chunk_size)

    monkeypatch.setattr(VideoSource, "iter_chunks", spy)
    tracker = FaceTracker()
    tracker.track(VideoSource.from_array(np.zeros((12, 1080, 1920, 3), np.uint8), name="hd"))
    tracker.track(VideoSource.from_array(np.zeros((12, 1080, 1920, 3), np.uint8), name="hd"), chunk_mb=1000)
    tracker.track(VideoSource.from_array(np.zeros((12, 224, 224, 3), np.uint8), name="small"))
    assert asked == [10, 32, 32]


def test_one_euro_filter_reduces_noise_and_follows_steps():
    rng = np.random.default_rng(1)
    f = OneEuroFilter(OneEuroConfig(min_cutoff=1.0, beta=0.5))
    t = np.arange(200) / 25.0
    clean = np.where(t < 4, 0.0, 10.0)
    noisy = clean + rng.normal(0, 0.5, size=t.shape)
    out = np.array([f(np.array([v]), ti, scale=10.0)[0] for v, ti in zip(noisy, t)])
    assert np.std(out[20:100] - clean[20:100]) < 0.5 * np.std(noisy[20:100] - clean[20:100])
    assert abs(out[-1] - 10.0) < 0.5  # converges after the step
    assert out[105] > 5.0  # fast motion: lags only a few frames


def test_smoothing_reduces_jitter_on_a_clip(tracked, sample_videos):
    name = "OzA6jRYjVQs_00004"
    raw = _only(tracked[name][1]).landmarks68
    smooth = _only(track_video(sample_videos[name], config=TrackerConfig(smoothing=OneEuroConfig()))).landmarks68
    assert landmark_jitter(smooth) < 0.8 * landmark_jitter(raw)
    # the mouth still opens and closes (aperture keeps its range)
    ap = lambda L: np.linalg.norm(L[:, 66] - L[:, 62], axis=-1)
    assert np.ptp(ap(smooth)) > 0.6 * np.ptp(ap(raw))


def test_track_cli_batch_goes_on_after_bad_input(tmp_path, sample_videos, capsys):
    from spectre.cli import main
    from spectre.faces.tracks_file import load_tracks

    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42 truncated")
    good = sample_videos["PbgB2TaYhio_00007"]
    out = tmp_path / "out"
    rc = main(["track", str(bad), str(good), "-o", str(out)])
    err = capsys.readouterr().err
    assert rc == 1 and "broken.mp4" in err and "Traceback" not in err
    tracks = load_tracks(out / "PbgB2TaYhio_00007.tracks.npz")
    t = _only(tracks)
    assert len(tracks) == 35 and t.present.all() and t.points478.shape == (35, 478, 3)
    with np.load(out / "PbgB2TaYhio_00007.tracks.npz") as z:
        crops = z["crop_transforms"][0]
    # stored transforms put the face in the middle of the 224 crop
    from spectre.faces import transform_points
    centre = transform_points(crops, t.landmarks68).mean(1)
    assert np.all(np.abs(centre - 112) < 25)
    # existing output is not overwritten without --overwrite; single bad input -> exit code 2
    assert main(["track", str(good), "-o", str(out)]) == 5
    assert main(["track", str(bad), "-o", str(out)]) == 2


def test_track_cli_shows_a_frame_bar_in_a_terminal_only(tmp_path, sample_videos):
    """In a terminal: a bar of each input's frames with its total (tqdm's ``n/total``); ``--quiet`` or a pipe:
    no bar. The whole command as a process."""
    import subprocess
    import sys

    from terminal import run_in_terminal

    clip = sample_videos["PbgB2TaYhio_00007"]
    cmd = [sys.executable, "-m", "spectre", "track", str(clip)]
    code, shown = run_in_terminal([*cmd, "-o", str(tmp_path / "a")])
    assert code == 0 and "/35 [" in shown and "frame/s" in shown, shown
    code, quiet = run_in_terminal([*cmd, "-o", str(tmp_path / "b"), "--quiet"])
    piped = subprocess.run([*cmd, "-o", str(tmp_path / "c")], capture_output=True, text=True, timeout=300).stderr
    for text in (quiet, piped):
        assert "/35 [" not in text and "%|" not in text, text


def test_mapping_is_mirror_symmetric(tracked):
    """Track the horizontally flipped clip: iBUG point i must land where its mirror partner was."""
    src, tracks = tracked["OzA6jRYjVQs_00004"]
    flipped = np.ascontiguousarray(src.read().frames[:, :, ::-1])
    got = _only(FaceTracker().track(VideoSource.from_array(flipped))).landmarks68
    mirror = np.arange(68)
    pairs = ([(i, 16 - i) for i in range(8)] + [(17 + i, 26 - i) for i in range(5)] + [(31, 35), (32, 34)]
             + [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]
             + [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58), (60, 64), (61, 63), (65, 67)])
    for a, b in pairs:
        mirror[a], mirror[b] = b, a
    back = got[:, mirror].copy()
    back[..., 0] = src.width - 1 - back[..., 0]
    ref = _only(tracks).landmarks68
    iod = np.linalg.norm(ref[:, 36] - ref[:, 45], axis=-1)[:, None]
    err = np.linalg.norm(back - ref, axis=-1) / iod
    assert np.median(err) < 0.04 and np.percentile(err, 95) < 0.12


def test_fast_landmark_reader_matches_protobuf_attributes(sample_videos):
    import mediapipe as mp

    from spectre.faces.mesh import landmark_array as _landmark_array

    frame = open_video(sample_videos["OzA6jRYjVQs_00004"]).read(1).frames[0]
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True) as mesh:
        lm = mesh.process(frame).multi_face_landmarks[0]
    want = np.array([(p.x, p.y, p.z) for p in lm.landmark], np.float32)
    np.testing.assert_array_equal(_landmark_array(lm), want)
    lm.landmark[5].visibility = 0.5  # another layout -> the attribute path, same numbers
    np.testing.assert_array_equal(_landmark_array(lm), want)


def test_detect_every_keeps_last_confidence(sample_videos):
    t = _only(track_video(sample_videos["PbgB2TaYhio_00007"], config=TrackerConfig(max_faces=1, detect_every=4)))
    assert t.present.all() and (t.confidence > 0.5).all()
    # between detector runs the score is carried over unchanged
    assert np.array_equal(t.confidence[1:4], np.repeat(t.confidence[0], 3))


def test_a_signal_while_mediapipe_is_imported_waits_for_the_import():
    """SIGTERM while the first MediaPipe import runs (a batch's later video, in the job's own process): the
    import and the graphs finish, then the signal stops the command as usual. Handled inside MediaPipe's
    binding initialisation it failed the import instead ("initialization failed", then "type already
    defined" for every later video of the batch)."""
    import os
    import subprocess
    import sys

    code = """
import importlib.abc, os, signal, sys
from spectre.cli import Terminated, sigterm_as_interrupt
from spectre.faces.mesh import MeshDetector

class SignalMidImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "mediapipe.python":  # MediaPipe's package is being imported
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGTERM)
        return None

assert "mediapipe" not in sys.modules
sys.meta_path.insert(0, SignalMidImport())
det = MeshDetector()
with sigterm_as_interrupt():
    try:
        det.open()
    except Terminated:
        print("terminated, open:", det.is_open)
det.close()
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "GLOG_minloglevel": "2"}).stdout
    assert out.strip() == "terminated, open: True"


def test_tracking_one_face_loads_neither_matplotlib_nor_scipy_optimize(sample_videos):
    """Tracking a clip of one face imports neither matplotlib (through MediaPipe's drawing helpers, 0.3 s),
    MediaPipe's audio tasks, nor scipy.optimize (the assignment of several faces, 0.2 s); MediaPipe's drawing
    helpers and audio tasks still work for code that uses them. In a fresh interpreter, so that no earlier
    import decides."""
    import subprocess
    import sys

    code = f"""
import sys
from spectre.faces.mesh import import_mediapipe
from spectre.faces.track import track_video
tracks = track_video({str(sample_videos["PbgB2TaYhio_00007"])!r})
assert len(tracks) == 35
for heavy in ("matplotlib.pyplot", "scipy.optimize", "mediapipe.tasks.python.audio.audio_classifier"):
    assert heavy not in sys.modules, heavy
mp = import_mediapipe()
assert mp.tasks.audio.AudioClassifier.__name__ == "AudioClassifier"
from mediapipe.python.solutions.drawing_utils import DrawingSpec
assert mp.solutions.drawing_styles.get_default_face_mesh_tesselation_style().color == (128, 128, 128)
assert DrawingSpec is mp.solutions.drawing_utils.DrawingSpec and "matplotlib.pyplot" in sys.modules
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr


def test_matching_one_against_many_is_the_hungarian_assignment():
    """With one track or one face the cheapest admissible pair is taken without scipy: it must be the pair the
    Hungarian assignment picks, and no pair when every cost is over the limit."""
    from scipy.optimize import linear_sum_assignment

    from spectre.faces.matching import ActiveTrack, assign, match_costs

    rng = np.random.default_rng(3)
    base = rng.uniform(100, 300, (478, 3)).astype(np.float32)
    for n_tracks, n_faces in ((1, 1), (1, 3), (3, 1), (1, 4)):
        active = [ActiveTrack.start(i, 0, base + rng.normal(0, 30, 3).astype(np.float32), None, 1.0)
                  for i in range(n_tracks)]
        faces = [(base + rng.normal(0, 30, 3).astype(np.float32), 0.9) for _ in range(n_faces)]
        rows, cols = linear_sum_assignment(match_costs(active, faces, 1.0, 10.0))
        assert assign(active, faces, landmark_weight=1.0, max_match_cost=10.0) == [(int(rows[0]), int(cols[0]))]
        assert assign(active, faces, landmark_weight=1.0, max_match_cost=1e-9) == []
