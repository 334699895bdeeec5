"""`spectre <command>`: argument parsing, progress and one-line errors. No pipeline logic lives here.

Each command is a module in this package with ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int``; command modules import heavy libraries only inside ``run``.
"""
from __future__ import annotations

import argparse
import atexit
import contextlib
import gc
import importlib
import os
import signal
import sys
import threading
import time

from .. import __version__
from ..errors import SpectreError
from .options import add_debug

# The commands' numpy calls are small and run beside busy stages (the tracking and video processes):
# OpenBLAS's spare threads only spin (sched_yield) between calls, taking a core from those stages (0.7 CPU
# seconds of the 246-frame job on 2 cores). Set before numpy is first imported (the command modules import
# it); a value the user set wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

#: (command, module, one-line help)
COMMANDS = [
    ("assets", "spectre.cli.assets_cmd"),
    ("track", "spectre.cli.track_cmd"),
    ("reconstruct", "spectre.cli.reconstruct_cmd"),
    ("evaluate", "spectre.cli.evaluate_cmd"),
    ("prepare", "spectre.cli.prepare_cmd"),
    ("train", "spectre.cli.train_cmd"),
    ("view", "spectre.cli.view_cmd"),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spectre",
        description="Visual-speech-aware 3D face reconstruction from talking-face video.",
        epilog="Exit codes: 0 ok, 1 some items failed, 2 bad input/usage, 3 missing or invalid asset, "
               "4 unsafe file refused, 5 output not writable, 130 interrupted (Ctrl-C), 143 terminated (SIGTERM).")
    parser.add_argument("--version", action="version", version=f"spectre {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks instead of one-line errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in COMMANDS:
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=module.HELP, description=getattr(module, "DESCRIPTION", module.HELP),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        add_debug(p)
        p.set_defaults(_run=module.run)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that every clean-up (temporary files, workers) runs."""


def _raise_terminated(signum, frame):  # noqa: ARG001 - signal handler signature
    raise Terminated()


#: seconds after which a signal whose exception Python dropped is sent again
REDELIVER_S = 0.05


def _redeliver_dropped(previous_hook):
    """A ``sys.unraisablehook`` that sends Ctrl-C / SIGTERM again when its exception was dropped.

    Why: the exception of a signal that arrives while a finaliser or a weakref callback runs in the main
    thread is raised inside that callback, where Python prints it ("Exception ignored in ...") and drops
    it; the command then went on to the end and exited 0 (seen once in CI: Ctrl-C during a batch). The
    signal is sent again a moment later, when the main thread is back in ordinary code."""
    def hook(unraisable) -> None:
        exc = unraisable.exc_type
        if exc is not None and issubclass(exc, KeyboardInterrupt):
            sig = signal.SIGTERM if issubclass(exc, Terminated) else signal.SIGINT
            timer = threading.Timer(REDELIVER_S, os.kill, (os.getpid(), sig))
            timer.daemon = True
            timer.start()
        previous_hook(unraisable)
    return hook


@contextlib.contextmanager
def sigterm_as_interrupt():
    """Turn SIGTERM into :class:`Terminated` while a command runs, and send Ctrl-C or SIGTERM again when
    Python dropped its exception (:func:`_redeliver_dropped`); main thread only; restored after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    previous_hook = sys.unraisablehook
    sys.unraisablehook = _redeliver_dropped(previous_hook)
    try:
        yield
    finally:
        sys.unraisablehook = previous_hook
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    code = _main(argv)
    # an interrupted command leaves generators (MediaPipe graphs, decoder threads) in reference cycles of
    # its traceback: finalise them now, while the interpreter is whole, not at shutdown where a native
    # thread still running aborts the process ("terminate called without an active exception")
    gc.collect()
    _let_worker_threads_exit()
    # what is left lives until the process exits: keep the interpreter's shutdown from collecting it
    # again (torch's and MediaPipe's modules: about half a second of every command's wall time)
    gc.freeze()
    return code


def entry() -> None:
    """The ``spectre`` command (and ``python -m spectre``): :func:`main`, then exit without finalising
    the interpreter.

    Finalising torch's and MediaPipe's modules took about 0.1 s of the job's wall time (interleaved
    medians, docs/performance.md) and of ``spectre track``'s. What a normal exit does that matters still
    runs, in its order: other threads are waited for, the ``atexit`` handlers (logging, multiprocessing,
    temporary folders) run, and the standard streams are flushed. Not for use inside another program:
    it ends the process."""
    code = main()
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (``spectre ... | head``) or stream
            pass
    os._exit(code)


def _let_worker_threads_exit(timeout: float = 5.0) -> None:
    """Wait (at most ``timeout``) until our worker threads (``spectre-*``) are gone from the interpreter.
    A thread that returned is still tearing down torch's per-thread state for a moment; an interpreter
    that exits meanwhile aborts ("terminate called without an active exception") instead of exiting
    130 / 143 after Ctrl-C or SIGTERM."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        workers = [t for t in threading.enumerate() if t is not threading.current_thread()
                   and t.name.startswith("spectre-")]
        if not workers:
            return
        workers[0].join(timeout=0.05)
        time.sleep(0.01)


def _main(argv: list[str] | None) -> int:

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    debug = args.debug or bool(os.environ.get("SPECTRE_DEBUG"))
    try:
        with sigterm_as_interrupt():
            return int(args._run(args) or 0)
    except SpectreError as exc:
        if debug:
            raise
        print(f"spectre: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Terminated:
        print("spectre: terminated (SIGTERM)", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print("spectre: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1
    except MemoryError:
        if debug:
            raise
        print("spectre: error: out of memory (try a smaller --batch-size or fewer --workers)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    entry()
