"""The progress bar of one video's frames (tqdm), as every command draws it.

Why one place: ``spectre track``, ``spectre reconstruct`` and the batch runner show the same bar; the command
line opens the first video's bar before it imports torch (1-2 s), so that it shows at once and its clock, rate
and ETA count from the command's start. Callers decide whether to draw (a terminal, no ``--quiet``)."""
from __future__ import annotations

__all__ = ["frame_bar"]


def frame_bar(name: str, total: int | None, position: int = 0):
    """A bar counting ``name``'s frames up to ``total`` (None or 0: unknown), removed when closed."""
    from tqdm import tqdm

    return tqdm(desc=name, unit="frame", total=total or None, position=position, leave=False, dynamic_ncols=True)
