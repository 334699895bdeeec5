"""The progress bars every command draws (tqdm): one video's frames, or a run's inputs.

Why one place: ``spectre track``, ``spectre reconstruct``, ``spectre evaluate`` and the batch runner show the
same bars; the command line opens the first video's bar before it imports torch (1-2 s), so that it shows at
once and its clock, rate and ETA count from the command's start. Callers decide whether to draw (a terminal,
no ``--quiet``)."""
from __future__ import annotations

__all__ = ["frame_bar", "progress_bar"]


def progress_bar(name: str, total: int | None, unit: str, position: int = 0):
    """A bar named ``name`` counting ``unit`` items up to ``total`` (None or 0: unknown), removed when closed."""
    from tqdm import tqdm

    return tqdm(desc=name, unit=unit, total=total or None, position=position, leave=False, dynamic_ncols=True)


def frame_bar(name: str, total: int | None, position: int = 0):
    """The bar of one video's frames."""
    return progress_bar(name, total, "frame", position)
