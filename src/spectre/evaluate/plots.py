"""PNG plots of an evaluation run (matplotlib, headless Agg backend, imported on first use)."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from .metrics import CLOSED_LIPS_THRESHOLD
from .report import VideoResult


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path, overwrite: bool) -> Path:
    with atomic_path(path, overwrite) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    return path


def plot_aperture(result: VideoResult, path: str | Path, overwrite: bool = False) -> Path:
    """Inner-lip opening (/ IOD) over time: reference vs reconstruction, closed-lip threshold marked."""
    plt = _pyplot()
    s = result.series
    fig, ax = plt.subplots(figsize=(8, 3))
    try:
        ax.plot(s["time"], s["aperture_ref"], color="black", lw=1.6, label="reference (input)")
        ax.plot(s["time"], s["aperture_pred"], color="tab:red", lw=1.3, label="reconstruction")
        ax.axhline(CLOSED_LIPS_THRESHOLD, color="grey", ls=":", lw=1, label="closed-lips threshold")
        r = result.geometry.get("aperture_r")
        title = result.name if r is None or not np.isfinite(r) else f"{result.name}  (r = {r:.3f})"
        ax.set(title=title, xlabel="time (s)", ylabel="lip opening / IOD")
        ax.set_ylim(bottom=min(0.0, float(np.nanmin(np.r_[s["aperture_ref"], s["aperture_pred"], 0.0]))))
        ax.legend(loc="upper right", fontsize=8)
        ax.grid(alpha=0.3)
        return _save(fig, Path(path), overwrite)
    finally:
        plt.close(fig)


def plot_group_errors(results: Sequence[VideoResult], path: str | Path, overwrite: bool = False) -> Path:
    """NME per landmark group, one bar per video per group."""
    plt = _pyplot()
    groups = [g for g in results[0].groups if g != "all"]
    x = np.arange(len(groups))
    width = 0.8 / max(1, len(results))
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(groups) + 0.3 * len(results)), 3.5))
    try:
        for i, res in enumerate(results):
            ax.bar(x + i * width - 0.4 + width / 2, [res.groups[g] for g in groups], width, label=res.name)
        ax.set_xticks(x, groups)
        ax.set(ylabel="NME (/ IOD)", title="landmark error per group")
        if len(results) <= 10:
            ax.legend(fontsize=7)
        ax.grid(axis="y", alpha=0.3)
        return _save(fig, Path(path), overwrite)
    finally:
        plt.close(fig)
