"""Live Link Face CSV: a reader written from the app's documented layout (as Unreal's importer reads it:
header names, ``hh:mm:ss:frame.zzz`` timecodes at an inferred 30 or 60 fps) reads what we write."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

from spectre.io.livelink import save_livelink_csv
from spectre.io.results import ARKIT_NAMES, FaceResult
from spectre.models import load_face_model
from spectre.reconstruct.animation import livelink_angles

sys.path.insert(0, str(Path(__file__).parent / "clients"))
from livelink_reader import APP_HEADER, read_livelink  # noqa: E402


def test_livelink_csv_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    T = 90
    times = 3600 * 1 + 61.5 + np.arange(T) / 29.97  # crosses a minute; NTSC rate
    arkit = rng.uniform(0, 1, (T, 52))
    angles = rng.uniform(-0.5, 0.5, (T, 9))
    p = save_livelink_csv(tmp_path / "x_livelink.csv", times, arkit, angles)
    header, t, cols = read_livelink(p)
    assert header == APP_HEADER
    np.testing.assert_allclose(t, times, atol=1e-4)
    for j, name in enumerate(ARKIT_NAMES):
        np.testing.assert_allclose(cols[name[0].upper() + name[1:]], arkit[:, j], atol=1e-6)
    for j, name in enumerate(APP_HEADER[-9:]):
        np.testing.assert_allclose(cols[name], angles[:, j], atol=1e-6)
    with pytest.raises(Exception):  # noqa: B017 - refuses to overwrite
        save_livelink_csv(p, times, arkit, angles)


def test_short_clip_timecodes_stay_at_30fps(tmp_path):
    """Under one second every frame number stays below 30, which the importer's inference reads as 30."""
    times = np.arange(10) / 25.0
    p = save_livelink_csv(tmp_path / "s.csv", times, np.zeros((10, 52)), np.zeros((10, 9)))
    _, t, _ = read_livelink(p)
    np.testing.assert_allclose(t, times, atol=1e-4)


def test_head_angles_follow_the_fitted_rotation():
    ict = load_face_model("ict")
    T = 4
    yaw, pitch = 0.3, -0.2
    rot = np.zeros((T, 3), np.float32)
    rot[1, 1] = yaw
    rot[2, 0] = pitch
    E = ict.spec["expression"].size
    arkit = np.zeros((T, 52), np.float32)
    arkit[3, ARKIT_NAMES.index("eyeLookOutLeft")] = 1.0
    face = FaceResult(track_id=0, model="ict", backend="fit",
                      params={"identity": np.zeros((T, ict.spec["identity"].size), np.float32),
                              "expression": np.zeros((T, E), np.float32), "rotation": rot},
                      cam=np.tile([[0.08, 0.0, 3.0]], (T, 1)), crop_tform=np.tile(np.eye(3), (T, 1, 1)),
                      landmarks2d=np.zeros((T, 68, 2)), landmarks3d=np.zeros((T, 68, 3)), valid=np.ones(T, bool),
                      frame_index=np.arange(T), timestamps=np.arange(T) / 25.0, arkit=arkit)
    a = livelink_angles(ict, face, 224, 224)
    np.testing.assert_allclose(a[0], 0, atol=1e-6)
    np.testing.assert_allclose(a[1, :3], [yaw / (math.pi / 2), 0, 0], atol=1e-5)
    np.testing.assert_allclose(a[2, :3], [0, pitch / (math.pi / 2), 0], atol=1e-5)
    assert a[3, 3] > 0.2 and abs(a[3, 6]) < 1e-9  # the left eye looks out (toward +X), the right does not
