"""`spectre view`: the local server (127.0.0.1 only, its own files only, range requests for seeking), the
CLI, and the page itself in headless Chromium (no console errors, the head is drawn and moves on seek,
clicking the curves seeks the video)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml

from spectre.io.results import FaceResult, save_face_npz
from spectre.view.files import find_view_files
from spectre.view.server import ViewServer

sys.path.insert(0, str(Path(__file__).parent / "clients"))
STATIC = Path(__file__).resolve().parents[1] / "src" / "spectre" / "view" / "static"


def _synthetic_result(folder: Path, video: Path, T: int = 6) -> Path:
    from spectre.models import load_face_model

    ict = load_face_model("ict")
    rng = np.random.default_rng(0)
    E = ict.spec["expression"].size
    face = FaceResult(track_id=0, model="ict", backend="fit",
                      params={"identity": np.zeros((T, ict.spec["identity"].size), np.float32),
                              "expression": rng.uniform(0, 0.5, (T, E)).astype(np.float32),
                              "rotation": rng.normal(0, 0.2, (T, 3)).astype(np.float32)},
                      cam=np.tile([[0.08, 0.0, 3.0]], (T, 1)).astype(np.float32), crop_tform=np.tile(np.eye(3), (T, 1, 1)),
                      landmarks2d=np.zeros((T, 68, 2)), landmarks3d=np.zeros((T, 68, 3)), valid=np.ones(T, bool),
                      frame_index=np.arange(T), timestamps=np.arange(T) / 25.0,
                      expression_names=tuple(ict.expression_names), arkit=rng.uniform(0, 1, (T, 52)))
    folder.mkdir(parents=True, exist_ok=True)
    save_face_npz(folder / "clip.npz", face, video=str(video), fps=25.0, width=224, height=224, config_yaml="",
                  version="test")
    (folder / "clip.yaml").write_text(yaml.safe_dump({"video": str(video), "outputs": ["clip.npz"]}))
    return folder / "clip"


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory, lrs3_video):
    return _synthetic_result(tmp_path_factory.mktemp("view"), lrs3_video)


def test_vendored_page_is_small_licensed_and_offline():
    sizes = {p.name: p.stat().st_size for p in STATIC.iterdir()}
    assert {"index.html", "viewer.js", "three-viewer.min.js", "THREE_LICENSE.txt"} <= set(sizes)
    assert sum(sizes.values()) < 1.5e6
    assert "MIT" in (STATIC / "THREE_LICENSE.txt").read_text()
    for name in ("index.html", "viewer.js"):
        text = (STATIC / name).read_text()
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, name


def test_server_serves_its_files_only(synthetic):
    files = find_view_files(synthetic)
    assert files.glb.exists()  # built from the npz (no --meshes glb in this result)
    server = ViewServer(files)
    server.start()
    try:
        assert server.server_address[0] == "127.0.0.1"

        def get(path, **headers):
            return urllib.request.urlopen(urllib.request.Request(server.url + path, headers=headers), timeout=10)

        assert b"viewer.js" in get("").read()
        data = get("data.json").read()
        assert b"jawOpen" in data
        r = get("video", Range="bytes=10-19")
        assert r.status == 206 and len(r.read()) == 10
        assert r.headers["Content-Range"].endswith(f"/{files.video.stat().st_size}")
        assert get("head.glb").read()[:4] == b"glTF"
        for bad in ("static/../files.py", "etc/passwd", "static/THREE_LICENSE.txt.bak"):
            with pytest.raises(urllib.error.HTTPError) as e:
                get(bad)
            assert e.value.code == 404
    finally:
        server.close()
        for p in files.cleanup:
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


def test_cli_prints_url_and_bad_target_is_a_one_line_error(synthetic, tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "spectre", "view", str(synthetic), "--no-browser"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert line.startswith("spectre view: http://127.0.0.1:"), line
        url = line.split()[2]
        assert b"<canvas" in urllib.request.urlopen(url, timeout=10).read()
    finally:
        proc.terminate()
        proc.wait(20)
    bad = subprocess.run([sys.executable, "-m", "spectre", "view", str(tmp_path / "nothing")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "nothing" in bad.stderr


def _pixels(png: bytes) -> np.ndarray:
    import cv2

    return cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR).astype(np.int32)


@pytest.mark.slow
def test_page_in_headless_chromium(tmp_path, sample_videos):
    """A real reconstruction of a moving clip, shown in the page: no console errors, the head is drawn with
    its lip colour, seeking the video moves it, clicking the curves seeks the video."""
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    pytest.importorskip("websocket", reason="websocket-client (test extra) drives Chromium over DevTools")
    from cdp import Chromium

    import spectre

    res = spectre.reconstruct(sample_videos["0Fi83BHQsMA_00002"], tmp_path / "out", layout="grid", meshes="glb")
    files = find_view_files(tmp_path / "out" / "0Fi83BHQsMA_00002")
    assert files.glb.parent == tmp_path / "out" and files.video.suffix == ".mp4"  # ours: the written scene and render
    server = ViewServer(files)
    server.start()
    try:
        with Chromium(binary) as page:
            page.navigate(server.url)
            page.wait_for("window.spectreView && (window.spectreView.ready || window.spectreView.errors.length)")
            page.wait_for("document.getElementById('video').readyState >= 1")
            assert page.eval("window.spectreView.errors") == []
            rect = page.eval("(() => { const r = document.getElementById('three').getBoundingClientRect();"
                             " return {x: r.x, y: r.y, width: r.width, height: r.height}; })()")
            matrix = "Array.from(window.spectreView.heads[0].matrixWorld.elements)"

            def seek(t: float):
                page.eval("new Promise(done => { const v = document.getElementById('video');"
                          " v.addEventListener('seeked',"
                          " () => requestAnimationFrame(() => requestAnimationFrame(done)),"
                          f" {{once: true}}); v.currentTime = {t}; }})", await_promise=True)

            seek(0.0)
            first, m_first = _pixels(page.screenshot(rect)), np.array(page.eval(matrix))
            background = np.array([0x29, 0x23, 0x20])  # the scene's background, BGR
            drawn = (np.abs(first - background).sum(2) > 30).mean()
            assert drawn > 0.05, f"the 3D view is blank ({drawn:.1%} non-background pixels)"
            # the lips' colour (the scene's COLOR_0) is drawn: red well above the skin's (R - G about 10 on the
            # skin, 30-49 on the lips; measured 1755 such pixels)
            lips = int(((first[..., 2] - first[..., 1] > 25) & (first[..., 2] > 90)).sum())  # BGR
            assert lips > 300, f"no lip colour in the 3D view ({lips} reddish pixels)"
            seek(1.0)
            assert abs(page.eval("window.spectreView.time") - 1.0) < 0.05
            second, m_second = _pixels(page.screenshot(rect)), np.array(page.eval(matrix))
            changed = (np.abs(first - second).sum(2) > 30).mean()
            assert changed > 0.01, f"the head did not move on seek ({changed:.2%} pixels changed)"
            assert np.abs(m_first - m_second).max() > 1e-3
            # a click at 75 % of the curves' width seeks the video to 75 % of the clip
            c = page.eval("(() => { const r = document.getElementById('curves').getBoundingClientRect();"
                          " return [r.x, r.y, r.width, r.height]; })()")
            x, y = c[0] + 0.75 * c[2], c[1] + c[3] / 2
            for kind in ("mousePressed", "mouseReleased"):
                page.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)
            ts = res.face.timestamps
            target = ts[0] + 0.75 * (ts[-1] - ts[0])
            page.wait_for(f"Math.abs(document.getElementById('video').currentTime - {target}) < 0.05")
            assert page.eval("window.spectreView.errors") == []
            assert page.console_errors == [], page.console_errors
    finally:
        server.close()
