"""The overlapped job with its stages in processes (issue 15, the command line's default): the same
numbers as the threads, a child's error raised in the parent with its type and message, the children
reused over jobs and never left running (normal exit, SIGINT, a killed parent), no partial outputs."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from proc_helpers import alive

import spectre
from spectre.errors import OutputError
from spectre.io.results import load_face_npz
from spectre.reconstruct.config import make_config
from spectre.reconstruct.reconstructor import Reconstructor

SMALL = {"identity_span": 12, "window": 8, "chunk_mb": 1}



@pytest.fixture(scope="module")
def threaded(short_clip, tmp_path_factory):
    """The same job with its stages as threads of one process (the reference)."""
    out = tmp_path_factory.mktemp("threads")
    rec = Reconstructor(make_config(pipeline=SMALL))
    try:
        return rec.run(short_clip, out, stem="clip"), out
    finally:
        rec.close()


def _frames(path: Path) -> np.ndarray:
    import av

    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def _same_results(res, ref) -> None:
    assert res.num_frames == ref.num_frames
    for k, v in ref.face.params.items():
        np.testing.assert_allclose(res.face.params[k], v, atol=1e-5, err_msg=k)
    np.testing.assert_allclose(res.face.cam, ref.face.cam, atol=1e-5)


@pytest.mark.slow
def test_processes_give_the_threads_results_and_are_reused(short_clip, threaded, tmp_path):
    ref, ref_out = threaded
    rec = Reconstructor(make_config(pipeline=SMALL), processes=True)
    try:
        rec.start_processes()
        children = [p.pid for p in rec._procs.procs.values()]
        assert len(children) == 1
        res = rec.run(short_clip, tmp_path / "a", stem="clip")
        # a second job reuses the same children
        res2 = rec.run(short_clip, tmp_path / "b", stem="clip")
        assert [p.pid for p in rec._procs.procs.values()] == children
    finally:
        rec.close()
    assert not any(alive(pid) for pid in children), "closing the reconstructor ends its stage processes"
    for r in (res, res2):
        _same_results(r, ref)
    # the video: the same frames as the threads' video (the same renders, the same encoder)
    a, b = _frames(tmp_path / "a" / "clip.mp4"), _frames(ref_out / "clip.mp4")
    assert a.shape == b.shape == (27, 224, 448, 3)
    assert np.abs(a.astype(int) - b.astype(int)).mean() < 0.5
    assert not [p.name for p in (tmp_path / "a").iterdir() if ".partial" in p.name]


def test_an_error_in_a_child_is_raised_in_the_parent_and_the_children_go_on(short_clip, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "clip.mp4").write_bytes(b"somebody else's video")  # the video process may not replace it
    rec = Reconstructor(make_config(pipeline=SMALL), processes=True)
    try:
        with pytest.raises(OutputError, match="clip.mp4 already exists") as err:
            rec.run(short_clip, out, stem="clip", overwrite=False)
        assert err.value.exit_code == OutputError.exit_code
        assert (out / "clip.mp4").read_bytes() == b"somebody else's video"
        assert not [p.name for p in out.iterdir() if ".partial" in p.name]
        children = [p.pid for p in rec._procs.procs.values()]
        res = rec.run(short_clip, tmp_path / "next", stem="clip")  # the same children do the next job
        assert [p.pid for p in rec._procs.procs.values()] == children
        assert (tmp_path / "next" / "clip.mp4").is_file() and len(_frames(tmp_path / "next" / "clip.mp4")) == 27
    finally:
        rec.close()
    face = res.face  # a real fit (the slow tests compare it with the threads' numbers)
    ok = np.asarray(face.valid)
    assert res.num_frames == 27 and np.abs(face.landmarks2d[ok] - face.tracked68[ok]).mean() < 6.0


def _tagged(tag: str) -> list[int]:
    """Processes whose environment carries ``tag`` (the CLI and every process it started)."""
    found = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if tag.encode() in (d / "environ").read_bytes() and alive(int(d.name)):
                    found.append(int(d.name))
            except OSError:
                continue
    return found


def _env(tag: str) -> dict:
    env = dict(os.environ, SPECTRE_TEST_TAG=tag, GLOG_minloglevel="2")
    env["PYTHONPATH"] = os.pathsep.join([str(Path(spectre.__file__).resolve().parents[1]),
                                         env.get("PYTHONPATH", "")])
    return env


def _gone(tag: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _tagged(tag):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


pytestmark_linux = pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc")


@pytest.mark.slow
@pytestmark_linux
def test_cli_leaves_no_process_behind(short_clip, tmp_path):
    tag = uuid.uuid4().hex
    conf = tmp_path / "small.yaml"  # windows shorter than the clip: the video gets its process
    conf.write_text("pipeline: {identity_span: 12, window: 8, chunk_mb: 1}\n")
    proc = subprocess.run([sys.executable, "-m", "spectre", "reconstruct", str(short_clip), "-o", str(tmp_path / "o"),
                           "--config", str(conf)], env=_env(tag), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("wrote ")
    assert _gone(tag, 5.0), "a stage process outlived the command"
    assert len(load_face_npz(tmp_path / "o" / f"{short_clip.stem}.npz")["cam"]) == 27


def _long_clip(shared_dir: Path, path: Path, n: int = 150) -> Path:
    sys.path.insert(0, str(Path(__file__).parent / "robustness"))
    try:
        import media
    finally:
        sys.path.pop(0)
    faces = media.face_frames(shared_dir / "samples", 40, size=160)
    frames = np.concatenate([faces, faces[::-1]] * (n // 80 + 1))[:n]
    media.write_video(path, np.ascontiguousarray(frames), audio_seconds=0.5)
    return path


@pytest.mark.slow
@pytestmark_linux
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=["SIGINT", "SIGTERM", "SIGKILL"])
def test_stopped_mid_video_no_partial_file_no_process(sig, shared_dir, tmp_path):
    """Stopped while the video process writes: SIGINT (Ctrl-C, to the process group) exits 130, SIGTERM
    (to the parent alone) 143; SIGKILL of the parent alone (nobody cleans up for it): the children
    notice, remove the temporary video and leave."""
    clip = _long_clip(shared_dir, tmp_path / "clip.mp4")
    out = tmp_path / "out"
    tag = uuid.uuid4().hex
    proc = subprocess.Popen([sys.executable, "-m", "spectre", "reconstruct", str(clip), "-o", str(out)],
                            env=_env(tag), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        # the video process has written frames (its temporary file is not empty)
        while not (out.is_dir() and any(".partial" in p.name and p.stat().st_size > 0 for p in out.iterdir())):
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "the video was not started within 240 s"
            time.sleep(0.02)
        if sig == signal.SIGINT:
            os.killpg(proc.pid, sig)  # Ctrl-C reaches the whole process group
        else:
            proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if sig != signal.SIGKILL:
        assert proc.returncode == (130 if sig == signal.SIGINT else 143), err
        assert ("interrupted" if sig == signal.SIGINT else "terminated") in err and "Traceback" not in err, err
    assert _gone(tag, 10.0), "a stage process outlived the command"
    left = [p.name for p in out.iterdir()]
    assert not [n for n in left if ".partial" in n], left
    assert "clip.mp4" not in left and "clip.yaml" not in left, left


def test_short_clips_and_no_video_keep_to_threads(short_clip, tmp_path):
    """A clip within the fit's first window has nothing to overlap, and without a video there is no
    stage to move out: no process is started for them."""
    for cfg in (make_config(), make_config(layout="none", pipeline=SMALL)):
        rec = Reconstructor(cfg, processes=True)
        try:
            assert not rec.uses_processes(short_clip)
        finally:
            rec.close()
    rec = Reconstructor(make_config(pipeline=SMALL), processes=True)
    try:
        assert rec.uses_processes(short_clip)
    finally:
        rec.close()


def test_stage_processes_started_early_are_used(short_clip, threaded, tmp_path):
    """Processes started before the configuration was known (the command line starts them before importing
    torch) serve the job once configured; ones configured already are closed and replaced."""
    from spectre.reconstruct.stagespawn import SpawnedStages

    ref, _ = threaded
    early = SpawnedStages(("video",))
    rec = Reconstructor(make_config(pipeline=SMALL), processes=True)
    rec.spawned_stages = early
    try:
        rec.start_processes()
        assert rec._procs.procs["video"].pid == early.procs["video"].pid and rec.spawned_stages is None
        _same_results(rec.run(short_clip, tmp_path / "a", stem="clip"), ref)
        assert (tmp_path / "a" / "clip.mp4").stat().st_size > 0
    finally:
        rec.close()
    assert not early.procs["video"].is_alive()
    other = SpawnedStages(("video",))
    other.configure({})  # configured for another job already: not taken
    rec = Reconstructor(make_config(pipeline=SMALL), processes=True)
    rec.spawned_stages = other
    try:
        rec.start_processes()
        assert rec._procs.procs["video"].pid != other.procs["video"].pid
        assert not any(p.is_alive() for p in other.procs.values())
    finally:
        rec.close()


def test_unused_early_stage_processes_end(tmp_path):
    from spectre.reconstruct.stagespawn import SpawnedStages

    early = SpawnedStages(("video",))
    rec = Reconstructor(make_config(pipeline=SMALL), processes=True)
    rec.spawned_stages = early
    rec.close()
    assert not early.procs["video"].is_alive()
    early.close()  # idempotent


def test_the_command_lines_threshold_is_the_default_first_window():
    from spectre.reconstruct.config import PipelineConfig
    from spectre.reconstruct.stagespawn import FIRST_WINDOW, clip_uses_processes

    pc = PipelineConfig()
    assert FIRST_WINDOW == min(pc.identity_span, pc.window)
    assert clip_uses_processes(FIRST_WINDOW + 1) and not clip_uses_processes(FIRST_WINDOW)
    assert clip_uses_processes(None) and not clip_uses_processes(-1)


def test_the_video_process_needs_no_torch(short_clip, tmp_path):
    """With the compiled rasteriser the video process gets posed vertices and never loads torch (about
    1.1 s of CPU and 300 MB per job on a laptop)."""
    pytest.importorskip("numba", reason="without the 'fast' extra the video process renders with torch")
    rec = Reconstructor(make_config(pipeline=SMALL), processes=True)
    try:
        rec.run(short_clip, tmp_path, stem="clip")
        pid = rec._procs.procs["video"].pid
        maps = Path(f"/proc/{pid}/maps")
        if not maps.exists():
            pytest.skip("no /proc here to read the process's libraries")
        libraries = maps.read_text()
    finally:
        rec.close()
    assert "libtorch" not in libraries and "numba" in libraries and (tmp_path / "clip.mp4").stat().st_size > 0


@pytest.mark.slow
def test_the_video_process_without_the_compiled_rasteriser(short_clip, threaded, tmp_path, monkeypatch):
    """``SPECTRE_RASTER=torch`` (as without numba): the video process imports torch for its render and
    draws the same video."""
    _, ref_out = threaded
    monkeypatch.setenv("SPECTRE_RASTER", "torch")  # the child is spawned with this environment
    rec = Reconstructor(make_config(pipeline=SMALL), processes=True)
    try:
        rec.run(short_clip, tmp_path, stem="clip")
    finally:
        rec.close()
    a, b = _frames(tmp_path / "clip.mp4"), _frames(ref_out / "clip.mp4")
    assert a.shape == b.shape and np.abs(a.astype(int) - b.astype(int)).mean() < 0.5


def _tracking_to_the_video(cfg, clip):
    """The command line's arrangement: stage processes with a frame queue, and a tracking process that sends
    its windows there (:mod:`spectre.reconstruct.trackproc`), handed to a reconstructor."""
    from spectre.reconstruct.stagespawn import SpawnedStages
    from spectre.reconstruct.tracked import CutSettings
    from spectre.reconstruct.trackproc import TrackProcess

    early = SpawnedStages(("video",), frames=3)
    rec = Reconstructor(cfg, processes=True)
    rec.spawned_stages = early
    rec.track_ahead = TrackProcess(clip, CutSettings.of(cfg, video=True), frames_to=early.frames)
    return rec, early


def test_windows_straight_from_the_tracking_process(short_clip, threaded, tmp_path, monkeypatch):
    """The windows go from the tracking process to the video process, never through the job's process:
    the same results and video as the threads."""
    from spectre.reconstruct.stageprocs import StageProcesses

    ref, ref_out = threaded
    sent = []
    send = StageProcesses.send
    monkeypatch.setattr(StageProcesses, "send", lambda self, role, item, handle: (sent.append(item[0]),
                                                                                 send(self, role, item, handle)))
    rec, early = _tracking_to_the_video(make_config(pipeline=SMALL), short_clip)
    try:
        tracker = rec.track_ahead
        res = rec.run(short_clip, tmp_path / "a", stem="clip")
        assert rec.track_ahead is None and not tracker.proc.is_alive() and tracker.proc.exitcode == 0
    finally:
        rec.close()
    assert sent == ["frames-end"]  # the parent sends the frame count, no window (the posed faces go by a thread)
    _same_results(res, ref)
    a, b = _frames(tmp_path / "a" / "clip.mp4"), _frames(ref_out / "clip.mp4")
    assert a.shape == b.shape == (27, 224, 448, 3)
    assert np.abs(a.astype(int) - b.astype(int)).mean() < 0.5


def test_a_tracking_process_killed_while_it_sends_windows(short_clip, tmp_path):
    """Killed with windows half written into the video process's frame queue: the job fails with the
    tracking process's error (not a hang), leaves no partial file, and the video process serves the next
    job."""
    from proc_helpers import wait_until

    from spectre.reconstruct.childerrors import StageProcessError

    rec, early = _tracking_to_the_video(make_config(pipeline=SMALL), short_clip)
    try:
        tracker = rec.track_ahead
        wait_until(lambda: early.frames.full())  # 3 chunks of windows queued, the first partly in the pipe
        os.kill(tracker.proc.pid, signal.SIGKILL)
        with pytest.raises(StageProcessError, match="tracking process ended unexpectedly"):
            rec.run(short_clip, tmp_path / "a", stem="clip")
        assert not [p.name for p in (tmp_path / "a").iterdir() if ".partial" in p.name]
        video = early.procs["video"].pid
        rec.run(short_clip, tmp_path / "b", stem="clip")  # tracked in this process, windows through it
        assert rec._procs.procs["video"].pid == video
        assert len(_frames(tmp_path / "b" / "clip.mp4")) == 27
    finally:
        rec.close()


# Loaded by the command's process through PYTHONPATH: says (with a file) whether the job took a tracking
# process whose windows go straight to the video process.
_TAKEN_HOOK = """
import os
from pathlib import Path

from spectre.reconstruct import trackproc as _tp

_take = _tp.TrackProcess.take


def _recorded(self, *args, **kwargs):
    Path(os.environ["SPECTRE_TEST_TAKEN"]).write_text(f"{self.path.name} {self.frames_to is not None}")
    return _take(self, *args, **kwargs)


_tp.TrackProcess.take = _recorded
"""


@pytest.mark.slow
@pytestmark_linux
def test_the_command_lines_windows_go_straight_to_the_video_process(shared_dir, tmp_path):
    """``spectre reconstruct`` on a clip longer than the fit's first window: the tracking process it starts
    before importing torch sends its windows to the video process, and the job takes its chunks."""
    clip = _long_clip(shared_dir, tmp_path / "clip.mp4")
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(_TAKEN_HOOK)
    tag = uuid.uuid4().hex
    env = _env(tag)
    env["PYTHONPATH"] = os.pathsep.join([str(hook), env["PYTHONPATH"]])
    env["SPECTRE_TEST_TAKEN"] = str(tmp_path / "taken.txt")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "spectre", "reconstruct", str(clip), "-o", str(out)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "taken.txt").read_text() == "clip.mp4 True"
    assert _frames(out / "clip.mp4").shape == (150, 160, 320, 3)
    assert _gone(tag, 5.0), "a stage process outlived the command"
