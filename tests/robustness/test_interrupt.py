"""SIGINT / SIGTERM in the middle of a batch, then a resume: the interrupted run exits 130 / 143
promptly, leaves no partial or temporary file, every file it left is complete, and the resumed run
finishes every video."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

import spectre
from spectre.cli import main
from spectre.io.results import load_face_npz

from . import media
from .corpus import fast_config

N_VIDEOS = 6  # enough videos that the signal always lands mid-batch, however fast each one is


# Loaded by every Python process of the batch (the CLI and its spawned workers) through PYTHONPATH: when a
# video's face tracking has produced its first chunk, it says so with a file, so the test signals the batch
# while a job is under way (an event, not a sleep).
_STARTED_HOOK = """
import os
from pathlib import Path

from spectre.faces import track as _track

_events = Path(os.environ["SPECTRE_TEST_EVENTS"])
_stream = _track.FaceTracker.stream


def _announcing_stream(self, source, *args, **kwargs):
    for i, chunk in enumerate(_stream(self, source, *args, **kwargs)):
        if i == 0:
            (_events / (Path(str(source.path)).stem + ".started")).touch()
        yield chunk


_track.FaceTracker.stream = _announcing_stream
"""


def _env(events: Path) -> dict:
    """The child's environment: our source tree first, and the hook that reports started videos."""
    hook_dir = events / "hook"
    hook_dir.mkdir(parents=True)
    (hook_dir / "sitecustomize.py").write_text(_STARTED_HOOK)
    env = dict(os.environ)
    src = str(Path(spectre.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([str(hook_dir), src, env.get("PYTHONPATH", "")])
    env["SPECTRE_TEST_EVENTS"] = str(events)
    env["GLOG_minloglevel"] = "2"
    return env


def _assert_complete(out: Path) -> set[str]:
    """Every visible file is whole: sidecars parse and list existing outputs, npz files load,
    renders decode; nothing temporary is visible. Returns the stems whose sidecar exists."""
    names = [p.name for p in out.iterdir()]
    assert not [n for n in names if ".partial" in n], names
    finished = set()
    for p in out.iterdir():
        if p.name.startswith("."):
            continue
        if p.suffix == ".yaml":
            side = yaml.safe_load(p.read_text())
            assert all((out / o).is_file() for o in side["outputs"]), side
            finished.add(p.stem)
        elif p.suffix == ".npz":
            data = load_face_npz(p)
            assert np.isfinite(data["cam"]).all()
        elif p.suffix == ".mp4":
            from spectre.io.video import open_video

            assert open_video(p).read().frames.shape[0] > 0
    return finished


# SIGTERM with renders: the render (a video file with audio) is the longest write, so the signal most
# likely lands inside it; SIGINT without renders: the signal lands in tracking/fitting or a small write.
# --workers 2: the parent stops its worker processes (each removes its temporary files) and exits.
@pytest.mark.parametrize("sig,layout,workers", [pytest.param(signal.SIGINT, "none", 1, marks=pytest.mark.slow),
                                                pytest.param(signal.SIGTERM, "render", 1, marks=pytest.mark.slow),
                                                pytest.param(signal.SIGTERM, "none", 2, marks=pytest.mark.slow)],
                         ids=["SIGINT", "SIGTERM-render", "SIGTERM-workers"])
def test_signal_mid_batch_then_resume(sig, layout, workers, tmp_path, shared_dir, capsys):
    inp, out = tmp_path / "in", tmp_path / "out"
    faces = media.face_frames(shared_dir / "samples", 5, size=128)
    n_videos = N_VIDEOS + workers - 1
    for i in range(n_videos):
        media.write_video(inp / f"clip{i}.mp4", np.ascontiguousarray(np.roll(faces, i, axis=0)), audio_seconds=0.2)
    argv = ["reconstruct", str(inp), "-o", str(out), "--layout", layout, "--config", str(fast_config(tmp_path))]
    if workers > 1:
        argv += ["--workers", str(workers)]
    events = tmp_path / "events"
    proc = subprocess.Popen([sys.executable, "-m", "spectre", *argv], env=_env(events), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        # wait until one video is finished and another one is under way (its tracking has started; with
        # renders: a temporary render file of it is being written), then stop the batch
        def ready() -> bool:
            # a sidecar's temporary file (.clip0.<hex>.partial.yaml) is not a finished video
            finished = {p.stem for p in out.iterdir() if p.suffix == ".yaml" and not p.name.startswith(".")} \
                if out.is_dir() else set()
            if not finished:
                return False
            if layout == "none":
                return any(p.suffix == ".started" and p.stem not in finished for p in events.iterdir())
            return any(".partial" in p.name and p.name.split(".")[1] not in finished for p in out.iterdir())

        while not ready():
            assert proc.poll() is None, f"the batch ended before it was interrupted:\n{proc.stderr.read()}"
            assert time.monotonic() < deadline, "the batch did not get to the second video within 240 s"
            time.sleep(0.01)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)  # a hang fails here
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    expected = 130 if sig == signal.SIGINT else 128 + signal.SIGTERM
    assert proc.returncode == expected, f"exit {proc.returncode}\n{err}"
    assert "Traceback" not in err, err
    assert ("interrupted" if sig == signal.SIGINT else "terminated") in err
    done_before = _assert_complete(out)
    assert 1 <= len(done_before) < n_videos, done_before

    capsys.readouterr()
    resume = argv[: argv.index("--workers")] if "--workers" in argv else argv  # resume sequentially (faster)
    assert main(resume) == 0
    summary = capsys.readouterr().err
    assert f"{len(done_before)} skipped" in summary and f"{n_videos - len(done_before)} done" in summary, summary
    finished = _assert_complete(out)
    assert finished == {f"clip{i}" for i in range(n_videos)}
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")], "a temporary/marker file is visible"


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
def test_a_signal_dropped_inside_a_callback_is_sent_again(signame):
    """The signal's exception raised inside a weakref callback (where Python prints and drops it, as a
    Ctrl-C that lands in one does) still stops the command: it is sent again and raised in ordinary code."""
    code = f"""
import signal, sys, time, weakref
from spectre.cli import Terminated, sigterm_as_interrupt

class Thing:
    pass

def dropped(_ref):  # what the signal handler does when the signal lands inside this callback
    if signal.{signame} == signal.SIGTERM:
        raise Terminated()
    raise KeyboardInterrupt

with sigterm_as_interrupt():
    try:
        thing = Thing()
        ref = weakref.ref(thing, dropped)
        del thing  # the callback runs and its exception is dropped
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            sum(range(1000))
        print("not stopped")
    except Terminated:
        print("stopped: Terminated")
    except KeyboardInterrupt:
        print("stopped: KeyboardInterrupt")
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    want = "Terminated" if signame == "SIGTERM" else "KeyboardInterrupt"
    assert proc.stdout.strip() == f"stopped: {want}", (proc.stdout, proc.stderr)
    assert "Exception ignored" in proc.stderr  # Python did drop the first one
