"""`spectre evaluate` on constructed result files: reports, plots, comparison, bad input."""
from __future__ import annotations

import json

import numpy as np
import pytest
from test_metrics import talking

from spectre.cli import main
from spectre.evaluate.pipeline import video_name
from spectre.evaluate.report import load_run


@pytest.fixture()
def results_dir(tmp_path):
    """Two fake `fit` results: 'good' equals its tracked landmarks, 'shifted' is 5 px off."""
    ref = talking(50)
    d = tmp_path / "results"
    d.mkdir()
    np.savez(d / "good.npz", landmarks2d=ref, tracked68=ref, valid=np.ones(50, bool), fps=25.0)
    np.savez(d / "shifted.npz", landmarks2d=ref + np.array([3.0, 4.0]), tracked68=ref,
             valid=np.ones(50, bool), fps=25.0)
    return d


def test_report_json_markdown_and_plots(results_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["evaluate", str(results_dir), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| good |" in printed and "| shifted |" in printed and "**mean**" in printed
    report = json.loads((out / "report.json").read_text())
    videos = {v["name"]: v for v in report["videos"]}
    assert videos["good"]["geometry"]["nme_all"] == 0.0
    assert videos["good"]["geometry"]["aperture_r"] == pytest.approx(1.0)
    assert videos["shifted"]["geometry"]["nme_mouth"] == pytest.approx(0.05)
    assert videos["shifted"]["groups"]["jaw"] == pytest.approx(0.05)
    assert report["aggregate"]["videos"] == 2
    assert report["aggregate"]["geometry"]["nme_all"] == pytest.approx(0.025)
    assert report["aggregate"]["geometry"]["frames"] == 100
    md = (out / "report.md").read_text()
    assert "NME per landmark group" in md and "aperture_r" in md  # tables and glossary
    for png in ("good_aperture.png", "shifted_aperture.png", "group_errors.png"):
        data = (out / "plots" / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000


def test_existing_run_is_not_overwritten(results_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["evaluate", str(results_dir / "good.npz"), "-o", str(out), "--no-plots"]) == 0
    before = (out / "report.json").read_text()
    assert main(["evaluate", str(results_dir / "shifted.npz"), "-o", str(out), "--no-plots"]) == 5
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "report.json").read_text() == before
    assert main(["evaluate", str(results_dir / "shifted.npz"), "-o", str(out), "--no-plots", "--overwrite"]) == 0
    assert load_run(out)["videos"][0]["name"] == "shifted"
    assert not (out / "plots").exists()


@pytest.mark.slow
def test_compare_prints_both_runs(results_dir, tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    main(["evaluate", str(results_dir / "good.npz"), "-o", str(a), "--no-plots"])
    main(["evaluate", str(results_dir / "shifted.npz"), "-o", str(b), "--no-plots"])
    np.savez(tmp_path / "good.npz", landmarks2d=talking(50) + 5.0, tracked68=talking(50))
    main(["evaluate", str(tmp_path / "good.npz"), "-o", str(tmp_path / "c"), "--no-plots"])
    capsys.readouterr()
    assert main(["evaluate", "--compare", str(a), str(b)]) == 0
    text = capsys.readouterr().out
    row = next(line for line in text.splitlines() if line.startswith("NME mouth"))
    assert row.split()[2:] == ["0.0000", "0.0500", "A"]  # A is better (lower)
    assert "videos in only one run: good, shifted" in text
    assert main(["evaluate", "--compare", str(a), str(tmp_path / "c")]) == 0
    assert "per video (1 in both)" in capsys.readouterr().out
    # different video sets: the means are taken over the shared videos only
    main(["evaluate", str(results_dir), "-o", str(tmp_path / "both"), "--no-plots"])
    capsys.readouterr()
    assert main(["evaluate", "--compare", str(a), str(tmp_path / "both")]) == 0
    text = capsys.readouterr().out
    assert "means over the 1 video(s) in both runs" in text
    row = next(line for line in text.splitlines() if line.startswith("NME mouth"))
    assert row.split()[2:] == ["0.0000", "0.0000"]  # same video, no winner


def test_reference_file_and_reference_folder(tmp_path, capsys):
    ref = talking(30)
    np.save(tmp_path / "pred.npy", ref + 1.0)
    np.save(tmp_path / "ref.npy", ref)
    assert main(["evaluate", str(tmp_path / "pred.npy"), "-r", str(tmp_path / "ref.npy"),
                 "-o", str(tmp_path / "r1"), "--no-plots"]) == 0
    nme = load_run(tmp_path / "r1")["videos"][0]["geometry"]["nme_all"]
    assert nme == pytest.approx(np.sqrt(2) / 100)
    # folder of references matched by name; the official [2:-2] trim is recognised
    preds, refs = tmp_path / "preds", tmp_path / "refs"
    preds.mkdir(), refs.mkdir()
    np.save(preds / "clipA_grid.npy", ref[2:-2])
    np.save(refs / "clipA.npy", ref)
    assert main(["evaluate", str(preds), "-r", str(refs), "-o", str(tmp_path / "r2"), "--no-plots"]) == 0
    v = load_run(tmp_path / "r2")["videos"][0]
    assert v["name"] == "clipA" and v["geometry"]["frames"] == 26 and v["geometry"]["nme_all"] == 0.0


def test_partial_failures_exit_1_and_are_reported(results_dir, tmp_path, capsys):
    np.savez(results_dir / "untracked.npz", landmarks2d=talking(10))
    out = tmp_path / "run"
    assert main(["evaluate", str(results_dir), "-o", str(out), "--no-plots"]) == 1
    assert "untracked.npz: holds no tracked landmarks" in capsys.readouterr().err
    report = load_run(out)
    assert report["aggregate"]["videos"] == 2
    assert report["settings"]["failed"][0]["input"].endswith("untracked.npz")


@pytest.mark.parametrize("case, message", [
    ("missing", "file not found"),
    ("text", "unsupported file type"),
    ("pickle", "Python objects"),
    ("shape", "(T, 68, 2|3)"),
    ("frames", "frames"),
    ("none", "nothing to evaluate"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, case, message):
    args = ["evaluate", "-o", str(tmp_path / "out")]
    if case == "missing":
        args.append(str(tmp_path / "nope.npz"))
    elif case == "text":
        (tmp_path / "x.txt").write_text("hi")
        args.append(str(tmp_path / "x.txt"))
    elif case == "pickle":
        np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
        args.append(str(tmp_path / "obj.npy"))
        args += ["-r", str(tmp_path / "obj.npy")]
    elif case == "shape":
        np.savez(tmp_path / "bad.npz", landmarks2d=np.zeros((5, 10, 2)), tracked68=np.zeros((5, 10, 2)))
        args.append(str(tmp_path / "bad.npz"))
    elif case == "frames":
        np.savez(tmp_path / "len.npz", landmarks2d=talking(10), tracked68=talking(40))
        args.append(str(tmp_path / "len.npz"))
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("spectre: error:") and message in err and "\n" not in err
    assert not (tmp_path / "out" / "report.json").exists()


def test_video_name_strips_tool_suffixes(tmp_path):
    assert video_name(tmp_path / "clip_grid.mp4") == "clip"
    assert video_name(tmp_path / "clip.npz") == "clip"
    assert video_name(tmp_path / "_grid.mp4") == "_grid"


# ------------------------------------------------------------------------------ real clips
def _grid(tmp_path, left, right, name):
    from test_evaluate_lipread import _write_video

    path = tmp_path / f"{name}_grid.mp4"
    _write_video(path, np.ascontiguousarray(np.concatenate([left, right], axis=2)))
    return path


@pytest.fixture(scope="module")
def lrs3_frames(lrs3_video):
    from spectre.io.video import open_video

    return open_video(lrs3_video, warn_fps=False).read().frames


@pytest.mark.slow
def test_grid_video_halves_are_retracked_and_compared(lrs3_frames, lrs3_video, tmp_path):
    """The official demo's layout (render | input): an identical left half scores ~0 error, a
    time-reversed one loses the aperture correlation."""
    same = _grid(tmp_path, lrs3_frames, lrs3_frames, "same")
    rev = _grid(tmp_path, lrs3_frames[::-1], lrs3_frames, "reversed")
    out = tmp_path / "run"
    assert main(["evaluate", str(same), str(rev), "--half", "left", "-o", str(out), "--no-plots"]) == 0
    videos = {v["name"]: v["geometry"] for v in load_run(out)["videos"]}
    assert videos["same"]["frames"] >= len(lrs3_frames) - 2
    assert videos["same"]["nme_all"] < 0.03  # re-tracking noise floor: measured 0.0099
    assert videos["same"]["aperture_r"] > 0.85  # tracker noise between the halves: measured 0.95
    assert videos["reversed"]["nme_mouth"] > 5 * videos["same"]["nme_mouth"]
    assert videos["reversed"]["aperture_r"] < 0.3  # measured -0.58
    # a separate reference video is used whole (not its "other half")
    assert main(["evaluate", str(same), "--half", "left", "-r", str(lrs3_video), "-o", str(tmp_path / "r"),
                 "--no-plots"]) == 0
    g = load_run(tmp_path / "r")["videos"][0]["geometry"]
    assert g["frames"] >= len(lrs3_frames) - 2 and g["nme_all"] < 0.03


def test_folder_trees_are_walked_and_matched_by_relative_folder(tmp_path, monkeypatch):
    """Two speakers' 00001 results in a tree: named apart, each scored against its own reference."""
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    for spk, noise in (("spk1", 0.5), ("spk2", 5.0)):
        ref = rng.uniform(50, 150, (10, 68, 2)).astype(np.float32)
        (tmp_path / "ref" / spk).mkdir(parents=True)
        (tmp_path / "res" / spk).mkdir(parents=True)
        np.save(tmp_path / "ref" / spk / "00001.npy", ref)
        np.save(tmp_path / "res" / spk / "00001.npy", ref + rng.normal(0, noise, ref.shape).astype(np.float32))
    assert main(["evaluate", "res", "-r", "ref", "-o", "out", "--no-plots", "--judge", "none"]) == 0
    videos = {v["name"]: v for v in json.loads((tmp_path / "out" / "report.json").read_text())["videos"]}
    assert sorted(videos) == ["spk1_00001", "spk2_00001"]
    for spk in ("spk1", "spk2"):
        assert videos[f"{spk}_00001"]["reference"].startswith(f"ref/{spk}/00001.npy")
    assert videos["spk1_00001"]["geometry"]["nme_all"] < videos["spk2_00001"]["geometry"]["nme_all"]


def test_progress_counts_inputs_and_shows_only_in_a_terminal(results_dir, tmp_path):
    """``progress(done, total)`` before the first input and after each; the command draws it as a bar of inputs
    in a terminal, not with ``--quiet`` nor when stderr is a pipe."""
    import subprocess
    import sys

    from terminal import run_in_terminal

    from spectre.evaluate.pipeline import EvaluationOptions, evaluate_inputs

    calls = []
    evaluate_inputs([results_dir], tmp_path / "api", EvaluationOptions(plots=False, judges=[]),
                    progress=lambda done, total: calls.append((done, total)))
    assert calls == [(0, 2), (1, 2), (2, 2)]
    cmd = [sys.executable, "-m", "spectre", "evaluate", str(results_dir), "--no-plots", "--judge", "none"]
    code, shown = run_in_terminal([*cmd, "-o", str(tmp_path / "tty")])
    assert code == 0 and "/2 [" in shown and "input" in shown, shown
    code, quiet = run_in_terminal([*cmd, "-o", str(tmp_path / "quiet"), "--quiet"])
    piped = subprocess.run([*cmd, "-o", str(tmp_path / "pipe")], capture_output=True, text=True, timeout=300)
    assert code == 0 and piped.returncode == 0
    for text in (quiet, piped.stderr):
        assert "/2 [" not in text and "%|" not in text, text
