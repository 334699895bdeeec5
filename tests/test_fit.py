"""The landmark fit recovers known faces: landmarks of a random parameter set rendered with a known
camera are fitted back (synthetic data, no tracker involved)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from spectre.evaluate.metrics import mouth_width
from spectre.geometry import axis_angle_to_matrix, matrix_to_axis_angle, project_to_crop
from spectre.models.base import FaceModel, ParamSpec
from spectre.reconstruct.evaluator import PointEvaluator, mask_columns
from spectre.reconstruct.fit import FitConfig, fit_track


class ToyLinearFace(FaceModel):
    """A 68-vertex linear face (ICT neutral + blendshapes at its landmark vertices), rotating about a
    pivot that is not the origin, so the fit's pivot handling is exercised."""

    name = "toy"
    units_per_metre = 100.0

    def __init__(self, ict_npz):
        super().__init__()
        d = np.load(ict_npz)
        idx = d["landmarks68_vertex_idx"]
        self.register_buffer("v_template", torch.from_numpy(d["neutral_vertices"][idx].astype(np.float32)))
        self.register_buffer("id_dirs", torch.from_numpy(d["identity_deltas"][:20, idx].astype(np.float32)))
        self.register_buffer("exp_dirs", torch.from_numpy(d["expression_deltas"][:, idx].astype(np.float32)))
        self.register_buffer("faces", torch.zeros(1, 3, dtype=torch.long))
        self.register_buffer("pivot", torch.tensor([0.0, -4.0, -6.0]))
        self.param_specs = (ParamSpec("identity", 20, "identity", 0.0, -3.0, 3.0),
                            ParamSpec("expression", 53, "expression", 0.0, 0.0, 1.0),
                            ParamSpec("rotation", 3, "pose"))

    def vertices(self, params):
        v = self.v_template + torch.einsum("bk,kvc->bvc", params["identity"], self.id_dirs) \
            + torch.einsum("bk,kvc->bvc", params["expression"], self.exp_dirs)
        R = axis_angle_to_matrix(params["rotation"])
        return (v - self.pivot) @ R.transpose(1, 2) + self.pivot

    def landmarks(self, vertices, params):
        return vertices


@pytest.fixture(scope="module")
def toy(shared_assets):
    return ToyLinearFace(shared_assets / "ict_facekit" / "ict_face_model.npz")


def synthetic_clip(model, T=60, seed=0, image_scale=300.0, center=(320.0, 240.0)):
    g = torch.Generator().manual_seed(seed)
    ident = (torch.randn(1, 20, generator=g) * 0.8).repeat(T, 1)
    t = torch.linspace(0, 1, T)[:, None]
    exp = torch.zeros(T, 53)
    exp[:, 26] = 0.5 * (1 - torch.cos(2 * math.pi * 3 * t[:, 0]))  # jawOpen, 3 cycles
    exp[:, 39] = 0.4 * (1 + torch.sin(2 * math.pi * 2 * t[:, 0])) / 2  # mouthPucker
    exp[:, 45] = 0.6 * t[:, 0]  # mouthSmile_L ramps up
    exp[:, 10] = (torch.rand(T, generator=g) > 0.9).float() * 0.8  # blinks
    rot = torch.stack([0.1 * torch.sin(4 * t[:, 0]), 0.45 * torch.sin(3 * t[:, 0]), 0.05 * t[:, 0]], -1)
    cam = torch.stack([torch.full((T,), 0.09), 0.5 * torch.sin(2 * t[:, 0]), -0.3 + 0.1 * t[:, 0]], -1)
    with torch.no_grad():
        lmk = model({"identity": ident, "expression": exp, "rotation": rot}).landmarks
        xy = project_to_crop(lmk, cam)[..., :2]
    px = xy.numpy().astype(np.float64) * image_scale + np.asarray(center)
    return px, {"identity": ident, "expression": exp, "rotation": rot}


def test_point_evaluator_is_fast_and_exact_for_linear_models(toy):
    ev = PointEvaluator(toy)
    assert ev.kind == "fast"
    coef = torch.rand(3, 73) * 0.5
    rot = torch.tensor([[0.1, 0.3, 0.0], [0.0, -0.2, 0.1], [0.2, 0.0, 0.0]])
    fast = ev.landmarks(coef, rot)
    full = toy({"identity": coef[:, :20], "expression": coef[:, 20:], "rotation": rot}).landmarks
    d = fast - full
    # equal up to a per-frame translation (the rotation pivot), which the camera absorbs
    assert (d - d.mean(1, keepdim=True)).abs().max() < 1e-3


def test_mask_columns_select_what_the_mask_selects():
    x = torch.arange(24.0).view(2, 12)
    cases = [([False] * 3 + [True] * 5 + [False] * 4, True), ([True] * 4 + [False] * 8, True),
             ([True, False] * 6, False), ([False] * 12, False)]
    for mask, one_run in cases:
        m = torch.tensor(mask)
        cols = mask_columns(m)
        assert torch.equal(x[:, cols], x[:, m])
        assert isinstance(cols, slice) == one_run  # one run of columns: a view of x, else a gather


def test_matrix_to_axis_angle_roundtrip():
    aa = torch.tensor([[0.3, -0.2, 0.1], [0.0, 1.2, 0.0], [1e-4, 0.0, 0.0]])
    back = matrix_to_axis_angle(axis_angle_to_matrix(aa))
    assert torch.allclose(back, aa, atol=1e-4)


def _aperture(lm):
    return np.linalg.norm(lm[:, 66] - lm[:, 62], axis=-1)


def test_fit_recovers_synthetic_clip(toy):
    px, truth = synthetic_clip(toy, T=60)
    valid = np.ones(len(px), bool)
    valid[[5, 6, 7, 30]] = False  # gaps: filled by the temporal terms
    fit = fit_track(toy, px, valid, FitConfig(window=25, overlap=4))
    iod = np.linalg.norm(px[:, 36:42].mean(1) - px[:, 42:48].mean(1), axis=-1)
    err = np.linalg.norm(fit.landmarks2d - px, axis=-1) / iod[:, None]
    assert err[valid].mean() < 0.02, err.mean()
    assert err[~valid].mean() < 0.06, "gap frames are interpolated, not wild"
    mouth = err[valid][:, 48:68].mean()
    assert mouth < 0.02, mouth
    assert np.corrcoef(_aperture(fit.landmarks2d), _aperture(px))[0, 1] > 0.95
    assert np.corrcoef(mouth_width(fit.landmarks2d), mouth_width(px))[0, 1] > 0.9
    # jaw opening is carried by the jawOpen blendshape, and the head yaw is recovered
    assert np.corrcoef(fit.params["expression"][:, 26], truth["expression"][:, 26].numpy())[0, 1] > 0.9
    assert np.abs(fit.params["rotation"][:, 1] - truth["rotation"][:, 1].numpy()).max() < 0.1
    # ICT expressions stay inside their [0, 1] range; the identity is shared by all frames
    assert fit.params["expression"].min() >= 0 and fit.params["expression"].max() <= 1
    assert np.ptp(fit.params["identity"], axis=0).max() == 0
    assert fit.landmarks3d.shape == (60, 68, 3) and fit.cam.shape == (60, 3)


def test_fit_is_smoother_than_noisy_input(toy):
    px, _ = synthetic_clip(toy, T=50, seed=1)
    rng = np.random.default_rng(0)
    noisy = px + rng.normal(0, 1.5, px.shape)
    fit = fit_track(toy, noisy)

    def jitter(x):
        return np.linalg.norm(x[2:] - 2 * x[1:-1] + x[:-2], axis=-1).mean()
    assert jitter(fit.landmarks2d) < 0.6 * jitter(noisy)
    # and closer to the clean truth than the noisy observation is
    assert np.abs(fit.landmarks2d - px).mean() < np.abs(noisy - px).mean()


def test_camera_in_crop_matches_crop_coordinates(toy):
    px, _ = synthetic_clip(toy, T=5, seed=2)
    fit = fit_track(toy, px, config=FitConfig(iterations=20, identity_iterations=20))
    # per-frame crop: scale k and offset b (pixel -> crop pixel), as the official 224 crop
    k = np.array([0.5, 0.6, 0.55, 0.7, 0.4])
    b = np.stack([np.linspace(-50, 10, 5), np.linspace(-30, 0, 5)], -1)
    tf = np.zeros((5, 3, 3))
    tf[:, 0, 0] = tf[:, 1, 1] = k
    tf[:, :2, 2] = b
    tf[:, 2, 2] = 1
    cam_crop = torch.from_numpy(fit.cam_in_crop(tf))
    q = project_to_crop(torch.from_numpy(fit.landmarks3d), cam_crop)[..., :2].numpy()
    expected = (fit.landmarks2d * k[:, None, None] + b[:, None]) / 112.0 - 1.0
    np.testing.assert_allclose(q, expected, atol=1e-4)


def test_fit_with_the_bundled_ict_model():
    from spectre.models import load_face_model

    ict = load_face_model("ict")
    ev = PointEvaluator(ict)
    assert ev.kind in ("subset", "fast"), "the default model must never need its full mesh per iteration"
    T = 40
    t = torch.linspace(0, 1, T)
    exp = torch.zeros(T, 53)
    exp[:, ict.expression_names.index("jawOpen")] = 0.45 * (1 - torch.cos(2 * math.pi * 2 * t))
    exp[:, ict.expression_names.index("mouthPucker")] = 0.5 * t
    ident = (torch.randn(1, 100, generator=torch.Generator().manual_seed(3)) * 0.7).repeat(T, 1)
    rot = torch.stack([0.05 * torch.sin(3 * t), 0.4 * torch.sin(2 * t), torch.zeros(T)], -1)
    cam = torch.tensor([[0.1, 0.0, 0.0]]).repeat(T, 1)
    with torch.no_grad():
        lmk = ict({"identity": ident, "expression": exp, "rotation": rot}).landmarks
    px = project_to_crop(lmk, cam)[..., :2].numpy() * 250 + 300
    fit = fit_track(ict, px, config=FitConfig(window=30, overlap=4), evaluator=ev)
    iod = np.linalg.norm(px[:, 36:42].mean(1) - px[:, 42:48].mean(1), axis=-1)
    err = np.linalg.norm(fit.landmarks2d - px, axis=-1) / iod[:, None]
    assert err.mean() < 0.02 and err[:, 48:68].mean() < 0.02, (err.mean(), err[:, 48:68].mean())
    assert np.corrcoef(_aperture(fit.landmarks2d), _aperture(px))[0, 1] > 0.95
    assert np.corrcoef(mouth_width(fit.landmarks2d), mouth_width(px))[0, 1] > 0.9


@pytest.mark.slow
def test_fit_with_flame(flame_assets):
    """FLAME (non-linear in the jaw) goes through its full forward; the fit still recovers the landmarks."""
    from spectre.assets import AssetStore
    from spectre.models import load_face_model

    flame = load_face_model("flame", AssetStore(flame_assets))
    T = 12
    t = torch.linspace(0, 1, T)
    params = {"shape": torch.randn(1, 100, generator=torch.Generator().manual_seed(0)).repeat(T, 1) * 0.5,
              "expression": torch.zeros(T, 50), "jaw_pose": torch.stack([0.25 * t, 0 * t, 0 * t], -1),
              "global_pose": torch.stack([0 * t, 0.3 * t, 0 * t], -1)}
    cam = torch.tensor([[9.0, 0.0, 0.0]]).repeat(T, 1)
    with torch.no_grad():
        lmk = flame(flame.complete(params)).landmarks
    px = project_to_crop(lmk, cam)[..., :2].numpy() * 200 + 250
    assert PointEvaluator(flame).kind == "full", "the jaw rotation is not linear: no linear shortcut"
    fit = fit_track(flame, px, config=FitConfig(identity_iterations=200, iterations=200, window=T))
    iod = np.linalg.norm(px[:, 36:42].mean(1) - px[:, 42:48].mean(1), axis=-1)
    err = np.linalg.norm(fit.landmarks2d - px, axis=-1) / iod[:, None]
    assert err.mean() < 0.05 and err[:, 48:68].mean() < 0.05, (err.mean(), err[:, 48:68].mean())
    assert np.corrcoef(_aperture(fit.landmarks2d), _aperture(px))[0, 1] > 0.8
    assert set(fit.params) == set(flame.spec)


@pytest.mark.parametrize("T", [1, 2, 3])
def test_fit_handles_very_short_tracks(toy, T):
    px, _ = synthetic_clip(toy, T=T, seed=4)
    fit = fit_track(toy, px, config=FitConfig(identity_iterations=30, iterations=30))
    assert fit.landmarks2d.shape == (T, 68, 2) and np.isfinite(fit.landmarks2d).all()


def test_fit_rejects_tracks_without_valid_frames(toy):
    px, _ = synthetic_clip(toy, T=4)
    with pytest.raises(ValueError, match="no valid frame"):
        fit_track(toy, px, np.zeros(4, bool))


def test_arkit_weights_ict_native_and_flame_approximate(flame_assets):
    from spectre.assets import AssetStore
    from spectre.io.results import ARKIT_NAMES
    from spectre.models import load_face_model
    from spectre.reconstruct.arkit import LandmarkArkitSolver, to_arkit_order

    ict = load_face_model("ict")
    e = np.zeros((2, 53), np.float32)
    e[1, ict.expression_names.index("jawOpen")] = 0.7
    e[1, [i for i, n in enumerate(ict.expression_names) if n == "browInnerUp"]] = [0.2, 0.4]
    w = to_arkit_order(e, ict.arkit_names)
    assert w.shape == (2, 52) and w[1, ARKIT_NAMES.index("jawOpen")] == pytest.approx(0.7)
    assert w[1, ARKIT_NAMES.index("browInnerUp")] == pytest.approx(0.3), "ICT's L/R halves are averaged"
    # FLAME: an opening jaw maps to ARKit jawOpen (approximate, landmark-based)
    flame = load_face_model("flame", AssetStore(flame_assets))
    jaw = np.array([[0.0, 0, 0], [0.15, 0, 0], [0.3, 0, 0]], np.float32)
    params = {"shape": np.zeros((3, 100), np.float32), "expression": np.zeros((3, 50), np.float32),
              "jaw_pose": jaw, "global_pose": np.array([[0, 0.4, 0]] * 3, np.float32)}
    fw = LandmarkArkitSolver(ict).solve(flame, params)
    j = fw[:, ARKIT_NAMES.index("jawOpen")]
    assert j[0] < 0.05 and j[0] < j[1] < j[2] and j[2] > 0.2, j
