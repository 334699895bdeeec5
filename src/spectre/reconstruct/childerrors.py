"""How a child process (a stage process, the tracking process) fails and stops for the job: the child sends
its exception when it pickles (typed errors keep their class, message and exit code); a child that ended
without a word is a :class:`StageProcessError`; a writer killed in the middle of a message is an end of file
for its reader (:func:`only_read`), not a wait for bytes that never come; Ctrl-C is the job's to handle and
SIGTERM leaves through the child's clean-up (:func:`child_signals`). No torch here: the tracking process has
none."""
from __future__ import annotations

import pickle
import signal

from ..errors import SpectreError

__all__ = ["StageProcessError", "child_signals", "only_read", "picklable"]


class StageProcessError(SpectreError):
    """A stage process ended without saying why (killed, out of memory, crashed)."""

    exit_code = 1


def _terminated(signum, frame):  # noqa: ARG001 - signal handler signature
    raise SystemExit(128 + signum)


def child_signals() -> None:
    """A child's signals: Ctrl-C reaches the whole process group, so the job decides and the child ignores
    it; SIGTERM leaves through the child's clean-up (``SystemExit``), so temporary files are removed."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _terminated)


def picklable(exc: BaseException) -> BaseException:
    """``exc`` itself when it survives pickling, else a RuntimeError with its one-line description: what a
    child sends its parent."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001 - any pickling failure
        return RuntimeError(" ".join(f"{type(exc).__name__}: {exc}".split()))


def only_read(q) -> None:
    """Close this process's copy of the write end of ``q`` (a ``multiprocessing.Queue`` it only reads from).

    A process that dies while it writes a large message (a killed tracking process, or a killed job writing
    frames to the video process) leaves part of it in the pipe; a reader that still holds a write end itself
    would then wait forever for the rest. With only the writer's end open, its death is an end of file:
    ``get`` raises ``EOFError`` or ``OSError``, which the reader turns into an error or its exit."""
    writer = getattr(q, "_writer", None)  # the queue's pipe: ``_reader`` for get, ``_writer`` for put
    if writer is not None:
        writer.close()
