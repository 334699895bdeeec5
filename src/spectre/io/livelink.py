"""ARKit curves in the layout of the CSV files the Live Link Face app records (``--arkit-format livelink``).

The layout is what Unreal's Live Link Face importer, MetaHuman and the community Blender/Maya importers
read: a header ``Timecode,BlendShapeCount,<61 names>`` and one row per frame with the timecode, the count
61, the 52 ARKit shapes plus ``TongueOut``'s place among them in the app's order and spelling (PascalCase;
the app writes ``JawRight`` before ``JawLeft`` and ``MouthRight`` before ``MouthLeft``), then
``HeadYaw, HeadPitch, HeadRoll`` and the left and right eye's yaw, pitch and roll.

* Timecode ``HH:MM:SS:FF.fff``: hours, minutes, seconds, then the frame number within the second with
  its fraction, counted at 30 frames per second. Unreal's importer infers 30 or 60 from whether any
  frame number exceeds 30, so writing at 30 keeps that inference right for clips of every length; the
  fraction carries the video's exact timestamp (a 25 fps video gives 00:00:00:01.200 for frame 1).
* Angles are fractions of 90° in [-1, 1] (1 means 90°), the convention of Live Link Face rigs; see
  ``spectre.reconstruct.animation.livelink_angles`` for the axes.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_text
from ..errors import InputError
from .results import ARKIT_NAMES

__all__ = ["LIVELINK_COLUMNS", "LIVELINK_FPS", "livelink_csv_text", "save_livelink_csv", "timecode",
           "parse_timecode"]

#: the timecode's frame rate (see the module docstring)
LIVELINK_FPS = 30

_POSE = ("HeadYaw", "HeadPitch", "HeadRoll", "LeftEyeYaw", "LeftEyePitch", "LeftEyeRoll",
         "RightEyeYaw", "RightEyePitch", "RightEyeRoll")
_SHAPES_APP_ORDER = tuple(ARKIT_NAMES[:15]) + ("jawRight", "jawLeft") + tuple(ARKIT_NAMES[17:21]) + (
    "mouthRight", "mouthLeft") + tuple(ARKIT_NAMES[23:])
#: the 61 value columns after ``Timecode,BlendShapeCount``
LIVELINK_COLUMNS: tuple[str, ...] = tuple(n[0].upper() + n[1:] for n in _SHAPES_APP_ORDER) + _POSE


def timecode(seconds: float, fps: int = LIVELINK_FPS) -> str:
    """``HH:MM:SS:FF.fff`` for a time in seconds (frame number with a fraction, at ``fps``)."""
    total_ms = int(round(float(seconds) * 1000.0 * fps))  # thousandths of a frame
    frames_ms = total_ms % (1000 * fps)
    whole = total_ms // (1000 * fps)
    h, m, s = whole // 3600, (whole // 60) % 60, whole % 60
    return f"{h:02d}:{m:02d}:{s:02d}:{frames_ms // 1000:02d}.{frames_ms % 1000:03d}"


def parse_timecode(text: str, fps: int = LIVELINK_FPS) -> float:
    """Seconds of a ``HH:MM:SS:FF[.fff]`` timecode (as Unreal's importer reads it)."""
    parts = text.split(":")
    if len(parts) != 4:
        raise InputError(f"malformed Live Link timecode {text!r} (expected HH:MM:SS:FF.fff)")
    try:
        h, m, s, f = int(parts[0]), int(parts[1]), int(parts[2]), float(parts[3])
    except ValueError:
        raise InputError(f"malformed Live Link timecode {text!r}") from None
    return h * 3600 + m * 60 + s + f / fps


def livelink_csv_text(times: np.ndarray, arkit: np.ndarray, angles: np.ndarray) -> str:
    """CSV text from ``times`` (T,) seconds, ``arkit`` (T, 52) in ``ARKIT_NAMES`` order and ``angles``
    (T, 9) head yaw/pitch/roll then left and right eye yaw/pitch/roll, fractions of 90°."""
    times = np.asarray(times, np.float64)
    arkit = np.asarray(arkit, np.float64)
    angles = np.clip(np.asarray(angles, np.float64), -1.0, 1.0)
    T = len(times)
    if arkit.shape != (T, len(ARKIT_NAMES)) or angles.shape != (T, 9):
        raise ValueError(f"need arkit (T, 52) and angles (T, 9) for T={T}, got {arkit.shape}, {angles.shape}")
    order = [ARKIT_NAMES.index(n) for n in _SHAPES_APP_ORDER]
    values = np.concatenate([arkit[:, order], angles], axis=1)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["Timecode", "BlendShapeCount", *LIVELINK_COLUMNS])
    for t in range(T):
        w.writerow([timecode(times[t]), len(LIVELINK_COLUMNS), *(f"{v:.6f}" for v in values[t])])
    return buf.getvalue()


def save_livelink_csv(path: str | Path, times, arkit, angles, overwrite: bool = False) -> Path:
    return atomic_write_text(path, livelink_csv_text(times, arkit, angles), overwrite)
