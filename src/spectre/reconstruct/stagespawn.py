"""Starting the stage processes of :mod:`.stageprocs`, without torch in the starting process.

A stage process spends about half a CPU second starting (numpy, PyAV, the compiled rasteriser; with torch,
about 2 s). Started by the :class:`~.reconstructor.Reconstructor`, that competes with tracking and the fit's
first window; started by the command line before it imports torch itself, it uses the core that the
parent's import leaves idle. So the processes start here without a configuration: each imports its modules,
then waits for its first message, ``("config", cfg_dict)`` (:meth:`SpawnedStages.configure`), and reports
``("ready", role)``.
"""
from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import queue
import time

__all__ = ["CHILD_ENV", "FIRST_WINDOW", "SpawnedStages", "clip_uses_processes"]

#: frames before the default job's first fitted window: the defaults of ``PipelineConfig.identity_span`` and
#: ``window``, repeated here because this module must not import the configuration (it imports torch;
#: tests/test_stage_processes.py checks that they agree)
FIRST_WINDOW = 128

#: items waiting in each child's inbox (chunks of tracked frames; at 1080p a chunk is about 10 frames)
INBOX = 3

#: the children's native thread pools: one thread each (their numpy/BLAS calls are tiny; spare threads
#: only spin, badly on busy cores: a batch of 3x3 inverses took 37 ms); torch is set to one thread too
CHILD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@contextlib.contextmanager
def _child_env():
    """``CHILD_ENV`` in the environment while children are spawned (they read it before importing numpy)."""
    saved = {k: os.environ.get(k) for k in CHILD_ENV}
    os.environ.update(CHILD_ENV)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def clip_uses_processes(num_frames: int | None, first_window: int = FIRST_WINDOW) -> bool:
    """Whether a clip of ``num_frames`` (None or 0: unknown) gets stage processes: only a clip longer than
    the fit's first window has stages to overlap (a shorter one's video starts once the whole clip is
    fitted, and a process would only add its start-up)."""
    return not num_frames or num_frames > first_window


def stage_main(role: str, inbox, outbox, abort, frames) -> None:
    """The stage process's entry point (spawned: it runs in the child)."""
    # deliberately here: the parent imports this module before torch, the child needs torch's stages
    from .stageworker import serve

    serve(role, inbox, outbox, abort, frames)


class SpawnedStages:
    """Stage processes (``roles``: ``video``, the one stage that runs in a process) and their queues, started
    at once.

    ``frames``: how many chunks of frames a tracking process started next (:mod:`.trackproc`) may queue
    for the video process on a queue of their own, :attr:`frames` (0: none). Its windows then go straight
    to the video process instead of through the job's process, which would unpickle and pickle them again
    (278 MB at 1080p)."""

    def __init__(self, roles: tuple[str, ...] = ("video",), frames: int = 0):
        ctx = mp.get_context("spawn")
        self.roles = tuple(roles)
        self.outbox = ctx.Queue()
        self.abort = ctx.Value("q", -1, lock=False)  # id of the job to stop
        self.inbox = {role: ctx.Queue(INBOX) for role in self.roles}
        self.frames = ctx.Queue(frames) if frames > 0 and "video" in self.roles else None
        self.procs = {}
        self.configured = False
        self._closed = False
        for role, box in self.inbox.items():
            p = ctx.Process(target=stage_main, name=f"spectre-{role}", daemon=True,
                            args=(role, box, self.outbox, self.abort, self.frames if role == "video" else None))
            with _child_env():
                p.start()
            self.procs[role] = p

    def alive(self) -> bool:
        return not self._closed and all(p.is_alive() for p in self.procs.values())

    def configure(self, cfg_dict: dict) -> None:
        """Send every process its configuration (once): they report ``ready``."""
        if self.configured:
            raise RuntimeError("the stage processes are configured already")
        self.configured = True
        for box in self.inbox.values():
            box.put(("config", cfg_dict))

    def close(self, timeout: float = 10.0) -> None:
        """Stop the children (asked first, then ended) and wait for them. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for role, p in self.procs.items():
            if p.is_alive():
                try:
                    self.inbox[role].put(("stop",), timeout=1.0)
                except (queue.Full, ValueError, OSError):
                    pass
        deadline = time.monotonic() + timeout
        for p in self.procs.values():
            p.join(max(deadline - time.monotonic(), 0.1))
            if p.is_alive():
                p.terminate()
                p.join(2.0)
            if p.is_alive():
                p.kill()
                p.join(2.0)
        for q in (self.outbox, *self.inbox.values(), *([self.frames] if self.frames is not None else [])):
            q.cancel_join_thread()  # unread items must not keep this process from exiting
            q.close()
