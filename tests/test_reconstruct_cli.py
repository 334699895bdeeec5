"""`spectre reconstruct` end to end: outputs and their schema, resume, --overwrite, failure summary and
exit codes, saved config, and the Python API result."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import yaml

from spectre.cli import main
from spectre.io.results import ARKIT_NAMES, load_arkit_csv, load_face_npz

SHORT = "OzA6jRYjVQs_00004"  # 27 frames, 224x224


@pytest.fixture(scope="module")
def short_video(sample_videos, tmp_path_factory):
    src = sample_videos.get(SHORT)
    if src is None:
        pytest.skip(f"sample {SHORT} not found")
    folder = tmp_path_factory.mktemp("inputs")
    dst = folder / "clip.mp4"
    shutil.copy(src, dst)
    return dst


@pytest.fixture(scope="module")
def bad_video(tmp_path_factory):
    p = tmp_path_factory.mktemp("bad") / "broken.mp4"
    p.write_bytes(b"this is not a video" * 100)
    return p


@pytest.fixture(scope="module")
def first_run(short_video, bad_video, tmp_path_factory, capsys_module=None):
    out = tmp_path_factory.mktemp("out")
    code = main(["reconstruct", str(short_video), str(bad_video), "-o", str(out), "--layout", "grid", "--quiet"])
    return out, code


def test_outputs_schema_and_failure_summary(first_run, short_video):
    out, code = first_run
    assert code == 1, "one of the two videos failed"
    npz = load_face_npz(out / "clip.npz")
    from spectre.io.video import open_video

    src = open_video(short_video)
    T = len(npz["valid"])
    assert npz["schema"] == "spectre.face/1" and npz["model"] == "ict" and npz["backend"] == "fit"
    assert npz["landmarks2d"].shape == (T, 68, 2) and npz["landmarks3d"].shape == (T, 68, 3)
    assert npz["points478"].shape == (T, 478, 3) and npz["crop_tform"].shape == (T, 3, 3)
    assert npz["params"]["expression"].shape == (T, 53) and npz["cam"].shape == (T, 3)
    assert np.all(np.diff(npz["timestamps"]) > 0) and npz["fps"] == pytest.approx(src.fps)
    assert (npz["width"], npz["height"]) == (src.width, src.height)
    # the full resolved config is saved in the npz and in the sidecar
    cfg = yaml.safe_load(npz["config"])
    assert cfg["backend"] == "fit" and cfg["fit"]["window"] > 0
    side = yaml.safe_load((out / "clip.yaml").read_text())
    assert side["config"] == cfg and set(side["outputs"]) >= {"clip.npz", "clip_arkit.csv", "clip.mp4"}
    frames, valid, w = load_arkit_csv(out / "clip_arkit.csv")
    assert w.shape == (T, len(ARKIT_NAMES)) and (w >= 0).all() and (w <= 1).all()
    # the render has the input's frame count, grid layout = render | input, and the input's audio
    vid = open_video(out / "clip.mp4")
    chunk = vid.read()
    assert len(chunk) == T and (vid.width, vid.height) == (2 * src.width, src.height)
    assert vid.has_audio == src.has_audio
    assert not (out / "broken.npz").exists() and not (out / "broken.yaml").exists()
    assert not list(out.glob(".*partial*")), "no temporary files left behind"


def test_resume_skips_finished_and_redoes_partial(first_run, short_video, capsys):
    out, _ = first_run
    npz = out / "clip.npz"
    before = npz.stat().st_mtime_ns
    assert main(["reconstruct", str(short_video), "-o", str(out), "--layout", "grid", "--quiet"]) == 0
    assert npz.stat().st_mtime_ns == before, "finished video skipped"
    assert "1 skipped" in capsys.readouterr().err
    # an interrupted run leaves outputs without the sidecar: the video is redone
    (out / "clip.yaml").unlink()
    (out / "clip.mp4").unlink()
    assert main(["reconstruct", str(short_video), "-o", str(out), "--layout", "none", "--quiet"]) == 0
    assert npz.stat().st_mtime_ns != before and (out / "clip.yaml").exists()
    assert "1 done" in capsys.readouterr().err


def test_overwrite_redoes_finished_video_with_new_config(first_run, short_video, tmp_path):
    out, _ = first_run
    conf = tmp_path / "c.yaml"
    conf.write_text("fit:\n  iterations: 30\narkit: false\n")
    before = (out / "clip.npz").stat().st_mtime_ns
    assert main(["reconstruct", str(short_video), "-o", str(out), "--layout", "none", "--config", str(conf),
                 "--overwrite", "--quiet"]) == 0
    assert (out / "clip.npz").stat().st_mtime_ns != before
    cfg = yaml.safe_load(load_face_npz(out / "clip.npz")["config"])
    assert cfg["fit"]["iterations"] == 30 and cfg["arkit"] is False


def test_bad_config_and_missing_input_are_one_line_errors(short_video, tmp_path, capsys):
    conf = tmp_path / "bad.yaml"
    conf.write_text("fit:\n  no_such_key: 1\n")
    assert main(["reconstruct", str(short_video), "-o", str(tmp_path / "o"), "--config", str(conf)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no_such_key" in err[0]
    assert main(["reconstruct", str(tmp_path / "missing.mp4"), "-o", str(tmp_path / "o")]) == 2
    assert "missing.mp4" in capsys.readouterr().err


def test_single_failing_video_keeps_its_exit_code(bad_video, tmp_path, capsys):
    code = main(["reconstruct", str(bad_video), "-o", str(tmp_path / "o"), "--quiet"])
    assert code == 2, "a single unreadable input is an input error"
    assert "broken.mp4" in capsys.readouterr().err


def test_no_face_video_is_reported(tmp_path, capsys):
    from spectre.io.writer import VideoWriter

    p = tmp_path / "noface.mp4"
    rng = np.random.default_rng(0)
    with VideoWriter(p, 25, (64, 64)) as w:
        for _ in range(6):
            w.write(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    assert main(["reconstruct", str(p), "-o", str(tmp_path / "o"), "--quiet"]) == 2
    assert "no face" in capsys.readouterr().err.lower()


def test_inputs_from_list_file_and_folder(short_video, tmp_path):
    from spectre.io.inputs import expand_inputs

    lst = tmp_path / "videos.txt"
    lst.write_text(f"# my clips\n{short_video}\n\n")
    assert [(i.path, i.name) for i in expand_inputs([lst])] == [(short_video, short_video.stem)]
    assert [i.path for i in expand_inputs([short_video.parent])] == [short_video]
    assert [i.path for i in expand_inputs([str(short_video.parent / "*.mp4")])] == [short_video]


def test_python_api_returns_result_without_writing(short_video, tmp_path, monkeypatch):
    import spectre

    monkeypatch.chdir(tmp_path)
    res = spectre.reconstruct(short_video)
    assert res.outputs == [] and list(tmp_path.iterdir()) == []
    face = res.face
    assert face.params["expression"].shape == (res.num_frames, 53)
    assert face.arkit.shape == (res.num_frames, 52)
    assert res.timings["track"] > 0 and res.timings["fit"] > 0


@pytest.mark.slow
def test_parallel_workers(short_video, bad_video, tmp_path):
    from spectre.reconstruct.batch import run_batch
    from spectre.reconstruct.config import make_config

    second = tmp_path / "second.mp4"
    shutil.copy(short_video, second)
    summary = run_batch([short_video, second, bad_video], tmp_path / "o", make_config(layout="none"), workers=2)
    assert [o.status for o in summary.outcomes] == ["ok", "ok", "failed"]
    assert summary.exit_code == 1 and "broken.mp4" in summary.text()
    assert (tmp_path / "o" / "clip.npz").exists() and (tmp_path / "o" / "second.npz").exists()


@pytest.mark.slow
def test_face_all_writes_one_result_per_track(sample_videos, tmp_path):
    """Two speakers side by side: ``--face all`` gives one npz/csv per face track and one render."""
    from spectre.io.video import open_video
    from spectre.io.writer import VideoWriter

    names = ["OzA6jRYjVQs_00004", "PbgB2TaYhio_00007"]
    if not all(n in sample_videos for n in names):
        pytest.skip("LRS3 samples not found")
    a, b = (open_video(sample_videos[n]).read().frames for n in names)
    n = min(len(a), len(b), 20)
    p = tmp_path / "two.mp4"
    with VideoWriter(p, 25, (448, 224)) as w:
        for i in range(n):
            w.write(np.concatenate([a[i], b[i]], axis=1))
    out = tmp_path / "o"
    assert main(["reconstruct", str(p), "-o", str(out), "--face", "all", "--layout", "overlay", "--quiet"]) == 0
    npzs = sorted(out.glob("two_face*.npz"))
    assert len(npzs) == 2 and len(sorted(out.glob("two_face*_arkit.csv"))) == 2
    centres = sorted(float(np.nanmean(load_face_npz(f)["landmarks2d"][..., 0])) for f in npzs)
    assert centres[0] < 224 < centres[1], "one face on each side"
    assert len(open_video(out / "two.mp4").read()) == n


def test_render_colours_option_colours_the_video(short_video, tmp_path):
    """``--render-colours``: the default video shows red lips on the grey mesh, ``grey`` none; the choice is
    saved with the result."""
    import av

    red = {}
    for colours in ("tinted", "grey"):
        out = tmp_path / colours
        args = ["--render-colours", colours] if colours == "grey" else []
        assert main(["reconstruct", str(short_video), "-o", str(out), "--layout", "render", "--quiet", *args]) == 0
        assert yaml.safe_load(load_face_npz(out / "clip.npz")["config"])["render_colours"] == colours
        with av.open(str(out / "clip.mp4")) as c:
            frames = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)]).astype(int)
        red[colours] = ((frames[..., 0] - frames[..., 1] > 40) & (frames[..., 0] > 80)).sum((1, 2))
    assert (red["tinted"] > 100).all(), red["tinted"]  # the lips, in every frame (measured: at least 248 px)
    assert red["grey"].max() < 5, red["grey"]


@pytest.mark.slow
def test_frame_bar_shows_before_torch_loads(short_video, tmp_path):
    """In a terminal the video's frame bar is drawn before the command imports torch (1-2 s of a short job),
    so its clock and ETA count from the start. The order is read from
    the process's own ``-X importtime`` lines, which share the terminal."""
    import re
    import sys

    from terminal import run_in_terminal

    code, shown = run_in_terminal([sys.executable, "-X", "importtime", "-m", "spectre", "reconstruct",
                                   str(short_video), "-o", str(tmp_path / "out"), "--layout", "none"])
    assert code == 0, shown[-2000:]
    first_bar = shown.find("0/27 [")
    torch_imported = re.search(r"\|\s+torch\r?\n", shown)
    assert first_bar >= 0 and torch_imported, shown[-2000:]
    assert first_bar < torch_imported.start()
    assert shown.rfind("/27 [") > torch_imported.start()  # the same bar counts on after the import
