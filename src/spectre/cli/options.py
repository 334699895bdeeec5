"""Options several commands share, defined once so they read and behave the same everywhere."""
from __future__ import annotations

import argparse
import logging
import os

from ..errors import ConfigError

log = logging.getLogger("spectre.cli")

__all__ = ["add_image_folder", "add_debug", "check_workers", "cpu_count"]

IMAGE_FOLDER_HELP = ("treat folders of image frames (PNG/JPEG/...) as one input each, an image sequence; "
                     "without it folders are searched recursively for videos only")


def add_image_folder(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image-folder", action="store_true", help=IMAGE_FOLDER_HELP)


def add_debug(p: argparse.ArgumentParser) -> None:
    """``--debug`` after the command too (``spectre reconstruct ... --debug``); SUPPRESS keeps a
    ``--debug`` given before the command when this one is absent."""
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="show full tracebacks instead of one-line errors")


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def check_workers(workers: int) -> int:
    """More worker processes than CPUs only adds memory and contention: warn and use the CPU count."""
    if workers < 1:
        raise ConfigError("--workers must be at least 1")
    cpus = cpu_count()
    if workers > cpus:
        log.warning("--workers %d is more than the %d CPU(s) available here: using %d", workers, cpus, cpus)
        return cpus
    return workers
