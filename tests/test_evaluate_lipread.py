"""Lip-reading path: transcript scoring, transcripts files, and the whole pipeline on a synthetic lipreader."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from spectre.errors import InputError
from spectre.evaluate.lipread import load_transcripts, score_transcript


@pytest.fixture(scope="module")
def viseme_tools(shared_assets):
    from spectre.evaluate.visemes import CmudictG2P, load_viseme_map

    return CmudictG2P(), load_viseme_map(shared_assets / "spectre_data" / "phonemes2visemes.csv")


def test_scores_of_known_transcripts(viseme_tools):
    g2p, table = viseme_tools
    same = score_transcript("the cat sat down", "THE CAT SAT DOWN", g2p, table)
    assert (same.wer, same.cer, same.vwer, same.ver) == (0.0, 0.0, 0.0, 0.0)
    one = score_transcript("THE BAT SAT DOWN", "THE CAT SAT DOWN", g2p, table)
    assert one.wer == pytest.approx(0.25)
    assert one.cer == pytest.approx(1 / 16)  # one character of "THE CAT SAT DOWN"
    assert one.vwer == pytest.approx(0.25)  # b and k look different
    # p/b/m are one viseme: a lipreader cannot be blamed for PAT vs BAT vs MAT
    lips = score_transcript("BAT", "PAT", g2p, table)
    assert lips.wer == 1.0 and lips.vwer == 0.0 and lips.ver == 0.0
    assert lips.visemes_hypothesis == lips.visemes_reference == "pat"
    empty = score_transcript("", "HELLO WORLD", g2p, table)
    assert empty.wer == 1.0 and empty.cer == 1.0 and empty.vwer == 1.0
    plain = score_transcript("HELLO", "HELLO")
    assert plain.vwer is None and plain.wer == 0.0
    assert math.isnan(score_transcript("", "").wer)


def test_load_transcripts_file_and_folder(tmp_path):
    f = tmp_path / "list.txt"
    f.write_text("# name transcript\nclip_a hello there\n\nM003/clip_b.mp4 It's fine.\n")
    assert load_transcripts(f) == {"clip_a": "HELLO THERE", "clip_b": "IT'S FINE"}
    d = tmp_path / "txt"
    d.mkdir()
    (d / "00001.txt").write_text("Text:  WE ARE HERE\nConf:  4\n\nWORD START END ASDSCORE\nWE 0.1 0.2 1\n")
    (d / "00002.txt").write_text("plain words\n")
    assert load_transcripts(d) == {"00001": "WE ARE HERE", "00002": "PLAIN WORDS"}
    bad = tmp_path / "bad.txt"
    bad.write_text("onlyname\n")
    with pytest.raises(InputError, match="line 1"):
        load_transcripts(bad)
    with pytest.raises(InputError, match="not found"):
        load_transcripts(tmp_path / "missing.txt")


# ----------------------------------------------------------------------------- synthetic lipreader
T_FRAMES = 12


def _write_video(path, frames, fps=25):
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "0"}
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.fixture(scope="module")
def lipreader_assets(tmp_path_factory, golden_dir, golden_weights, shared_assets):
    """An asset folder with a lipreader of deterministic synthetic weights (garbage text, real pipeline)."""
    import shutil

    import torch

    spec = json.loads((golden_dir / "lipreader_keys.json").read_text())
    root = tmp_path_factory.mktemp("lip_assets")
    (root / "lipreader").mkdir()
    sd = golden_weights.det_state_dict(list(spec["keys"].items()), prefix="lipreader.")
    torch.save({k: torch.from_numpy(np.asarray(v)) for k, v in sd.items()}, root / "lipreader" / "model.pth")
    (root / "lipreader" / "model.json").write_text(json.dumps(spec["ASSUMED_model_json"]))
    (root / "spectre_data").mkdir()
    shutil.copy(shared_assets / "spectre_data" / "phonemes2visemes.csv", root / "spectre_data")
    return root


@pytest.fixture(scope="module")
def talking_clip(tmp_path_factory):
    """A 224x224 clip (textured noise + a dark moving 'mouth'), its landmarks, and a result npz."""
    from test_metrics import talking

    root = tmp_path_factory.mktemp("clip")
    rng = np.random.default_rng(3)
    lm = talking(T_FRAMES) * 0.8 + 20.0  # face inside the 224 frame
    # put the outer-lip points on the mouth too, so the mouth centre (mean of 48-67) is the mouth
    for k, i in enumerate(range(49, 54)):
        lm[:, i] = lm[:, 48] + (k + 1) / 6 * (lm[:, 54] - lm[:, 48]) - np.array([0.0, 4.0])
    for k, i in enumerate(range(55, 60)):
        lm[:, i] = lm[:, 54] + (k + 1) / 6 * (lm[:, 48] - lm[:, 54]) + np.array([0.0, 4.0])
    lm[:, 60], lm[:, 64] = lm[:, 48], lm[:, 54]
    base = (rng.uniform(60, 200, size=(224, 224, 3))).astype(np.uint8)
    frames = np.repeat(base[None], T_FRAMES, axis=0)
    for t in range(T_FRAMES):
        x0, x1 = lm[t, 48, 0], lm[t, 54, 0]
        y0, y1 = lm[t, 62, 1] - 3, lm[t, 66, 1] + 3
        frames[t, int(y0):int(y1) + 1, int(min(x0, x1)):int(max(x0, x1)) + 1] = 20
    _write_video(root / "clip.mp4", frames)
    _write_video(root / "clip_render.mp4", frames[:, :, ::-1].copy())  # a different-looking "render"
    np.savez(root / "clip.npz", landmarks2d=lm, tracked68=lm, valid=np.ones(T_FRAMES, bool), fps=25.0,
             video=np.array(str(root / "clip.mp4")))
    (root / "transcripts.txt").write_text("clip BOB MET A POET\n")
    return root, frames, lm


@pytest.fixture(scope="module")
def clip_options(lipreader_assets, talking_clip):
    from spectre.evaluate.pipeline import EvaluationOptions

    root = talking_clip[0]
    return EvaluationOptions(lipread=True, transcripts=str(root / "transcripts.txt"), assets=str(lipreader_assets),
                             g2p="cmudict", device="cpu", render=str(root / "clip.mp4"))


@pytest.fixture(scope="module")
def evaluator(clip_options):
    from spectre.evaluate.lipread import LipreadEvaluator

    return LipreadEvaluator.from_options(clip_options)


def test_synthetic_lipreader_decodes_mouth_crops(evaluator, talking_clip):
    import torch

    from spectre.evaluate.lipread import mouth_sequence, read_face_crops
    from spectre.faces.crop import face_crop_transform, transform_points

    root, frames, lm = talking_clip
    tf = face_crop_transform(lm)
    crops = read_face_crops(root / "clip.mp4", tf)
    assert crops.shape == (T_FRAMES, 224, 224, 3) and crops.dtype == np.float32
    mouths = mouth_sequence(crops, transform_points(tf, lm))
    assert tuple(mouths.shape) == (T_FRAMES, 88, 88)
    # the dark mouth bar is inside the crop: the centre of the mouth crop is darker than the mean level
    assert float(mouths[:, 42:46, 36:52].mean()) < float(mouths.mean()) - 1.0
    text = evaluator.decode(mouths)
    assert isinstance(text, str)
    assert set(text) <= set(" 'ABCDEFGHIJKLMNOPQRSTUVWXYZ")
    with pytest.raises(InputError, match="fewer frames"):
        read_face_crops(root / "clip.mp4", np.repeat(tf[:1], T_FRAMES + 5, axis=0))
    assert torch.isfinite(mouths).all()


@pytest.mark.slow
def test_evaluate_cli_lipread_end_to_end(lipreader_assets, talking_clip, tmp_path, capsys):
    import shutil

    from spectre.cli import main
    from spectre.evaluate.report import load_run

    root, _, _ = talking_clip
    shutil.copy(root / "clip.npz", tmp_path / "untranscribed.npz")
    out = tmp_path / "run"
    rc = main(["evaluate", str(root / "clip.npz"), str(tmp_path / "untranscribed.npz"), "-o", str(out),
               "--no-plots", "--lipread", "--transcripts", str(root / "transcripts.txt"),
               "--assets", str(lipreader_assets), "--g2p", "cmudict", "--device", "cpu", "--judge", "none"])
    assert rc == 1  # one video has no transcript: its geometry is kept, the failure is reported
    assert "untranscribed: no transcript" in capsys.readouterr().err
    report = load_run(out)
    videos = {v["name"]: v for v in report["videos"]}
    assert videos["untranscribed"]["geometry"]["nme_all"] == 0.0
    assert "no transcript" in videos["untranscribed"]["lipread"]["error"]
    lip = videos["clip"]["lipread"]
    assert lip["transcript"] == "BOB MET A POET"
    for side in ("render", "input"):
        s = lip[side]
        assert isinstance(s["hypothesis"], str)
        for key in ("wer", "cer", "vwer", "ver"):
            assert s[key] is not None and s[key] >= 0.0
        assert s["visemes_reference"] == "pap pEt a po@t"  # CMU: B AA1 B, M EH1 T, A, P OW1 AH0 T
    assert report["settings"]["lipreader"]["decode"]["beam_size"] == 1
    assert report["settings"]["lipreader"]["decode"]["ctc_weight"] == pytest.approx(0.1)
    assert report["aggregate"]["lipread"]["render"]["wer"] == pytest.approx(lip["render"]["wer"])
    assert "Lip reading" in (out / "report.md").read_text()


@pytest.mark.slow
def test_identical_render_reads_like_the_input(evaluator, clip_options, talking_clip):
    from spectre.evaluate.pipeline import resolve_pair

    root = talking_clip[0]
    pred, ref = resolve_pair(root / "clip.npz", clip_options, single=True)
    res = evaluator.evaluate("clip", root / "clip.npz", pred, ref)  # --render is the input video itself
    assert res["render"] == res["input"]
    assert res["render"]["visemes_reference"] == "pap pEt a po@t"


def test_lipread_errors_are_one_line(lipreader_assets, talking_clip, tmp_path, capsys):
    from spectre.cli import main

    root, _, _ = talking_clip
    base = ["evaluate", str(root / "clip.npz"), "-o", str(tmp_path / "o"), "--no-plots", "--lipread"]
    assert main(base) == 2
    assert "--transcripts" in capsys.readouterr().err
    assert main(base + ["--transcripts", str(root / "transcripts.txt"), "--assets", str(tmp_path)]) == 3
    err = capsys.readouterr().err.strip()
    assert err.startswith("spectre: error:") and "lipreader" in err and "\n" not in err


@pytest.mark.slow
def test_fit_backend_samples_end_to_end(sample_videos, lipreader_assets, tmp_path, capsys):
    """`spectre reconstruct` (fit backend, grid render) on the shortest sample, then `spectre evaluate`
    with geometry and lip reading of its render (left half) and of the input video."""
    from spectre.cli import main
    from spectre.evaluate.report import load_run

    clip = min((p for p in sample_videos.values() if p.parent.name == "LRS3"), key=lambda p: p.stat().st_size)
    res_dir = tmp_path / "results"
    assert main(["reconstruct", str(clip), "-o", str(res_dir), "--no-arkit", "--quiet"]) == 0
    (tmp_path / "t.txt").write_text(f"{clip.stem} THIS IS A TEST\n")
    out = tmp_path / "eval"
    rc = main(["evaluate", str(res_dir), "-o", str(out), "--lipread", "--transcripts", str(tmp_path / "t.txt"),
               "--assets", str(lipreader_assets), "--g2p", "cmudict", "--device", "cpu", "--judge", "none"])
    assert rc == 0, capsys.readouterr().err
    video = load_run(out)["videos"][0]
    assert video["name"] == clip.stem
    g = video["geometry"]
    # the fit follows the tracked mouth closely (measured on this clip: NME mouth 0.022, aperture r
    # 0.996, width r 0.992, jitter 0.014); thresholds leave ~3x margin
    assert g["nme_mouth"] < 0.08
    assert g["aperture_r"] > 0.8
    assert g["width_r"] > 0.7
    assert g["jitter_pred"] < 0.06
    for side in ("render", "input"):  # synthetic weights: garbage text, but both sides were read
        assert 0.0 <= video["lipread"][side]["wer"] and video["lipread"][side]["visemes_reference"]
    assert (out / "plots" / f"{clip.stem}_aperture.png").stat().st_size > 2000


def test_face_crops_are_the_warped_frames_and_leave_no_decoder_behind(lrs3_video):
    """Crops are decoded in a thread beside the warps (354 1080p frames: 1.8-1.9 -> 1.4 s); a window that ends
    before the video does stops that thread, and each crop is its own frame's."""
    import threading
    import time

    from spectre.evaluate.lipread import read_face_crops
    from spectre.faces.crop import warp_crop_fast
    from spectre.io.video import open_video

    tf = np.tile(np.array([[0.8, 0.0, 10.0], [0.0, 0.8, 5.0], [0.0, 0.0, 1.0]]), (5, 1, 1))
    crops = read_face_crops(lrs3_video, tf, start=3)
    frames = open_video(lrs3_video, warn_fps=False).read(8).frames[3:8]
    np.testing.assert_array_equal(crops, warp_crop_fast(np.ascontiguousarray(frames), tf, 224))
    deadline = time.monotonic() + 5
    while any(t.name == "spectre-prefetch" for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(t.name == "spectre-prefetch" for t in threading.enumerate())
