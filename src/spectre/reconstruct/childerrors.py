"""How the failure of a child process (a stage process, the tracking process) reaches the job: the child
sends its exception when it pickles (typed errors keep their class, message and exit code); a child that
ended without a word is a :class:`StageProcessError`. No torch here: the tracking process has none."""
from __future__ import annotations

import pickle

from ..errors import SpectreError

__all__ = ["StageProcessError", "picklable"]


class StageProcessError(SpectreError):
    """A stage process ended without saying why (killed, out of memory, crashed)."""

    exit_code = 1


def picklable(exc: BaseException) -> BaseException:
    """``exc`` itself when it survives pickling, else a RuntimeError with its one-line description: what a
    child sends its parent."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001 - any pickling failure
        return RuntimeError(" ".join(f"{type(exc).__name__}: {exc}".split()))
