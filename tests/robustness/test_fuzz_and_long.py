"""Bounded, seeded fuzzing (reader in a child process, a few mutants through the whole CLI) and a long
video streamed with flat memory."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import spectre
from spectre.cli import main

from . import media
from .corpus import fast_config
from .fuzz import mutate

FUZZ = Path(__file__).with_name("fuzz.py")


def _run_fuzz(source: Path, workdir: Path, seed: int, count: int) -> list[dict]:
    env = dict(os.environ, PYTHONPATH=str(Path(spectre.__file__).resolve().parents[1]))
    r = subprocess.run([sys.executable, str(FUZZ), str(source), str(workdir), "--seed", str(seed), "--count",
                        str(count)], capture_output=True, text=True, env=env, timeout=300)  # timeout: a hang
    rows = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert r.returncode == 0, f"the reader crashed (exit {r.returncode}) after mutant {len(rows)}:\n{r.stderr[-2000:]}"
    return rows


@pytest.mark.parametrize("clip,seed,count", [("LRS3/0Fi83BHQsMA_00002.mp4", 2024, 80),
                                             ("MEAD/W023_level_2_surprised_010.mp4", 7, 8)],
                         ids=["lrs3-mpeg4", "mead-h264-1080p"])
def test_fuzzed_clips_decode_or_fail_cleanly(clip, seed, count, shared_dir, tmp_path):
    rows = _run_fuzz(shared_dir / "samples" / clip, tmp_path, seed, count)
    assert [r["i"] for r in rows] == list(range(count)), "every mutant must be tried"
    bad = [r for r in rows if r["outcome"] == "bad"]
    assert not bad, bad
    assert {r["outcome"] for r in rows} <= {"ok", "error"}


def test_fuzzed_clips_through_the_cli(shared_dir, tmp_path, capsys):
    clip = media.write_video(tmp_path / "clip.mp4", media.face_frames(shared_dir / "samples", 6))
    data = clip.read_bytes()
    rng = np.random.default_rng(11)
    codes = []
    for i in range(4):
        mutant, kind = mutate(data, rng)
        path = tmp_path / f"mutant{i}.mp4"
        path.write_bytes(mutant)
        out = tmp_path / f"out{i}"
        capsys.readouterr()
        code = main(["reconstruct", str(path), "-o", str(out), "--layout", "none", "--config",
                     str(fast_config(tmp_path))])
        err = capsys.readouterr().err
        codes.append(code)
        assert code in (0, 2), f"{kind}: exit {code}\n{err}"
        assert "Traceback" not in err and "internal error" not in err, err
        if code == 0:
            from spectre.io.results import load_face_npz

            assert np.isfinite(load_face_npz(out / f"mutant{i}.npz")["cam"]).all()
        else:
            assert f"mutant{i}.mp4" in err
        assert not [p for p in out.glob("*") if ".partial" in p.name] if out.exists() else True


def test_fuzzed_checkpoints_and_pickles_fail_cleanly(tmp_path):
    """Corrupt weights and FLAME pickles (random bytes, byte flips of real small files) load or raise a
    one-line spectre error (not readable / unsafe); never another exception."""
    import io
    import pickle

    import torch

    from spectre.errors import SpectreError
    from spectre.safeload import load_checkpoint, load_restricted_pickle

    buf = io.BytesIO()
    torch.save({"E_flame": {"a": torch.arange(10.0), "b": torch.ones(3, 3)}}, buf)
    sources = {"checkpoint": (buf.getvalue(), load_checkpoint),
               "pickle": (pickle.dumps({"v_template": np.zeros((5, 3)), "f": np.arange(6).reshape(2, 3)}, protocol=2),
                          load_restricted_pickle)}
    rng = np.random.default_rng(5)
    seen = set()
    path = tmp_path / "m.bin"
    for i in range(200):
        for kind, (data, load) in sources.items():
            if i % 4 == 0:
                mutant = rng.bytes(len(data))
            else:
                b = bytearray(data)
                for off in rng.integers(0, len(b), int(rng.integers(1, 10))):
                    b[int(off)] = int(rng.integers(0, 256))
                mutant = bytes(b)
            path.write_bytes(mutant)
            try:
                load(path)
                seen.add((kind, "ok"))
            except SpectreError as exc:
                assert "\n" not in str(exc) and str(path) in str(exc), str(exc)
                seen.add((kind, type(exc).__name__))
    assert ("checkpoint", "AssetError") in seen and ("pickle", "AssetError") in seen, seen


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _long_clip(path: Path, n: int, size: int) -> Path:
    import av

    base = media.blank_frames(1, size, size)[0]
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width = s.height = size
        s.pix_fmt = "yuv420p"
        s.options = {"preset": "ultrafast"}
        for i in range(n):
            f = base.copy()
            f[(3 * i) % size] = 255  # a moving line: every frame differs
            for pkt in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return path


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs /proc to read the resident set size")
def test_long_video_streams_with_flat_memory(tmp_path):
    from spectre.io.video import open_video

    n, size = 3000, 160
    raw = n * size * size * 3  # ~230 MB if the clip were held in memory
    src = open_video(_long_clip(tmp_path / "long.mp4", n, size))
    seen, base, peak = 0, None, 0
    for k, chunk in enumerate(src.iter_chunks(64)):
        seen += len(chunk)
        rss = _rss_bytes()
        if k == 1:
            base = rss
        elif base is not None:
            peak = max(peak, rss - base)
    assert seen == n
    assert peak < 48 * 2**20 < raw / 4, f"memory grew by {peak / 2**20:.0f} MiB while streaming {raw / 2**20:.0f} MiB"


@pytest.mark.slow
def test_long_faceless_video_through_the_cli(tmp_path, capsys):
    clip = _long_clip(tmp_path / "long.mp4", 1500, 64)
    code = main(["reconstruct", str(clip), "-o", str(tmp_path / "out"), "--layout", "none"])
    err = capsys.readouterr().err
    assert code == 2 and "no face found in any of its 1500 frames" in err, err


def test_huge_frames_come_in_smaller_chunks(tmp_path, monkeypatch):
    """64 frames of 8K would be 6 GB per chunk: a chunk never holds more than MAX_CHUNK_BYTES of pixels
    (shown here with a small cap, so the test stays small)."""
    import spectre.io.video as video

    clip = media.write_video(tmp_path / "c.mp4", media.blank_frames(10, 64, 96))
    frame_bytes = 64 * 96 * 3
    monkeypatch.setattr(video, "MAX_CHUNK_BYTES", 3 * frame_bytes + 5)
    sizes = [len(c) for c in video.open_video(clip).iter_chunks(64)]
    assert sizes == [3, 3, 3, 1]
    monkeypatch.setattr(video, "MAX_CHUNK_BYTES", frame_bytes // 2)  # smaller than one frame: one per chunk
    assert [len(c) for c in video.open_video(clip).iter_chunks(4)] == [1] * 10
