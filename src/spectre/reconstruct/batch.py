"""Many videos: inputs expanded by :mod:`spectre.io.inputs` (each with its output name, mirroring folder
trees), the output folder checked before any work, local worker processes (or a Ray cluster through
:mod:`.distributed`) running :func:`.jobs.run_job`, and the failure summary."""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import from_dict, to_dict
from ..errors import InputError, OutputError
from ..io.inputs import InputItem, display_path, expand_inputs
from ..io.video import frame_count
from ..progress import frame_bar
from .config import ReconstructConfig
from .distributed import run_on_ray
from .jobs import JobOutcome, run_job
from .reconstructor import Reconstructor
from .resume import is_finished
from .stagespawn import SpawnedStages
from .trackproc import TrackProcess

__all__ = ["expand_inputs", "check_output_folder", "BatchSummary", "run_batch"]


def _items(inputs: Sequence[str | Path | InputItem], image_folders: bool, output_dir: Path) -> list[InputItem]:
    """Already expanded inputs as they are; anything else through the shared expansion (the output
    folder is never searched for inputs: its renders are videos too)."""
    if inputs and all(isinstance(i, InputItem) for i in inputs):
        return list(inputs)
    return expand_inputs(inputs, image_folders=image_folders, exclude=[output_dir])


def check_output_folder(out: Path) -> None:
    """Create the output folder and prove it takes a file (os.access says yes to root under /sys)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output folder {display_path(out)}: {exc.strerror or exc}") from None
    try:
        with tempfile.NamedTemporaryFile(dir=out, prefix=".spectre-probe-"):
            pass
    except OSError as exc:
        raise OutputError(f"output folder {display_path(out)} is not writable ({exc.strerror or exc})") from None


@dataclass
class BatchSummary:
    outcomes: list[JobOutcome]

    @property
    def failed(self) -> list[JobOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    @property
    def exit_code(self) -> int:
        """0 when nothing failed; a single video's own error code; 1 when several videos failed."""
        failed = self.failed
        if not failed:
            return 0
        if len(self.outcomes) == 1:
            return failed[0].exit_code or 1
        return 1

    def text(self) -> str:
        lines = [f"{self.count('ok')} done, {self.count('skipped')} skipped (already finished), "
                 f"{len(self.failed)} failed"]
        for o in self.failed:
            lines.append(f"  FAILED {display_path(o.video)}: {o.message}")
        return "\n".join(lines)


# state of a pool worker process (spawned: one Reconstructor per process, reused over its videos)
_WORKER: Reconstructor | None = None
_IN_JOB = False
_STOPPING = False


def _worker_stop(signum, frame):  # noqa: ARG001 - signal handler signature
    """SIGTERM from the parent: abandon the current video cleanly (temporary files removed), or leave."""
    global _STOPPING
    _STOPPING = True
    if _IN_JOB:
        raise KeyboardInterrupt
    os._exit(128 + signum)


def _worker_init(cfg_dict: dict) -> None:
    global _WORKER
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the parent decides
    signal.signal(signal.SIGTERM, _worker_stop)
    torch.set_num_threads(1)
    _WORKER = Reconstructor(from_dict(ReconstructConfig, cfg_dict))


def _worker_job(*args) -> JobOutcome:
    global _IN_JOB
    if _STOPPING:  # a video queued before the stop request: do not start it
        return JobOutcome(str(args[0]), "failed", "interrupted", exit_code=130)
    _IN_JOB = True
    try:
        return run_job(*args, reconstructor=_WORKER)
    finally:
        _IN_JOB = False


def _stop_pool(pool, timeout: float = 30.0) -> None:
    """Cancel pending videos and stop the running ones (SIGTERM: each worker removes its temporary files)."""
    procs = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in procs:
        if proc.is_alive():
            proc.terminate()
    for proc in procs:
        proc.join(timeout)
        if proc.is_alive():
            proc.kill()


def run_batch(inputs: Sequence[str | Path | InputItem], output_dir: str | Path,
              config: ReconstructConfig | None = None, *, overwrite: bool = False, workers: int = 1,
              ray_address: str | None = None, progress: bool = False, image_folders: bool = False,
              on_done: Callable[[JobOutcome], None] | None = None, stage_processes: bool = False,
              track_ahead: TrackProcess | None = None,
              spawned_stages: SpawnedStages | None = None, first_bar=None) -> BatchSummary:
    """Reconstruct many videos into ``output_dir`` (mirroring folder inputs' trees, see
    :mod:`spectre.io.inputs`): finished videos are skipped (unless ``overwrite``), unfinished ones are
    redone, failures are collected in the returned summary. ``stage_processes``: one video at a time,
    the fit and the video stage in their own processes (:mod:`.stageprocs`). ``track_ahead``: tracking
    already started (by the command line, while torch loaded; a :mod:`.trackproc` process): the job of its
    video takes its chunks (one worker); ``spawned_stages``: stage processes started by the command
    line before it imported torch, used with ``stage_processes``. The caller closes both (a no-op once used).
    ``first_bar``: the first video's frame bar (:func:`spectre.progress.frame_bar`), opened by the command line
    before it imported torch; closed here once that video is done."""
    cfg = (config or ReconstructConfig()).validate()
    out = Path(output_dir)
    items = _items(inputs, image_folders, out)
    if not items:
        raise InputError("no input videos given")
    check_output_folder(out)
    jobs = [(str(it.path), it.name) for it in items]
    cfg_dict = to_dict(cfg)
    if ray_address:
        outcomes = run_on_ray(jobs, str(out), cfg_dict, overwrite, ray_address, on_done=on_done)
        order = {v: i for i, (v, _) in enumerate(jobs)}
        return BatchSummary(sorted(outcomes, key=lambda o: order.get(o.video, 0)))

    outcomes: list[JobOutcome] = []
    bar = None
    if progress and len(jobs) > 1:  # one video: its frame bar alone
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), desc="videos", unit="video", position=0, dynamic_ncols=True)

    def done(o: JobOutcome):
        outcomes.append(o)
        if bar is not None:
            bar.update(1)
            bar.set_postfix_str(f"failed={sum(x.status == 'failed' for x in outcomes)}")
        if on_done:
            on_done(o)

    if workers <= 1 or len(jobs) == 1:
        rec = Reconstructor(cfg, processes=stage_processes)
        # what the command line started early, where these jobs use it (else stopped now, not at the end)
        if rec.overlapped:
            rec.track_ahead, track_ahead = track_ahead, None
        if spawned_stages is not None and spawned_stages.roles == rec.process_roles:
            rec.spawned_stages, spawned_stages = spawned_stages, None
        for early in (track_ahead, spawned_stages):
            if early is not None:
                early.close()
        try:
            # a missing or unsafe face model fails every video the same way: say it once, before any work
            if not all(is_finished(out / Path(s).parent, Path(s).name) for _, s in jobs) or overwrite:
                if rec.uses_processes(jobs[0][0]):
                    rec.start_processes()  # they start up while this process loads the model and tracks
                rec.model  # noqa: B018 - loads (and checks) the face model asset
            for video, stem in jobs:
                fbar, first_bar = first_bar, None
                if progress and fbar is None:
                    # total: the video's frames; the count is the mean over the stages, so the ETA covers all
                    fbar = frame_bar(Path(video).name, frame_count(video), position=1 if bar is not None else 0)
                cb = fbar.update if fbar is not None else None
                try:
                    done(run_job(video, stem, str(out), cfg_dict, overwrite, reconstructor=rec, progress=cb))
                finally:
                    if fbar is not None:
                        fbar.close()
        finally:
            rec.close()
    else:
        ctx = mp.get_context("spawn")
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init,
                                   initargs=(cfg_dict,))
        try:
            futs = {pool.submit(_worker_job, v, s, str(out), cfg_dict, overwrite): v for v, s in jobs}
            for fut in as_completed(futs):
                try:
                    done(fut.result())
                except Exception as exc:  # noqa: BLE001 - a crashed worker process
                    done(JobOutcome(futs[fut], "failed", f"worker crashed ({type(exc).__name__}: {exc})", exit_code=1))
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: stop the workers, then report the interruption
            _stop_pool(pool)
            raise
        pool.shutdown(wait=True)
    if bar is not None:
        bar.close()
    order = {v: i for i, (v, _) in enumerate(jobs)}
    outcomes.sort(key=lambda o: order.get(o.video, 0))
    return BatchSummary(outcomes)
