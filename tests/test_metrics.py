"""Geometric metrics on constructed landmark sequences whose answers follow from the construction."""
from __future__ import annotations

import math

import numpy as np
import pytest

from spectre.errors import InputError
from spectre.evaluate import metrics as M

IOD = 100.0


def face(T: int, aperture: np.ndarray, width: np.ndarray | None = None, seed: int = 0) -> np.ndarray:
    """A (T,68,2) sequence with IOD = 100 px, the given inner-lip aperture and mouth width per frame."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0, 200, size=(68, 2))
    base[36] = (50.0, 80.0)
    base[45] = (50.0 + IOD, 80.0)
    seq = np.repeat(base[None], T, axis=0).copy()
    for k, (u, lo) in enumerate(M.INNER_LIP_PAIRS):
        x = 85.0 + 15.0 * k
        seq[:, u] = (x, 170.0)
        seq[:, lo, 0] = x
        seq[:, lo, 1] = 170.0 + aperture
    if width is not None:
        seq[:, 48] = (70.0, 172.0)
        seq[:, 54, 0] = 70.0 + width
        seq[:, 54, 1] = 172.0
    return seq


def talking(T: int = 60) -> np.ndarray:
    t = np.arange(T)
    aperture = np.clip(20.0 * np.sin(2 * np.pi * t / 15.0), 0.0, None)  # closed half of the time
    width = 45.0 + 5.0 * np.cos(2 * np.pi * t / 11.0)
    return face(T, aperture, width)


def test_basic_measures_follow_construction():
    seq = face(4, np.array([0.0, 5.0, 10.0, 2.0]), np.array([40.0, 41.0, 42.0, 43.0]))
    np.testing.assert_allclose(M.interocular_distance(seq), IOD)
    np.testing.assert_allclose(M.lip_aperture(seq), [0.0, 5.0, 10.0, 2.0])
    np.testing.assert_allclose(M.mouth_width(seq), [40.0, 41.0, 42.0, 43.0])
    # 0.03 * IOD = 3 px
    assert M.closed_lips(seq).tolist() == [True, False, False, True]


def test_identical_sequences_give_zero_error_and_unit_correlation():
    ref = talking()
    m = M.compare_landmarks(ref.copy(), ref)
    assert m.frames == 60
    assert m.nme_all == 0 and m.nme_mouth == 0 and m.nme_inner_lips == 0 and m.aperture_mae == 0
    assert m.aperture_r == pytest.approx(1.0) and m.width_r == pytest.approx(1.0)
    assert m.jitter_pred == pytest.approx(m.jitter_ref)
    assert m.closed_frames_ref > 10
    assert m.closure_recall == 1.0 and m.closure_precision == 1.0


def test_spatial_shift_gives_exact_nme_and_keeps_shape_metrics():
    ref = talking()
    pred = ref + np.array([3.0, 4.0])  # 5 px everywhere = 0.05 IOD
    m = M.compare_landmarks(pred, ref)
    for value in (m.nme_all, m.nme_mouth, m.nme_inner_lips):
        assert value == pytest.approx(0.05)
    assert all(v == pytest.approx(0.05) for v in M.group_nme(pred, ref).values())
    assert m.aperture_r == pytest.approx(1.0) and m.aperture_mae == pytest.approx(0.0, abs=1e-12)
    assert m.jitter_pred == pytest.approx(m.jitter_ref)


def test_time_reversed_ramp_is_anticorrelated():
    ramp = np.linspace(0.0, 20.0, 30)
    ref = face(30, ramp, 40.0 + ramp)
    pred = ref[::-1]
    m = M.compare_landmarks(pred, ref)
    assert m.aperture_r == pytest.approx(-1.0)
    assert m.width_r == pytest.approx(-1.0)
    # |ramp[::-1] - ramp| averages 10 px over the ramp = 0.1 IOD
    assert m.aperture_mae == pytest.approx(np.mean(np.abs(ramp[::-1] - ramp)) / IOD)
    assert m.nme_inner_lips > 0


def test_quarter_period_delay_decorrelates_aperture():
    t = np.arange(200)
    ref = face(200, 10.0 + 8.0 * np.sin(2 * np.pi * t / 20.0))
    pred = face(200, 10.0 + 8.0 * np.sin(2 * np.pi * (t - 5) / 20.0))
    assert abs(M.compare_landmarks(pred, ref).aperture_r) < 0.02


def test_metrics_are_scale_invariant():
    ref = talking()
    pred = ref + np.random.default_rng(1).normal(0, 2.0, ref.shape)
    a = M.compare_landmarks(pred, ref).as_dict()
    b = M.compare_landmarks(pred * 3.5 + 7.0, ref * 3.5 + 7.0).as_dict()
    for key in a:
        assert a[key] == pytest.approx(b[key], rel=1e-9, abs=1e-12), key


def test_jitter_zero_for_constant_velocity_and_known_for_alternating_noise():
    ref = talking(40)
    drift = ref + np.arange(40)[:, None, None] * np.array([0.5, -0.25])
    assert M.jitter(drift) == pytest.approx(M.jitter(ref), abs=1e-12)
    static = np.repeat(ref[:1], 40, axis=0)
    assert M.jitter(static) == 0.0
    e = 1.5
    noisy = static + (e * (-1.0) ** np.arange(40))[:, None, None] * np.array([1.0, 0.0])
    assert M.jitter(noisy) == pytest.approx(4 * e / IOD)
    assert math.isnan(M.jitter(static[:2]))


def test_invalid_and_nan_frames_are_ignored():
    ref = talking()
    pred = ref.copy()
    pred[10] += 50.0
    pred[20] = np.nan
    valid = np.ones(60, bool)
    valid[10] = False
    m = M.compare_landmarks(pred, ref, valid=valid)
    assert m.frames == 58
    assert m.nme_all == 0.0
    assert M.nme(pred, ref, valid=valid) == 0.0
    assert M.nme(pred, ref) > 0  # frame 10 counts without the mask
    assert M.compare_landmarks(np.full_like(ref, np.nan), ref).frames == 0


def test_jitter_skips_triples_touching_invalid_frames():
    ref = np.repeat(talking(1), 9, axis=0)
    ref[4] += 30.0  # one spike; only triples centred on 3, 4, 5 see it
    valid = np.ones(9, bool)
    valid[4] = False
    assert M.jitter(ref, valid) == 0.0
    assert M.jitter(ref) > 0.0


def test_closure_agreement_counts_reference_closed_frames():
    ap_ref = np.array([0.0, 0.0, 0.0, 0.0, 10.0, 10.0, 10.0, 10.0])
    ap_pred = np.array([0.0, 0.0, 8.0, 8.0, 1.0, 10.0, 10.0, 10.0])
    m = M.compare_landmarks(face(8, ap_pred), face(8, ap_ref))
    assert m.closed_frames_ref == 4
    assert m.closure_recall == pytest.approx(0.5)
    assert m.closure_precision == pytest.approx(2 / 3)
    assert m.false_closure_rate == pytest.approx(1 / 4)  # frame 4 of the 4 open reference frames
    always_open = M.compare_landmarks(face(8, ap_ref + 10), face(8, ap_ref + 10))
    assert always_open.closed_frames_ref == 0 and math.isnan(always_open.closure_recall)


def test_group_nme_localises_the_error_to_the_mouth():
    ref = talking()
    pred = ref.copy()
    pred[:, 60:68] += np.array([0.0, 2.0])
    g = M.group_nme(pred, ref)
    assert g["jaw"] == 0 and g["eyes"] == 0 and g["outer_lips"] == 0
    assert g["inner_lips"] == pytest.approx(0.02)
    assert g["mouth"] == pytest.approx(0.02 * 8 / 20)
    assert g["all"] == pytest.approx(0.02 * 8 / 68)


def test_pearson_degenerate_cases_are_nan():
    assert math.isnan(M.pearson(np.ones(5), np.arange(5)))
    assert math.isnan(M.pearson([1.0], [2.0]))
    assert M.pearson(np.arange(5), 2 * np.arange(5) + 1) == pytest.approx(1.0)


def test_3d_and_mixed_dimensions_and_bad_shapes():
    ref = talking(10)
    ref3 = np.concatenate([ref, np.zeros((10, 68, 1))], axis=-1)
    assert M.compare_landmarks(ref3, ref).nme_all == 0.0
    assert M.as_landmarks(ref[0]).shape == (1, 68, 2)
    with pytest.raises(InputError, match="68"):
        M.compare_landmarks(ref[:, :60], ref[:, :60])
    with pytest.raises(InputError, match="frames"):
        M.compare_landmarks(ref[:5], ref)
    with pytest.raises(InputError, match="valid mask"):
        M.compare_landmarks(ref, ref, valid=np.ones(3, bool))


def test_module_is_dependency_light():
    import subprocess
    import sys
    code = ("import sys, spectre.evaluate.metrics; "
            "bad = [m for m in ('torch', 'mediapipe', 'cv2', 'av', 'matplotlib') if m in sys.modules]; "
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
