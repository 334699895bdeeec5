"""TrackProcess (the command line's tracking before torch, in a process of its own): the job gets exactly
the chunks it would have tracked itself, a job with other settings tracks itself and the process ends,
the video's errors and warnings reach the job, and the process never outlives its use."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from proc_helpers import alive, wait_until

from spectre.errors import InputError
from spectre.io.video import open_video
from spectre.reconstruct.config import ReconstructConfig, make_config
from spectre.reconstruct.reconstructor import Reconstructor
from spectre.reconstruct.tracked import CutSettings
from spectre.reconstruct.trackproc import TrackedFromProcess, TrackProcess

SMALL = {"chunk_mb": 1}  # several chunks on the short clip


def _collect(tracked):
    chunks = list(tracked)
    return chunks, tracked.result()


def test_the_command_lines_defaults_are_the_configs():
    cfg = ReconstructConfig().validate()
    assert CutSettings.of(cfg, video=True) == CutSettings()
    assert CutSettings().with_given(layout="render", video_frame=None).layout == "render"


def test_the_queue_holds_about_queued_mb_of_windows():
    from spectre.io.video import chunk_frames
    from spectre.reconstruct.trackproc import QUEUED_MB, queued_chunks

    settings = CutSettings()
    for size in ((1920, 1080), (224, 224), (640, 480), (1280, 720), (3840, 2160)):
        n = queued_chunks(settings, *size)
        w, h = settings.window(*size).size
        chunk = chunk_frames(*size, settings.chunk_mb, settings.track_chunk) * w * h * 3
        assert 3 <= n <= 8, size
        assert n == 3 or n * chunk <= QUEUED_MB * 2**20, size  # bounded memory
        assert n == 8 or (n + 1) * chunk > QUEUED_MB * 2**20, size  # as many as fit
    # the measured cases (docs/performance.md): 8 chunks at 1080p and at 224²; 640x480 shows whole frames
    assert queued_chunks(settings, 1920, 1080) == queued_chunks(settings, 224, 224) == 8
    assert queued_chunks(settings, 640, 480) == 3


@pytest.mark.parametrize("layout", ["grid", "none"])
def test_chunks_from_the_process_equal_the_jobs_own(short_clip, layout):
    cfg = make_config(pipeline=SMALL, layout=layout)
    video = layout != "none"
    settings = CutSettings.of(cfg, video=video)
    source = open_video(short_clip)
    rec = Reconstructor(cfg)
    try:
        own, (tracks, track) = _collect(rec.tracked_frames(short_clip, source, settings.window(source.width,
                                                                                               source.height)))
        proc = TrackProcess(short_clip, settings)
        rec.track_ahead = proc
        tracked = rec.tracked_frames(short_clip, source, settings.window(source.width, source.height))
        assert isinstance(tracked, TrackedFromProcess) and rec.track_ahead is None
        got, (tracks2, track2) = _collect(tracked)
    finally:
        rec.close()
    assert len(own) > 2 and [c.row for c in got] == [c.row for c in own]
    for a, b in zip(got, own):
        for k in ("lm", "valid", "p478", "times", "frames", "tw", "tf"):
            x, y = getattr(a, k), getattr(b, k)
            assert (x is None) == (y is None) == (k in ("frames", "tw", "tf") and not video), k
            if x is not None:
                np.testing.assert_array_equal(x, y, err_msg=k)
    np.testing.assert_array_equal(tracks2.indices, tracks.indices)
    np.testing.assert_array_equal(track2.points478, track.points478)
    assert sorted(tracks2.tracks) == sorted(tracks.tracks)
    wait_until(lambda: not proc.proc.is_alive())  # done: the process has left


def test_a_job_with_other_settings_tracks_itself(short_clip):
    cfg = make_config(pipeline=SMALL)
    proc = TrackProcess(short_clip, CutSettings.of(cfg, video=True).with_given(crop_scale=1.5))
    rec = Reconstructor(cfg)
    rec.track_ahead = proc
    try:
        source = open_video(short_clip)
        tracked = rec.tracked_frames(short_clip, source, None)
        assert not isinstance(tracked, TrackedFromProcess)
        assert not proc.proc.is_alive() and rec.track_ahead is None
    finally:
        rec.close()


# Loaded by the command's process through PYTHONPATH: says (with a file) which video's tracked chunks the job
# took from the tracking process.
_TAKEN_HOOK = """
import os
from pathlib import Path

from spectre.reconstruct import trackproc as _tp

_take = _tp.TrackProcess.take


def _recorded(self, *args, **kwargs):
    Path(os.environ["SPECTRE_TEST_TAKEN"]).write_text(self.path.name)
    return _take(self, *args, **kwargs)


_tp.TrackProcess.take = _recorded
"""


@pytest.mark.parametrize("layout", ["grid", "none"])
def test_the_command_line_tracks_every_clip_in_the_process(short_clip, tmp_path, layout):
    """A clip within the fit's first window (the rest of its job runs in threads) and a job without a video
    are tracked in the early process too, and the job takes its chunks rather than tracking again."""
    import spectre

    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(_TAKEN_HOOK)
    src = str(Path(spectre.__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(hook), src, os.environ.get("PYTHONPATH", "")]),
               SPECTRE_TEST_TAKEN=str(tmp_path / "taken.txt"), GLOG_minloglevel="2")
    out = tmp_path / "out"
    subprocess.run([sys.executable, "-m", "spectre", "reconstruct", str(short_clip), "-o", str(out), "--layout",
                    layout, "--quiet"], env=env, check=True, capture_output=True, timeout=300)
    assert (tmp_path / "taken.txt").read_text() == short_clip.name
    assert (out / f"{short_clip.stem}.npz").is_file()
    assert (out / f"{short_clip.stem}.mp4").is_file() == (layout != "none")


def test_the_command_line_called_with_torch_loaded_tracks_in_the_job(short_clip, tmp_path, monkeypatch):
    """The early process hides the command's import of torch; called from Python with torch already
    imported there is nothing to hide, so none is started (its start-up would only add CPU time)."""
    import spectre.cli.reconstruct_cmd as cmd
    from spectre.cli import main

    assert "torch" in sys.modules
    made = []
    monkeypatch.setattr(cmd, "TrackProcess", lambda *a, **k: made.append(a))
    assert main(["reconstruct", str(short_clip), "-o", str(tmp_path), "--layout", "none", "--quiet"]) == 0
    assert made == [] and (tmp_path / f"{short_clip.stem}.npz").is_file()


def test_the_processs_warnings_are_logged_by_the_job(shared_dir, tmp_path, caplog):
    """The decoder's warnings in the tracking process reach the job's log (its handlers, its tests)."""
    from robustness import media

    frames = media.face_frames(shared_dir / "samples", 6, size=128)
    clip = media.zero_mp4_timestamps(media.write_video(tmp_path / "frozen.mp4", frames, options={"bf": "0"}))
    proc = TrackProcess(clip, CutSettings(video=False))
    with caplog.at_level("WARNING", logger="spectre"):
        chunks = list(proc.take())
    assert sum(c.n for c in chunks) == 6
    assert any("frozen.mp4" in r.getMessage() and "timestamps do not increase" in r.getMessage()
               for r in caplog.records if r.name.startswith("spectre"))


def test_the_videos_error_reaches_the_job(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all" * 100)
    proc = TrackProcess(bad, CutSettings())
    with pytest.raises(InputError, match="bad.mp4"):
        list(proc.take())
    assert not proc.proc.is_alive()


def test_closed_while_waiting_for_the_job(short_clip):
    proc = TrackProcess(short_clip, CutSettings(chunk_mb=1, track_chunk=2))  # more chunks than the queue holds
    wait_until(lambda: proc.outbox.full())
    pid = proc.proc.pid
    proc.close()
    assert not alive(pid)
    proc.close()  # idempotent


def test_an_untaken_process_that_tracked_the_whole_clip_leaves_when_closed(short_clip):
    """Its chunk of windows (27 frames, 4 MB) is more than the pipe holds, so after its last message it waits
    for the pipe to be read. Closing reads it away: the process ends by itself (exit code 0), not when it is
    terminated at the close's timeout (a job with other settings than the command line's waited 10 s)."""
    proc = TrackProcess(short_clip, CutSettings())
    wait_until(lambda: proc.outbox.qsize() == 2)  # the chunk and the end, both put
    proc.close()
    assert proc.proc.exitcode == 0


def test_it_leaves_when_the_job_is_killed(short_clip):
    """A parent killed with SIGKILL cannot close it: the process notices and leaves on its own."""
    code = ("import sys, time\n"
            "from spectre.reconstruct.tracked import CutSettings\n"
            "from spectre.reconstruct.trackproc import TrackProcess\n"
            f"p = TrackProcess({str(short_clip)!r}, CutSettings(chunk_mb=1, track_chunk=2))\n"
            "print(p.proc.pid, flush=True)\n"
            "time.sleep(600)\n")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        pid = int(parent.stdout.readline())
        assert alive(pid)
        parent.kill()
        parent.wait(30)
        wait_until(lambda: not alive(pid))
    finally:
        if parent.poll() is None:
            parent.kill()


def test_a_killed_tracking_process_is_an_error_not_a_hang(short_clip):
    from spectre.reconstruct.childerrors import StageProcessError

    proc = TrackProcess(short_clip, CutSettings(chunk_mb=1, track_chunk=2))
    wait_until(lambda: proc.outbox.full())
    os.kill(proc.proc.pid, signal.SIGKILL)
    with pytest.raises(StageProcessError, match="tracking process ended unexpectedly"):
        for _ in proc.take():  # the chunks it sent before it died, then the error
            pass
    proc.close()


@pytest.mark.parametrize("layout", ["grid", "overlay"])
def test_the_windows_go_to_the_video_processs_queue(short_clip, layout):
    """Given the video process's frame queue, the process sends the windows there (tagged with its token;
    for the grid converted for the encoder) and the job's chunks come without them. Its job may have all
    chunks before the video process has read the windows: the process does not leave (nor is it stopped)
    until they have gone through the pipe."""
    import multiprocessing as mp

    from spectre.io.writer import rgb_to_i420

    cfg = make_config(layout=layout)
    settings = CutSettings.of(cfg, video=True)
    source = open_video(short_clip)
    rec = Reconstructor(cfg)
    frames_to = mp.get_context("spawn").Queue(3)
    try:
        own, _ = _collect(rec.tracked_frames(short_clip, source, settings.window(source.width, source.height)))
        proc = TrackProcess(short_clip, settings, frames_to=frames_to)
        rec.track_ahead = proc
        tracked = rec.tracked_frames(short_clip, source, settings.window(source.width, source.height), frames_to)
        assert isinstance(tracked, TrackedFromProcess) and tracked.frames_token == proc.token
        got, _ = _collect(tracked)  # every chunk and the end, while the windows wait in the process
        assert proc.proc.is_alive(), "left (or was stopped) before the video process had its windows"
        sent = [frames_to.get(timeout=60) for _ in range(len(got) + 1)]
        wait_until(lambda: not proc.proc.is_alive())
        assert proc.proc.exitcode == 0
    finally:
        rec.close()
    assert all(c.frames is None for c in got) and [c.row for c in got] == [c.row for c in own]
    assert sent[-1] == ("frames-done", proc.token, sum(c.n for c in own))
    for (kind, token, row, frames, times), ch in zip(sent[:-1], own):
        assert (kind, token, row) == ("frames", proc.token, ch.row)
        np.testing.assert_array_equal(frames, rgb_to_i420(ch.frames) if layout == "grid" else ch.frames)
        np.testing.assert_array_equal(times, ch.times)


def test_a_job_that_reads_the_windows_elsewhere_tracks_itself(short_clip):
    """A process that sends its windows to a frame queue serves only a job whose video reads that queue
    (and one that sends them with its chunks only a job that reads them there)."""
    import multiprocessing as mp

    cfg = make_config(pipeline=SMALL)
    settings = CutSettings.of(cfg, video=True)
    source = open_video(short_clip)
    window = settings.window(source.width, source.height)
    frames_to = mp.get_context("spawn").Queue(3)
    for proc, job_reads in ((TrackProcess(short_clip, settings, frames_to=frames_to), None),
                            (TrackProcess(short_clip, settings), frames_to)):
        rec = Reconstructor(cfg)
        rec.track_ahead = proc
        try:
            assert not isinstance(rec.tracked_frames(short_clip, source, window, job_reads), TrackedFromProcess)
            assert not proc.proc.is_alive()
        finally:
            rec.close()


def test_killed_while_it_writes_windows_is_an_end_of_file_for_their_reader(short_clip):
    """Killed while it writes windows into the frame queue, it leaves part of a message in the pipe; the
    reader (the video process) must then get an end of file, not wait for the rest for ever: the job's
    process, which made the queue, keeps no write end of it."""
    import multiprocessing as mp
    import queue
    import threading

    frames_to = mp.get_context("spawn").Queue(3)
    proc = TrackProcess(short_clip, CutSettings(chunk_mb=1, track_chunk=2), frames_to=frames_to)
    wait_until(lambda: frames_to.full())  # 3 chunks of windows put, the first partly written into the pipe
    os.kill(proc.proc.pid, signal.SIGKILL)
    proc.proc.join(30)
    outcome = []

    def read():
        try:
            while True:
                frames_to.get(timeout=30)
        except (EOFError, OSError):
            outcome.append("end of file")
        except queue.Empty:
            outcome.append("nothing, and no end of file")

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(60)
    assert outcome == ["end of file"]
    proc.close()
